"""The consistency checker's judgement, on simulated torture state: snapshots at one instant must pass,
copies taken over time (what a dump without write protection is) must be caught."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import consistency as cc
from harness.settings import LOCK_FILE, Paths
from harness.source import load_lock

N = 64
BASE = 0xFFFF888001000000


def sweep_state(step: int) -> list[tuple[int, int, int]]:
    """The sweep after `step` half-writes by the one writer: word 0 of page i, then its last word, page by page."""
    gen, pos = divmod(step, 2 * N)
    page, half = divmod(pos, 2)
    out = []
    for i in range(N):
        first = last = gen  # generation `gen` is complete everywhere; gen + 1 is being written
        if i < page:
            first = last = gen + 1
        elif i == page and half == 1:
            first = gen + 1
        out.append((BASE + i * cc.PAGE_SIZE, first, last))
    return out


@pytest.mark.parametrize("step", [0, 1, 2, 2 * N - 1, 2 * N, 5 * 2 * N + 17, 7 * 2 * N + 2 * N - 1])
def test_sweep_at_one_instant_holds(step):
    f = cc.sweep_violations("sweep", sweep_state(step))
    assert f.violations == 0, f.line()
    assert not f.fails


def test_sweep_copied_over_time_is_torn():
    # Page i copied at a later moment than page i-1, as a sweep without protection does.
    torn = [sweep_state(3 * 2 * N + 7 * i)[i] for i in range(N)]
    f = cc.sweep_violations("sweep", torn)
    assert f.violations > 0 and f.fails
    assert f.first_address is not None and BASE <= f.first_address < BASE + N * cc.PAGE_SIZE
    assert "violation" in f.line()


def test_sweep_with_one_page_from_the_past_is_torn():
    pages = sweep_state(4 * 2 * N + 40)
    pages[50] = sweep_state(2 * 2 * N)[50]  # two generations old
    assert cc.sweep_violations("sweep", pages).violations > 0


def test_a_page_torn_inside_is_caught():
    pages = sweep_state(2 * 2 * N)
    addr, first, _ = pages[10]
    pages[10] = (addr, first, first - 3)
    f = cc.sweep_violations("sweep", pages)
    assert [b[0] for b in f.bad] == [addr]


def test_word_sweep():
    assert cc.words_sweep_violations("stack", BASE, [9] * 10 + [8] * 20).violations == 0
    f = cc.words_sweep_violations("stack", BASE, [9] * 10 + [8] * 5 + [9] * 3)
    assert f.violations == 1 and f.first_address == BASE + 8 * 15


def test_pairs():
    ok = cc.pair_violations("pair", [(1, 2, 7, 7, False), (3, 4, 8, 7, True)])
    assert ok.violations == 0
    bad = cc.pair_violations("pair", [(1, 2, 7, 7, False), (3, 4, 8, 7, False), (5, 6, 10, 3, True)])
    assert bad.violations == 2 and bad.first_address == 3


def ring(n: int, head: int = 0x1000) -> dict[int, tuple[int, int]]:
    addrs = [head] + [0x10000 + 0x40 * i for i in range(n)]
    return {a: (addrs[(i + 1) % len(addrs)], addrs[i - 1]) for i, a in enumerate(addrs)}


def test_list_consistent():
    f = cc.list_violations("list", 0x1000, ring(100), 100)
    assert f.violations == 0 and f.checked == 100


def test_list_torn_shapes_are_caught():
    rng = random.Random(1)
    nodes = ring(100)
    victim = rng.choice([a for a in nodes if a != 0x1000])
    nxt, prev = nodes[victim]
    nodes[nxt] = (nodes[nxt][0], 0xDEAD)  # next->prev no longer points back
    assert cc.list_violations("list", 0x1000, nodes, 100).violations >= 1

    nodes = ring(100)
    assert cc.list_violations("list", 0x1000, nodes, 99).violations == 1  # length disagrees
    assert cc.list_violations("list", 0x1000, nodes, 99, locked=True).violations == 0

    nodes = ring(10)
    del nodes[0x10000 + 0x40 * 5]  # walk leaves the copied memory
    f = cc.list_violations("list", 0x1000, nodes, 10)
    assert f.violations >= 1 and "left the list" in f.detail

    nodes = ring(10)
    last = 0x10000 + 0x40 * 9
    nodes[last] = (0x10000, nodes[last][1])  # loops without the head
    f = cc.list_violations("list", 0x1000, nodes, 10)
    assert f.violations >= 1 and "no way back" in f.detail


def test_violations_on_pages_the_dump_marks_are_excused():
    torn = [sweep_state(3 * 2 * N + 7 * i)[i] for i in range(N)]
    f = cc.sweep_violations("sweep", torn)
    pfns = {(a - BASE) >> 12 for addrs in f.bad for a in addrs}
    cc.excuse(f, pfns, lambda a: (a - BASE) >> 12)
    assert f.excused == f.violations and not f.fails
    g = cc.sweep_violations("sweep", torn)
    cc.excuse(g, {10_000}, lambda a: (a - BASE) >> 12)
    assert g.excused == 0 and g.fails


def test_known_gaps_are_printed_but_do_not_fail():
    torn = [sweep_state(3 * 2 * N + 7 * i)[i] for i in range(N)]
    gap = cc.sweep_violations("sweep (vmalloc)", torn, known_gap="not trapped")
    held = cc.pair_violations("pair", [(1, 2, 5, 5, False)])
    report = cc.Report("d", [gap, held], protected=True, failed_pfns=[])
    assert report.ok and report.violations == 0
    assert "known gap: not trapped" in report.text()
    report = cc.Report("d", [gap, cc.pair_violations("pair", [(1, 2, 5, 4, False)])], protected=False, failed_pfns=[])
    assert not report.ok and report.violations == 1 and "TORN" in report.text()
    assert report.all_violations == gap.violations + 1
    assert '"ok": false' in report.to_json()


def _report(findings, protected=True):
    return cc.Report(dump="d.img", findings=findings, protected=protected, failed_pfns=[])


def test_protected_dump_verdict_accepts_a_real_proof():
    holds = cc.Finding("pair under spinlock", checked=10)
    gap = cc.Finding("sweep (vmalloc)", checked=0, known_gap="not trapped")
    assert cc.protected_dump_problems(_report([holds, gap]), {"cow_faults": "12", "failed_pages": "0"}) == []
    both = cc.Report("d.img", [holds], protected=True, failed_pfns=[], aliases_protected=True)
    assert cc.protected_dump_problems(both, {"cow_faults": "12", "failed_pages": "0"}) == []


def test_a_dump_without_alias_protection_says_so():
    report = cc.Report("d.img", [cc.Finding("sweep (vmap)", checked=64, known_gap=cc.ALIASES_NOT_PROTECTED)],
                       protected=True, failed_pfns=[], aliases_protected=False)
    assert "vmalloc and module mappings NOT protected" in report.text().splitlines()[0]
    assert "alias_entries" in report.text()


def test_a_dump_without_user_protection_says_so():
    report = cc.Report("d.img", [cc.Finding("user sweep (shared)", checked=512, known_gap=cc.USER_NOT_PROTECTED)],
                       protected=True, failed_pfns=[], aliases_protected=True, user_protected=False)
    assert "user mappings NOT protected" in report.text().splitlines()[0]
    assert "protect_user=0" in report.text()
    # A torn user sweep in such a dump is named, not failed; with user protection it fails.
    torn = cc.words_sweep_violations("user sweep (anonymous)", 0x100000000000, [5, 5, 7, 4],
                                     known_gap=cc.USER_NOT_PROTECTED)
    assert torn.violations == 2 and not torn.fails
    assert cc.words_sweep_violations("user sweep (anonymous)", 0x100000000000, [5, 5, 7, 4]).fails


def test_an_architecture_without_alias_and_user_protection_is_judged_on_the_rest():
    """arm64 protects neither the vmalloc and module areas nor user mappings: where its note says so, the
    invariants behind them are its known gaps, and the dump is judged on the others; x86, which protects
    them, still refuses such a dump; and arm64 still refuses a torn or unprotected one."""
    from harness import arch

    counters = {"cow_faults": "12", "failed_pages": "0"}
    holds = cc.Finding("pair under spinlock", checked=10)
    gaps = [cc.Finding("sweep (vmap)", checked=64, bad=[(0x1000,)] * 3, known_gap=cc.ALIASES_NOT_PROTECTED),
            cc.Finding("user sweep (shared)", checked=256, bad=[(0x2000,)] * 5, known_gap=cc.USER_NOT_PROTECTED)]
    report = cc.Report("d.img", [holds, *gaps], protected=True, failed_pfns=[], aliases_protected=False,
                       user_protected=False)
    assert arch.ARM64.unprotected_mappings == {cc.UNPROTECTED_ALIASES, cc.UNPROTECTED_USER}
    assert arch.X86_64.unprotected_mappings == frozenset()
    assert cc.protected_dump_problems(report, counters, not_protected_here=arch.ARM64.unprotected_mappings) == []
    assert cc.protected_dump_problems(report, counters, not_protected_here=arch.X86_64.unprotected_mappings)
    only_aliases = frozenset({cc.UNPROTECTED_ALIASES})
    assert any("user mappings" in p for p in
               cc.protected_dump_problems(report, counters, not_protected_here=only_aliases))
    torn = cc.Report("d.img", [cc.Finding("pair under spinlock", checked=10, bad=[(0x3000,)]), *gaps],
                     protected=True, failed_pfns=[], aliases_protected=False, user_protected=False)
    assert cc.protected_dump_problems(torn, counters, not_protected_here=arch.ARM64.unprotected_mappings)
    unprotected = cc.Report("d.img", [holds], protected=False, failed_pfns=[])
    assert cc.protected_dump_problems(unprotected, counters,
                                      not_protected_here=arch.ARM64.unprotected_mappings)


def test_protected_dump_verdict_fails_closed():
    """Each way a dump proves nothing is named: unprotected, torn, unexercised, no COW, lost pages, no counters."""
    holds = cc.Finding("pair under spinlock", checked=10)
    idle = cc.Finding("list under spinlock", checked=0)
    torn = cc.Finding("per-cpu pair", checked=5, bad=[(0x1000,)])
    good = {"cow_faults": "12", "failed_pages": "0"}
    cases = [
        (_report([holds], protected=False), good, "nothing was write-protected"),
        (_report([holds, torn]), good, "torn"),
        (_report([holds, idle]), good, "list under spinlock: not exercised"),
        (_report([holds]), {"cow_faults": "0", "failed_pages": "0"}, "COW faults 0"),
        (_report([holds]), {"cow_faults": "12", "failed_pages": "3"}, "failed pages 3"),
        (_report([holds]), {}, "COW faults None"),
        (cc.Report("d.img", [holds], protected=True, failed_pfns=[], aliases_protected=False), good,
         "no vmalloc or module mapping was write-protected"),
        (cc.Report("d.img", [holds], protected=True, failed_pfns=[], aliases_protected=True, user_protected=False),
         good, "user mappings were not write-protected"),
    ]
    for report, counters, expected in cases:
        problems = cc.protected_dump_problems(report, counters)
        assert any(expected in p for p in problems), (expected, problems)


def test_counters_that_never_moved_are_not_exercised():
    """0 == 0 holds trivially: it proves nothing and must not count as checked."""
    idle = cc.pair_violations("pair", [(1, 2, 0, 0, False)])
    assert idle.checked == 0 and idle.violations == 0 and "never moved" in idle.line()
    mixed = cc.pair_violations("per-cpu pair", [(1, 2, 0, 0, False), (3, 4, 5, 5, False)])
    assert mixed.checked == 1
    assert cc.sweep_violations("sweep", [(BASE + i * cc.PAGE_SIZE, 0, 0) for i in range(8)]).checked == 0
    assert cc.sweep_violations("sweep", sweep_state(2 * N + 3)).checked == N
    assert cc.words_sweep_violations("stack", BASE, [0] * 16).checked == 0
    assert cc.words_sweep_violations("stack", BASE, [3] * 16).checked == 16


# --- the torture sizes: read from the kernel, not copied from lib/test_livedump.c ---------------------------

# Resolved at import: the unit tests' autouse fixture points HOME at a temporary directory.
_LOCK = load_lock(LOCK_FILE)
_BUILT_VMLINUX = Paths.from_env().builds / f"{_LOCK.name}-base+livedump" / "vmlinux"
_TORTURE_SOURCE = Paths.from_env().trees / _LOCK.name / "lib" / "test_livedump.c"


def _debug_info_only(vmlinux: Path):
    """A drgn program with vmlinux's debug info and no memory: types, symbols and scopes only."""
    import drgn

    prog = drgn.Program(drgn.host_platform)
    module = prog.extra_module(str(vmlinux), create=True)
    module.address_range = (0xFFFFFFFF81000000, 0xFFFFFFFFFFFFFFFF)  # __START_KERNEL_map + 16 MiB: bias 0
    module.try_file(str(vmlinux), force=True)
    return prog


