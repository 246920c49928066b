"""Is a dump one instant? Check the invariants of the test_livedump torture load.

lib/test_livedump.c (CONFIG_TEST_LIVEDUMP) keeps kernel memory changing
while a dump is taken, in structures whose state at any single instant obeys
invariants that a copy taken over time breaks: a generation swept page by
page, counter pairs on different pages, a linked list under insert/delete.
This module reads that state out of a dump by symbol and type with drgn and
checks every invariant.

Reading (drgn) and judging (plain functions on plain values) are separate,
so the judging is unit-tested on synthetic consistent and torn states.

A violation on a page the dump itself lists as inconsistent (the LIVEDUMP
note's failed pfns) is counted apart: the dump said so. A class of memory
the dump says it did not protect is a known gap: checked and printed by
name, but not a failure. The one left is the vmalloc class (the vmalloc and
vmap sweeps) in a dump whose note says no vmalloc or module mapping was
write-protected (livedump.protect_aliases=0, or a kernel before note
version 4); otherwise every invariant must hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import elfcore, validate
from .errors import HarnessError

PAGE_SIZE = 4096
WORDS_PER_PAGE = PAGE_SIZE // 8
# The list walk gives up after this many nodes more than tld_list_len says: a torn list may loop.
LIST_SLACK = 4096
# x86-64, 4-level paging: the direct map covers 64 TiB from PAGE_OFFSET (Documentation/x86/x86_64/mm.rst).
DIRECT_MAP_SIZE = 64 << 40
# lib/test_livedump.c's sizes are #defines, which DWARF does not carry, so they are read from what they
# size: TLD_STACK_WORDS is the bound of the local array tld_writer_fn() publishes in tld_stack_words[]
# (its DWARF type), TLD_VMALLOC_PAGES the page count of the vmalloc area tld_vsweep points to (its
# vm_struct in the dump). Copies of the #defines here would drift silently when the module changes.
STACK_WORDS_FUNCTION, STACK_WORDS_LOCAL = "tld_writer_fn", "words"
# Invariant 9 (a sweep through a vmap() of page-allocator pages): its pages are the bound of this array.
VMAP_SWEEP, VMAP_PAGES = "tld_vmap", "tld_vmap_pages"
# Invariant 10 (a sweep over a module's data, lent by test_livedump_module): base and page count, both set
# only while the module lends them.
MODULE_SWEEP, MODULE_PAGES = "tld_msweep", "tld_msweep_pages"
# The user-space torture writer (buildroot-config/helpers/ldtorture.c, started by harness/dump.py's torture()):
# its task name, where it maps its anonymous and its MAP_SHARED (shmem) region (fixed, so that a dump is read
# without asking the process; each under a top-level page table entry of its own), and the pages of each.
USER_TASK = "ldtorture"
# 256 pages: more than one of the writer's 64-page chunks even where they are contiguous, so that a dump
# copying them over time (the controls) reads them at different moments.
USER_ANON_ADDR, USER_SHARED_ADDR, USER_PAGES = 0x100000000000, 0x200000000000, 256
USER_NOT_PROTECTED = ("the dump did not write-protect user mappings (LIVEDUMP note: no USER_PROTECTED flag; "
                      "livedump.protect_user=0 or an older kernel)")
USER_LEFT_OUT = "the dump leaves user pages out (its exclude): the anonymous region is not in it"
ALIASES_NOT_PROTECTED = ("the dump did not write-protect vmalloc and module mappings (LIVEDUMP note: alias_entries "
                         "0 or absent; livedump.protect_aliases=0 or an older kernel)")


class ConsistencyError(HarnessError):
    """The dump cannot be checked at all (no torture state, load not running, unreadable)."""

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("check-consistency", message, detail=detail, exit_code=2)


@dataclass
class Finding:
    """One invariant of one dump."""

    name: str
    checked: int  # how many items (pages, words, nodes, pairs) were looked at
    # One entry per violation: the addresses it involves (the first one is reported).
    bad: list[tuple[int, ...]] = field(default_factory=list)
    detail: str = ""
    known_gap: str = ""  # why this class is not expected to hold yet; empty: it must hold
    excused: int = 0  # violations involving a page the dump itself lists as inconsistent

    @property
    def violations(self) -> int:
        return len(self.bad)

    @property
    def first_address(self) -> int | None:
        return self.bad[0][0] if self.bad else None

    @property
    def fails(self) -> bool:
        return not self.known_gap and self.violations > self.excused

    def line(self) -> str:
        if self.checked == 0:
            verdict = "not exercised"
        elif not self.bad:
            verdict = "holds"
        else:
            plural = "s" if self.violations != 1 else ""
            verdict = f"{self.violations} violation{plural}, first at {self.first_address:#x}"
            if self.excused:
                verdict += f" ({self.excused} on pages the dump marks inconsistent)"
        gap = f"  [known gap: {self.known_gap}]" if self.known_gap else ""
        return f"{self.name:<24} {verdict}{'; ' + self.detail if self.detail else ''}{gap}"


@dataclass
class Report:
    dump: str
    findings: list[Finding]
    protected: bool  # the dump was taken with write protection (LIVEDUMP note: protected_entries > 0)
    failed_pfns: list[int]
    # vmalloc and module mappings were write-protected too (note v4 alias_entries > 0); None: the note is
    # older and does not say.
    aliases_protected: bool | None = None
    # user mappings were write-protected too (note v5 flags); None: the note is older and does not say.
    user_protected: bool | None = None

    @property
    def violations(self) -> int:
        """Violations that count: not in known gaps, not excused by the dump's own failed-page list."""
        return sum(f.violations - f.excused for f in self.findings if not f.known_gap)

    @property
    def all_violations(self) -> int:
        """Every violation, known gaps and excused ones included."""
        return sum(f.violations for f in self.findings)

    @property
    def ok(self) -> bool:
        return not any(f.fails for f in self.findings)

    def text(self) -> str:
        kind = "write-protected" if self.protected else "NOT write-protected (test-only no-wrprotect)"
        if self.protected and self.aliases_protected is False:
            kind += " (vmalloc and module mappings NOT protected)"
        if self.protected and self.user_protected is False:
            kind += " (user mappings NOT protected)"
        head = f"{self.dump}: {kind} livedump, {len(self.failed_pfns)} page(s) marked inconsistent"
        tail = "consistent: every invariant holds" if self.ok else f"TORN: {self.violations} violation(s)"
        return "\n".join([head, *(f"  {f.line()}" for f in self.findings), tail])

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"], d["violations"] = self.ok, self.violations
        for fd, f in zip(d["findings"], self.findings, strict=True):
            fd["violations"], fd["fails"] = f.violations, f.fails
        return json.dumps(d, indent=2)


