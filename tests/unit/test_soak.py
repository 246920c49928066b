"""The soak's judgement, without a guest: what counts as back to baseline, which dumps drgn reads."""

from __future__ import annotations

from harness import dump as dump_mod
from harness import soak
from harness.validate import DrgnView

MEMINFO = """MemTotal:         496000 kB
MemFree:          400000 kB
Slab:              20000 kB
VmallocUsed:        3000 kB
DirectMap4k:       18000 kB
DirectMap2M:      506000 kB
"""


def test_parse_meminfo_reads_the_keys_it_needs_and_nothing_else():
    got = soak.parse_meminfo(MEMINFO)
    assert got == {"MemFree": 400000, "Slab": 20000, "VmallocUsed": 3000, "DirectMap4k": 18000,
                   "DirectMap2M": 506000}


def test_back_to_baseline_within_tolerance_is_no_problem():
    before = soak.parse_meminfo(MEMINFO)
    after = dict(before, MemFree=before["MemFree"] - 4000, Slab=before["Slab"] + 4000)
    assert soak.drift_problems(before, after, ram_kb=512 * 1024, tolerance=0.01) == []


def test_a_leaked_reserve_is_caught():
    before = soak.parse_meminfo(MEMINFO)
    after = dict(before, MemFree=before["MemFree"] - 8192, VmallocUsed=before["VmallocUsed"] + 8192)
    problems = soak.drift_problems(before, after, ram_kb=512 * 1024, tolerance=0.01)
    assert len(problems) == 2
    assert problems[0].startswith("MemFree fell by 8192 kB")
    assert problems[1].startswith("VmallocUsed grew by 8192 kB")


def test_any_directmap_change_is_caught():
    before = soak.parse_meminfo(MEMINFO)
    after = dict(before, DirectMap4k=20048, DirectMap2M=503952)
    assert len(soak.drift_problems(before, after, ram_kb=512 * 1024, tolerance=0.01)) == 2


def test_a_missing_line_is_a_problem_not_a_pass():
    before = soak.parse_meminfo(MEMINFO)
    after = {k: v for k, v in before.items() if k != "Slab"}
    assert soak.drift_problems(before, after, ram_kb=512 * 1024, tolerance=0.01) == ["Slab missing from /proc/meminfo"]


def view(log: str, release: str = "6.1.192-livedump") -> DrgnView:
    return DrgnView(release=release, init_comm="swapper/0", tasks=[], log=log, nr_prstatus=2, prstatus_pids=[])


def test_dump_read_problems():
    m = dump_mod.Markers("A-1", "B-1")
    assert soak.dump_read_problems(view("x\nA-1\ny"), "6.1.192-livedump", m) == []
    assert len(soak.dump_read_problems(view("x"), "6.1.192-livedump", m)) == 1
    assert len(soak.dump_read_problems(view("A-1\nB-1"), "6.1.192-livedump", m)) == 1
    assert len(soak.dump_read_problems(view("A-1", release="6.1.0"), "6.1.192-livedump", m)) == 1


def test_cycles_to_read():
    assert soak.cycles_to_read(200, 20) == {1, 200} | set(range(20, 201, 20))
    assert soak.cycles_to_read(3, 0) == {1, 3}
    assert soak.cycles_to_read(1, 5) == {1}