def test_stack_words_come_from_the_built_kernels_debug_info():
    """The real vmlinux, when a build exists: the bound of tld_writer_fn()'s words[] is TLD_STACK_WORDS."""
    if not _BUILT_VMLINUX.is_file():
        pytest.skip(f"no built kernel at {_BUILT_VMLINUX} (python -m harness build makes it)")
    words = cc.stack_words(_debug_info_only(_BUILT_VMLINUX))
    if _TORTURE_SOURCE.is_file():
        # The module's own #define, when its source is at hand: the debug info must agree with it.
        define = re.search(r"^#define\s+TLD_STACK_WORDS\s+(\d+)", _TORTURE_SOURCE.read_text(), re.M)
        assert define is not None, f"no TLD_STACK_WORDS in {_TORTURE_SOURCE}"
        assert words == int(define.group(1))
    else:
        assert words > 0


@dataclass
class _Frame:
    name: str | None
    local_types: dict

    def __getitem__(self, name):
        return SimpleNamespace(type_=self.local_types[name])


class _FakeProg:
    """What stack_words() asks of a drgn program: a symbol and the frames at a pc."""

    def __init__(self, frames: list[_Frame], symbol: bool = True):
        self.frames, self.has_symbol = frames, symbol

    def symbol(self, name):
        if not self.has_symbol:
            raise LookupError(name)
        return SimpleNamespace(address=0x1000, size=0x200)

    def stack_trace_from_pcs(self, pcs):
        return self.frames