# What an architecture's write protection may leave out (harness/arch.py's Arch.unprotected_mappings).
UNPROTECTED_ALIASES = "aliases"  # the vmalloc and module areas
UNPROTECTED_USER = "user"  # user mappings


def protected_dump_problems(report: Report, counters: dict[str, str], *,
                            not_protected_here: frozenset[str] = frozenset()) -> list[str]:
    """Why a dump taken with write protection under the torture load is not a proof of one instant; empty
    when it is. The one verdict make test-qemu and the tests share: the dump was protected, every invariant
    that must hold holds and was exercised, the writers hit protected pages (COW faults) and no page was
    lost (failed pages). counters: the guest's `livedump status` after the dump.

    not_protected_here: what the guest architecture's write protection does not cover at all
    (UNPROTECTED_ALIASES, UNPROTECTED_USER). Where the note agrees, the invariants behind such mappings are
    known gaps of that architecture (named in the report), not a reason to refuse the dump; elsewhere the
    note saying so is one."""
    problems = []
    if not report.protected:
        problems.append("the LIVEDUMP note says nothing was write-protected")
    elif report.aliases_protected is False and UNPROTECTED_ALIASES not in not_protected_here:
        problems.append("the LIVEDUMP note says no vmalloc or module mapping was write-protected")
    elif report.user_protected is False and UNPROTECTED_USER not in not_protected_here:
        problems.append("the LIVEDUMP note says user mappings were not write-protected")
    if not report.ok:
        problems.append(f"torn: {report.violations} violation(s)")
    problems += [f"{f.name}: not exercised" for f in report.findings if not f.known_gap and f.checked == 0]
    cow, failed = counters.get("cow_faults"), counters.get("failed_pages")
    if cow is None or not cow.isdigit() or int(cow) == 0:
        problems.append(f"COW faults {cow}: the writers never hit a protected page")
    if failed is None or failed != "0":
        problems.append(f"failed pages {failed}: pages the dump could not keep")
    return problems


# --- judging: pure functions -------------------------------------------------------------------------------


