"""livedump on a guest whose direct map has 1 GiB pages, as every real server's has.

4 GiB is the smallest guest whose direct map uses 1 GiB pages (a TCG guest of
that size boots in seconds and is dumped in well under a minute here). Under
load: the dump must work with the default reserve, split large mappings only
while it runs (DirectMap4k grows meanwhile) and leave /proc/meminfo's DirectMap
lines exactly as it found them, and drgn must read the dump.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness import bench, validate
from harness import dump as dump_mod
from harness.pipeline import Pipeline

pytestmark = pytest.mark.qemu

MEMORY = "4G"


@pytest.fixture(scope="module")
def big(pipeline, show):
    p = Pipeline(pipeline.run, replace(pipeline.options, memory=MEMORY), paths=pipeline.paths,
                 runner=pipeline.runner)
    disks = dump_mod.dump_disks(pipeline.run.path("host-scale"), dump_mod.memory_bytes(MEMORY))
    with p.boot(disks, tag=MEMORY) as console:
        before = bench.meminfo(console)
        dump_mod.start_load(console)
        started = console.run(f"livedump init {dump_mod.DUMP_TARGET} --reason host-scale && livedump start")
        during = bench.meminfo(console)
        swept = console.run("livedump sweep && while livedump status | grep -q '^state=sweeping'; do sleep 1; done",
                            timeout=900)
        final = dump_mod.status(console)
        at_done = bench.meminfo(console)
        console.run("livedump release", check=True)
        after = bench.meminfo(console)
        dump_mod.stop_load(console)
    view = validate.read_with_drgn(dump_mod.dump_image(disks), pipeline.build().vmlinux) \
        if final.get("state") == "done" else None
    show(f"{MEMORY} guest: pause {final.get('pause_ns')} ns, COW faults {final.get('cow_faults')}, "
         f"failed {final.get('failed_pages')}, reserve {final.get('reserve_pages')} pages "
         f"(at most {final.get('reserve_used_max')} used), page table pages {final.get('table_pages')} "
         f"({final.get('tables_used')} used); DirectMap before {before}, during {during}, after {after}")
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    return dict(before=before, during=during, at_done=at_done, after=after, started=started, swept=swept,
                final=final, view=view)


def test_the_guest_has_1g_direct_map_pages(big):
    assert (big["before"]["1g"] or 0) > 0, f"no 1 GiB direct-map pages in a {MEMORY} guest: {big['before']}"


def test_init_and_start_succeed_under_load(big):
    # A 4 GiB guest was OOM-killed here when INIT took 1/8 of RAM and START split the direct map.
    assert big["started"].status == 0, big["started"].output
    assert big["swept"].status == 0, big["swept"].output


def test_the_dump_completes_without_failed_pages(big):
    assert big["final"]["state"] == "done", big["final"]
    assert big["final"]["failed_pages"] == "0"


def test_the_default_reserve_is_at_most_1_32_of_ram(big):
    f = big["final"]
    reserve = int(f["reserve_pages"]) + int(f["table_pages"])
    # pages_total is what the dump holds, free and user pages left out: RAM is the guest's memory.
    assert 0 < reserve * 32 <= dump_mod.memory_bytes(MEMORY) // 4096, f


def test_large_mappings_are_split_only_while_the_dump_runs(big):
    assert big["during"]["4k"] > big["before"]["4k"], (big["before"], big["during"])
    # The writer puts the mappings back before it reports DONE, not only at release.
    assert big["at_done"] == big["before"]
    assert big["after"] == big["before"]


def test_drgn_reads_the_big_dump(pipeline, big):
    assert big["view"] is not None
    assert big["view"].init_comm == "swapper/0"
    assert big["view"].release == pipeline.build().release