def _array(length):
    return SimpleNamespace(kind=SimpleNamespace(name="ARRAY"), length=length)


def test_stack_words_reads_the_bound_of_the_writers_array_through_inlined_frames():
    frames = [_Frame("tld_update_pair", {}), _Frame("tld_writer_fn", {"words": _array(96)})]
    assert cc.stack_words(_FakeProg(frames)) == 96


@pytest.mark.parametrize("prog, expected", [
    (_FakeProg([], symbol=False), "no `tld_writer_fn`"),
    (_FakeProg([_Frame("tld_writer_fn", {"gen": _array(1)})]), "has no array `words`"),
    (_FakeProg([_Frame("tld_writer_fn", {"words": SimpleNamespace(kind=SimpleNamespace(name="POINTER"))})]),
     "has no array `words`"),
])
def test_stack_words_without_the_array_in_the_debug_info_is_a_clear_error(prog, expected):
    with pytest.raises(cc.ConsistencyError, match=re.escape(expected)) as e:
        cc.stack_words(prog)
    assert e.value.exit_code == 2  # "cannot check", not "torn"


@pytest.mark.parametrize("area, expected", [
    (SimpleNamespace(va_start=0x5000, vm=SimpleNamespace(nr_pages=64)), 64),
    (SimpleNamespace(va_start=0x5000, vm=SimpleNamespace(nr_pages=3)), 3),
])
def test_vmalloc_pages_are_the_areas_own_page_count(monkeypatch, area, expected):
    monkeypatch.setattr("drgn.helpers.linux.mm.find_vmap_area", lambda prog, addr: area)
    assert cc.vmalloc_pages(object(), 0x5000) == expected


@pytest.mark.parametrize("area", [
    None,  # no vmalloc area holds the address
    SimpleNamespace(va_start=0x4000, vm=SimpleNamespace(nr_pages=64)),  # inside an area, not its start
    SimpleNamespace(va_start=0x5000, vm=None),  # an area without a vm_struct (vm_map_ram)
])
def test_vmalloc_pages_fail_clearly_when_the_dump_has_no_such_area(monkeypatch, area):
    monkeypatch.setattr("drgn.helpers.linux.mm.find_vmap_area", lambda prog, addr: area)
    with pytest.raises(cc.ConsistencyError, match="TLD_VMALLOC_PAGES|vmalloc area"):
        cc.vmalloc_pages(object(), 0x5000)