def sweep_violations(name: str, pages: Sequence[tuple[int, int, int]], *, known_gap: str = "") -> Finding:
    """A generation swept page by page by one writer: pages = [(address, first word, last word)].

    At one instant the first words are non-increasing in page order and span
    at most one generation (the writer is somewhere in the current pass);
    within each page first == last, except on the one page being written,
    where first == last + 1.
    """
    # A writer that never ran (every generation still 0) leaves nothing to check: not exercised.
    moved = any(first or last for _, first, last in pages)
    f = Finding(name, checked=len(pages) if moved else 0, known_gap=known_gap)
    for (prev_addr, prev, _), (addr, cur, _) in zip(pages, pages[1:], strict=False):
        if cur > prev:
            f.bad.append((addr, prev_addr))
    mid_write_seen = False
    for addr, first, last in pages:
        if first == last:
            continue
        if first == last + 1 and not mid_write_seen:
            mid_write_seen = True
            continue
        f.bad.append((addr,))
    gens = [first for _, first, _ in pages]
    if gens:
        low, high = min(gens), max(gens)
        if high - low > 1:
            f.bad.append((pages[gens.index(low)][0], pages[gens.index(high)][0]))
        f.detail = f"{len(pages)} pages, generations {low}..{high}"
    return f


def words_sweep_violations(name: str, base: int, words: Sequence[int], *, known_gap: str = "") -> Finding:
    """A generation swept word by word by one writer: non-increasing, span at most one. All words 0: the
    writer never ran, not exercised."""
    f = Finding(name, checked=len(words) if any(words) else 0, known_gap=known_gap)
    f.bad = [(base + 8 * i,) for i in range(1, len(words)) if words[i] > words[i - 1]]
    if words:
        low, high = min(words), max(words)
        if high - low > 1:
            f.bad.append((base + 8 * words.index(low),))
        f.detail = f"{len(words)} words, generations {low}..{high}"
    return f


def pair_violations(name: str, pairs: Iterable[tuple[int, int, int, int, bool]], *, known_gap: str = "") -> Finding:
    """Counters updated together: [(address of a, address of b, a, b, update in progress)].

    a == b, or a == b + 1 while the update is in progress (its lock is held). A pair still at 0/0 never
    moved: it holds trivially and does not count as checked.
    """
    f = Finding(name, checked=0, known_gap=known_gap)
    shown = []
    for addr_a, addr_b, a, b, busy in pairs:
        if a == 0 and b == 0 and not busy:
            shown.append("0 (never moved)")
            continue
        f.checked += 1
        if a == b or (busy and a == b + 1):
            shown.append(str(a) if a == b else f"{a}/{b} locked")
            continue
        f.bad.append((addr_a, addr_b))
        shown.append(f"a={a} b={b}{' locked' if busy else ''}")
    f.detail = ", ".join(shown[:4]) + (", ..." if len(shown) > 4 else "")
    return f


def list_violations(name: str, head: int, nodes: dict[int, tuple[int, int]], expected_len: int | None,
                    *, locked: bool = False) -> Finding:
    """A list_head ring; nodes = {address: (next, prev)} for what the dump holds along the walk.

    Walking next from head must come back to head; every node's next->prev
    is the node; the count equals the recorded length (unless the lock is held).
    """
    f = Finding(name, checked=0)
    limit = (expected_len or 0) + LIST_SLACK
    cur, count = head, 0
    while True:
        if cur not in nodes:
            f.bad.append((cur,))
            f.detail = f"walk left the list at {cur:#x} after {count} nodes"
            break
        nxt = nodes[cur][0]
        if nxt not in nodes or nodes[nxt][1] != cur:
            f.bad.append((cur, nxt))
        if nxt == head:
            break
        count += 1
        if count > limit:
            f.detail = f"no way back to the head after {count} nodes"
            f.bad.append((cur,))
            break
        cur = nxt
    f.checked = count
    if not f.detail:
        f.detail = f"{count} nodes"
        if expected_len is not None:
            f.detail += f", tld_list_len {expected_len}"
            if count != expected_len and not locked:
                f.bad.append((head,))
    return f


def excuse(finding: Finding, failed_pfns: set[int], pfn_of: Callable[[int], int | None]) -> None:
    """Count the violations that involve a page the dump itself lists as inconsistent."""
    if not failed_pfns:
        return
    finding.excused = sum(1 for addrs in finding.bad if any(pfn_of(a) in failed_pfns for a in addrs))


# --- reading: drgn ------------------------------------------------------------------------------------------


def _var(prog, name: str):
    try:
        return prog[name]
    except KeyError:
        raise ConsistencyError(f"the kernel has no `{name}`: was it built with CONFIG_TEST_LIVEDUMP "
                               "(lib/test_livedump.c)?") from None


def _is_x86_64(prog) -> bool:
    import drgn

    return prog.platform is None or prog.platform.arch == drgn.Architecture.X86_64


class _Memory:
    """Word reads and address classes of one dump."""

    def __init__(self, prog):
        self.prog = prog
        # Another architecture's linear map (arm64) is drgn's to find, from the dump's VMCOREINFO.
        self.x86_64 = _is_x86_64(prog)
        try:
            self.page_offset = int(prog["page_offset_base"])
        except KeyError:
            self.page_offset = 0xFFFF888000000000

    def word(self, addr: int) -> int:
        return self.prog.read_u64(addr)

    def words(self, addr: int, n: int) -> list[int]:
        raw = self.prog.read(addr, 8 * n)
        return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]

    def in_direct_map(self, addr: int) -> bool:
        if not self.x86_64:
            from drgn.helpers.linux.mm import in_direct_map

            return bool(in_direct_map(self.prog, addr))
        return self.page_offset <= addr < self.page_offset + DIRECT_MAP_SIZE

    def pfn(self, addr: int) -> int | None:
        if self.in_direct_map(addr):
            if not self.x86_64:
                from drgn.helpers.linux.mm import virt_to_pfn

                return int(virt_to_pfn(self.prog, addr))
            return (addr - self.page_offset) >> 12
        try:
            from drgn.helpers.linux.mm import follow_phys

            return int(follow_phys(self.prog["init_mm"].address_of_(), addr)) >> 12
        except Exception:  # noqa: BLE001 - an unmapped address just has no pfn to excuse
            return None


@dataclass(frozen=True)
class TortureSizes:
    """The sizes of the torture structures that are not array bounds of a global."""

    vmalloc_pages: int  # TLD_VMALLOC_PAGES: pages of the vmalloc sweep at tld_vsweep
    stack_words: int  # TLD_STACK_WORDS: words of each writer's on-stack array


def stack_words(prog) -> int:
    """TLD_STACK_WORDS from the debug info: the bound of ``unsigned long words[]`` in tld_writer_fn().

    A local's type is only reachable through a frame, so this asks drgn for the scopes at a pc inside
    the function (no core needed: a program with only vmlinux's debug info works too).
    """
    fn, local = STACK_WORDS_FUNCTION, STACK_WORDS_LOCAL
    try:
        sym = prog.symbol(fn)
    except LookupError:
        raise ConsistencyError(f"the kernel has no `{fn}`: was it built with CONFIG_TEST_LIVEDUMP "
                               "(lib/test_livedump.c)?") from None
    # Any pc in the body sees the function's own locals; the entry pc itself may not map to its scope.
    for pc in range(sym.address + 1, sym.address + max(sym.size, 2), max(sym.size // 16, 1)):
        for frame in prog.stack_trace_from_pcs([pc]):
            if frame.name != fn:
                continue
            try:
                t = frame[local].type_
            except KeyError:
                continue
            if t.kind.name == "ARRAY" and t.length:
                return int(t.length)
    raise ConsistencyError(f"the debug info of {fn}() has no array `{local}`: cannot tell how many words each "
                           "writer's stack array holds (TLD_STACK_WORDS); is the kernel built with DWARF and "
                           "does lib/test_livedump.c still publish such an array in tld_stack_words[]?")


def vmalloc_pages(prog, addr: int) -> int:
    """TLD_VMALLOC_PAGES: the pages of the vmalloc area at ``addr`` (tld_vsweep), from its vm_struct."""
    from drgn.helpers.linux.mm import find_vmap_area

    try:
        va = find_vmap_area(prog, addr)
        vm = va.vm if va else None
        pages = int(vm.nr_pages) if vm else 0
    except (LookupError, AttributeError) as e:  # a kernel whose vmalloc structures drgn cannot read
        raise ConsistencyError(f"cannot read the vmalloc area of tld_vsweep ({addr:#x}): {e}") from None
    if not pages or int(va.va_start) != addr:
        raise ConsistencyError(f"tld_vsweep ({addr:#x}) is not the start of a vmalloc area in the dump: "
                               "cannot tell how many pages the vmalloc sweep has (TLD_VMALLOC_PAGES)")
    return pages


def torture_sizes(prog, vsweep: int) -> TortureSizes:
    """Both sizes; vmalloc_pages is 0 when the load has no vmalloc sweep (tld_vsweep NULL)."""
    return TortureSizes(vmalloc_pages=vmalloc_pages(prog, vsweep) if vsweep else 0, stack_words=stack_words(prog))


def _spin_locked(lock) -> bool:
    """A spinlock_t (qspinlock) is held when its value word is non-zero."""
    return int(lock.rlock.raw_lock.val.counter) != 0


def _sweep_pages(mem: _Memory, addrs: Iterable[int]) -> list[tuple[int, int, int]]:
    return [(a, mem.word(a), mem.word(a + PAGE_SIZE - 8)) for a in addrs]


def read_and_check(dump: Path, vmlinux: Path, *, sizes: TortureSizes | None = None) -> Report:
    """Read the torture state out of dump and judge it. sizes: the torture sizes as known (tests);
    default: read from the kernel's debug info and the dump (:func:`torture_sizes`)."""
    import drgn
    from drgn.helpers.linux.cpumask import for_each_possible_cpu
    from drgn.helpers.linux.percpu import per_cpu

    try:
        note = elfcore.read(dump).livedump()
    except (elfcore.NotAnElfDump, OSError) as e:
        raise ConsistencyError(f"{dump} is not a livedump ELF vmcore: {e}") from None
    if note is None:
        raise ConsistencyError(f"{dump} has no LIVEDUMP note: not a livedump")
    try:
        prog = validate.open_drgn(dump, vmlinux)
    except validate.ValidationError as e:
        raise ConsistencyError(e.message, detail=e.detail) from None
    mem = _Memory(prog)
    if not bool(_var(prog, "tld_running")):
        raise ConsistencyError("the torture load was not running at the instant of the dump "
                               "(echo 1 > /sys/module/test_livedump/parameters/run before dumping)")
    findings: list[Finding] = []
    try:
        sweep = _var(prog, "tld_sweep")
        findings.append(sweep_violations("sweep (page allocator)",
                                         _sweep_pages(mem, [int(p) for p in sweep if int(p)])))

        vsweep = int(_var(prog, "tld_vsweep"))
        if sizes is None:
            sizes = torture_sizes(prog, vsweep)
        alias_gap = "" if note.aliases_protected else ALIASES_NOT_PROTECTED
        findings.append(sweep_violations(
            "sweep (vmalloc)",
            _sweep_pages(mem, [vsweep + i * PAGE_SIZE for i in range(sizes.vmalloc_pages)] if vsweep else []),
            known_gap=alias_gap))
        vmap = _vmap_sweep(prog)
        if vmap is not None:  # a kernel from before the vmap sweep has none to check
            base, pages = vmap
            findings.append(sweep_violations(
                "sweep (vmap)", _sweep_pages(mem, [base + i * PAGE_SIZE for i in range(pages)] if base else []),
                known_gap=alias_gap))

        module = _module_sweep(prog)
        if module is not None:  # a kernel from before the module sweep has none to check
            base, pages = module
            findings.append(sweep_violations(
                "sweep (module data)", _sweep_pages(mem, [base + i * PAGE_SIZE for i in range(pages)]),
                known_gap=alias_gap))

        a, b = int(_var(prog, "tld_pair_a")), int(_var(prog, "tld_pair_b"))
        pair = pair_violations("pair under spinlock",
                               [(a, b, mem.word(a), mem.word(b), _spin_locked(_var(prog, "tld_pair_lock")))]
                               if a and b else [])
        if a and b and (a >> 12) == (b >> 12):
            pair.detail += "; NOTE: both counters on one page"
        findings.append(pair)

        findings.append(_check_list(prog, mem))

        pcpu = _var(prog, "tld_pcpu")
        cpus = [per_cpu(pcpu, cpu) for cpu in for_each_possible_cpu(prog)]
        findings.append(pair_violations("per-cpu pair", [
            (int(c.a.address_of_()), int(c.b.address_of_()), int(c.a), int(c.b), False) for c in cpus]))

        for i, ptr in enumerate(_var(prog, "tld_stack_words")):
            base = int(ptr)
            if not base:
                continue
            # Stacks are copied in the stop whatever maps them (VMAP_STACK): always a hard invariant.
            findings.append(words_sweep_violations(f"kthread stack {i}", base, mem.words(base, sizes.stack_words)))

        ia, ib = int(_var(prog, "tld_irq_a")), int(_var(prog, "tld_irq_b"))
        findings.append(pair_violations("hard-IRQ pair",
                                        [(ia, ib, mem.word(ia), mem.word(ib), False)] if ia and ib else []))

        na, nb = int(_var(prog, "tld_nmi_a")), int(_var(prog, "tld_nmi_b"))
        nmi = pair_violations("NMI pair", [(na, nb, mem.word(na), mem.word(nb), False)] if na and nb else [])
        if not (na and nb):
            nmi.known_gap = "no NMI source in this kernel/guest: not exercised"
        findings.append(nmi)
    except drgn.FaultError as e:
        raise ConsistencyError(f"reading the torture state from {dump} failed: {e}") from None

    failed = set(note.failed_pfns)
    for f in findings:
        excuse(f, failed, mem.pfn)
    findings += _user_findings(prog, note, failed)
    return Report(str(dump), findings, protected=note.protected_entries > 0, failed_pfns=sorted(failed),
                  aliases_protected=note.aliases_protected, user_protected=note.user_protected)


def _user_findings(prog, note: elfcore.LivedumpNote, failed: set[int]) -> list[Finding]:
    """The user-space writer's two regions, read through its page tables in the dump; none when no
    ldtorture process was running at the dump. Each is a generation swept word by word."""
    import drgn
    from drgn.helpers.linux.mm import access_remote_vm, follow_phys
    from drgn.helpers.linux.pid import for_each_task

    mms = [t.mm for t in for_each_task(prog) if t.mm and t.comm.string_().decode(errors="replace") == USER_TASK]
    if not mms:
        return []
    mm = mms[0]
    gap = "" if note.user_protected else USER_NOT_PROTECTED
    user_left_out = "user" in (note.excluded_classes or ())

    def pfn_of(addr: int) -> int | None:
        try:
            return int(follow_phys(mm, addr)) >> 12
        except drgn.FaultError:
            return None

    findings = []
    for name, base, left_out in (("user sweep (anonymous)", USER_ANON_ADDR, user_left_out),
                                 ("user sweep (shared)", USER_SHARED_ADDR, False)):
        if left_out:
            findings.append(Finding(name, checked=0, known_gap=USER_LEFT_OUT))
            continue
        try:
            raw = access_remote_vm(mm, base, USER_PAGES * PAGE_SIZE)
        except drgn.FaultError as e:
            raise ConsistencyError(f"reading {USER_TASK}'s {name.split('(')[1][:-1]} region at {base:#x} from the "
                                   f"dump failed: {e}") from None
        words = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
        f = words_sweep_violations(name, base, words, known_gap=gap)
        excuse(f, failed, pfn_of)
        findings.append(f)
    return findings


def _optional_var(prog, name: str):
    """A global of the torture load that kernels from before it lack: None there."""
    try:
        return prog[name]
    except KeyError:
        return None


def _vmap_sweep(prog) -> tuple[int, int] | None:
    """(tld_vmap, pages) of the vmap sweep; pages is the bound of tld_vmap_pages[] in the debug info. None
    when the kernel has no such sweep."""
    base = _optional_var(prog, VMAP_SWEEP)
    if base is None:
        return None
    pages = _var(prog, VMAP_PAGES)
    length = pages.type_.length
    if not length:
        raise ConsistencyError(f"{VMAP_PAGES} has no array bound in the debug info: cannot tell the vmap sweep's "
                               "size")
    return int(base), int(length)


def _module_sweep(prog) -> tuple[int, int] | None:
    """(tld_msweep, tld_msweep_pages) of the module data sweep, (0, 0) while no module lends its data; None
    when the kernel has no such sweep."""
    base = _optional_var(prog, MODULE_SWEEP)
    if base is None:
        return None
    return int(base), int(_var(prog, MODULE_PAGES)) if int(base) else 0


def _check_list(prog, mem: _Memory) -> Finding:
    import drgn

    head = int(_var(prog, "tld_list").address_of_())
    expected = int(_var(prog, "tld_list_len"))
    locked = _spin_locked(_var(prog, "tld_list_lock"))
    nodes: dict[int, tuple[int, int]] = {}
    cur = head
    while cur not in nodes and len(nodes) <= expected + LIST_SLACK:
        try:
            nodes[cur] = (mem.word(cur), mem.word(cur + 8))  # struct list_head { next; prev; }
        except drgn.FaultError:
            break
        cur = nodes[cur][0]
    return list_violations("list under spinlock", head, nodes, expected, locked=locked)
