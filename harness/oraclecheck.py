"""Why a page of a livedump differs from QEMU's capture of the same instant (harness/oracle.py).

Each differing page gets the first class below that explains it, from facts read with drgn in the
livedump itself (its struct pages, free lists, vmap areas, tasks and per-cpu areas are the snapshot's)
and from the two pages' bytes. A page no class explains is *unexplained*: for it the report says what
the page was (slab cache, page table, vmalloc area, user page, ...) so that a person can look.

Explained, in this order:

- ``failed``: listed as failed in the LIVEDUMP note;
- ``free at the stop``: in a block on the buddy free lists, dumped as zeros;
- ``livedump's own``: a page of a vmalloc area livedump or wrprotect allocated (by the name of the
  allocating function), or of wrprotect's page table pool;
- ``entries the stop protected``: every differing word is a present entry the stop made read-only and
  tagged with _PAGE_SOFTW2, or a large leaf it replaced by a table from the pool; in a user mm's PGD
  page, a table entry made read-only without a tag (the stop protects the mms loaded on its CPUs so);
- ``the stop's stacks``: a stack page of a stopper thread (``migration/N``), which spins in the stop;
- ``per-cpu data the stop wrote``: in a CPU's static per-cpu area, which each CPU copies on arriving in
  the stop, so a difference is what the stop wrote after; the variables are named;
- ``kernel data the stop wrote``: every differing word is in a variable of :data:`STOP_WRITES`;
- the classes the Documentation names as not consistent: ``vmalloc alias`` (a page of a vmalloc area
  written through that alias: any, in a dump that did not protect the vmalloc and module areas
  (LIVEDUMP note alias_entries 0); otherwise only a task stack's, which stays writable and whose part
  below the saved stack pointer is not copied), ``user page`` (mapped into user space, in a dump that did
  not protect user mappings: LIVEDUMP note version 5 without USER_PROTECTED, or older),
  ``accessed/dirty bits`` (every differing word a present entry whose A or D bit the CPU set after the
  instant).

The capture is QEMU's view of the held guest: between the instant and the capture only the stop runs
(and devices, whose DMA writes no class explains), so the stop's classes name all it writes.
"""

from __future__ import annotations

import bisect
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import elfcore

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_OFFSET_4LEVEL = 0xFFFF888000000000  # without CONFIG_RANDOMIZE_MEMORY
START_KERNEL_MAP = 0xFFFFFFFF80000000
_PAGE_PRESENT, _PAGE_RW, _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PSE = 1 << 0, 1 << 1, 1 << 5, 1 << 6, 1 << 7
_PAGE_SOFTW2 = 1 << 10                   # wrprotect's tag on the entries it protected
PTE_PFN_MASK = ((1 << 52) - 1) & ~((1 << 12) - 1)
PAGE_TYPE_BASE, PG_BUDDY = 0xF0000000, 0x80
# Kernel variables the stop itself writes after the pages are protected (the write faults and is copied
# first, so the dump keeps the value of the instant): read_hpet() shares the last HPET count it read with
# other CPUs in `hpet` (arch/x86/kernel/hpet.c), and the stop reads the clock (with HPET as clocksource, as
# under TCG) to measure its pause.
STOP_WRITES = frozenset({"hpet"})
# vm_struct::flags of a task's stack (include/linux/vmalloc.h in the series, 0046): a #define, which the
# debug info does not carry.
VM_TASK_STACK = 0x1000
OWN_PREFIXES = ("ld_", "livedump_", "wrprotect_", "wp_")
# What reading a torn snapshot may raise; drgn's FaultError is added when drgn is imported (Snapshot).
READ_ERRORS: tuple[type[Exception], ...] = (OverflowError, ValueError, LookupError)


FAILED = "failed"
FREE = "free at the stop"
OWN = "livedump's own"
PROTECTED_ENTRIES = "entries the stop protected"
HW_BITS = "accessed/dirty bits"
STOP_STACKS = "the stop's stacks"
STOP_PERCPU = "per-cpu data the stop wrote"
STOP_KERNEL = "kernel data the stop wrote"
VMALLOC = "vmalloc alias"
USER = "user page"
UNEXPLAINED = "unexplained"
CLASSES = (FAILED, FREE, OWN, PROTECTED_ENTRIES, STOP_STACKS, STOP_PERCPU, STOP_KERNEL, VMALLOC, USER, HW_BITS,
           UNEXPLAINED)


@dataclass
class Differing:
    pfn: int
    cls: str
    detail: str = ""  # the owner (unexplained), the variables (per-cpu, kernel data), the vmalloc caller


@dataclass
class Report:
    pages: int
    identical: int
    not_in_capture: int
    classes: Counter = field(default_factory=Counter)
    pages_by_class: dict[str, list[Differing]] = field(default_factory=dict)
    named: Counter = field(default_factory=Counter)  # variables and vmalloc callers behind the explained pages
    problems: list[str] = field(default_factory=list)  # what could not be read in the snapshot (torn?)

    @property
    def unexplained(self) -> list[Differing]:
        return self.pages_by_class.get(UNEXPLAINED, [])

    def summary(self) -> str:
        lines = [f"{self.pages} pages compared, {self.identical} identical, "
                 f"{self.pages - self.identical - self.not_in_capture} differing, "
                 f"{self.not_in_capture} not in the capture"]
        for cls in CLASSES:
            if self.classes[cls]:
                lines.append(f"  {cls:28} {self.classes[cls]}")
        for problem in self.problems[:5]:
            lines.append(f"  cannot read: {problem}")
        for d in self.unexplained[:20]:
            lines.append(f"  unexplained pfn {d.pfn:#x}: {d.detail}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"pages": self.pages, "identical": self.identical, "not_in_capture": self.not_in_capture,
                "differing": {cls: self.classes[cls] for cls in CLASSES},
                "named": dict(self.named.most_common()), "problems": self.problems[:50],
                "unexplained": [{"pfn": d.pfn, "owner": d.detail} for d in self.unexplained[:200]]}


def differing_words(a: bytes, b: bytes) -> list[tuple[int, int, int]]:
    """(byte offset, ours, truth) of each 8-byte word that differs."""
    return [(i * 8, x, y) for i, (x, y) in enumerate(zip(struct.unpack("<512Q", a), struct.unpack("<512Q", b),
                                                           strict=True)) if x != y]


def protected_or_split(ours: int, truth: int, pool: set[int]) -> bool:
    """An entry wrprotect changed in the stop: a present writable entry made read-only and tagged, or a
    large leaf (the snapshot's copy of the table holds it) replaced by a table from its pool (kept writable
    around a stack)."""
    if not ours & _PAGE_PRESENT or not truth & _PAGE_PRESENT:
        return False
    if ours ^ truth == _PAGE_RW | _PAGE_SOFTW2:
        return bool(ours & _PAGE_RW) and bool(truth & _PAGE_SOFTW2)
    return bool(ours & _PAGE_PSE) and not truth & _PAGE_PSE and (truth & PTE_PFN_MASK) >> PAGE_SHIFT in pool


def user_table_protected(ours: int, truth: int) -> bool:
    """A user table entry the stop made read-only (arch/x86/mm/wrprotect.c, "User mappings"): present, only
    _PAGE_RW cleared, no tag: table entries are never read-only otherwise. Only asked of a user mm's PGD."""
    return bool(ours & truth & _PAGE_PRESENT) and ours ^ truth == _PAGE_RW and bool(ours & _PAGE_RW)


def hardware_set(ours: int, truth: int) -> bool:
    """A present entry whose accessed or dirty bit the CPU set after the instant, in the snapshot only."""
    diff = ours ^ truth
    return bool(ours & truth & _PAGE_PRESENT) and diff & ~(_PAGE_ACCESSED | _PAGE_DIRTY) == 0 and ours & diff == diff


class Snapshot:
    """What the livedump says about each page at the instant, read with drgn (sparsemem, 4-level paging)."""

    def __init__(self, prog, vmcoreinfo: dict[str, str], nr_pages: int):
        import drgn
        from drgn.helpers.linux.mm import follow_phys, for_each_vmap_area

        global READ_ERRORS
        READ_ERRORS = (drgn.FaultError, OverflowError, ValueError, LookupError)

        self.prog = prog
        self._symbols: list[tuple[int, str]] | None = None
        self._addresses: list[int] = []
        if "SYMBOL(vmemmap)" in vmcoreinfo or "NUMBER(SECTION_SIZE_BITS)" not in vmcoreinfo:
            raise ValueError("the oracle reads classic sparsemem (no SPARSEMEM_VMEMMAP) with SECTION_SIZE_BITS "
                             "and MAX_PHYSMEM_BITS in VMCOREINFO")
        self.section_bits = int(vmcoreinfo["NUMBER(SECTION_SIZE_BITS)"])
        self.physmem_bits = int(vmcoreinfo["NUMBER(MAX_PHYSMEM_BITS)"])
        self.page_size = drgn.sizeof(prog.type("struct page"))
        self.mem_section = prog["mem_section"]
        self.sections_per_root = PAGE_SIZE // drgn.sizeof(prog.type("struct mem_section"))
        try:
            self.page_offset = int(prog["page_offset_base"])
        except KeyError:
            self.page_offset = PAGE_OFFSET_4LEVEL
        # What a torn dump (the negative control) makes unreadable is noted here, not raised.
        self.problems: list[str] = []
        self.nr_pages = nr_pages  # in the dump: no list of pages or tasks is longer
        mm = prog["init_mm"].address_of_()
        self.vmalloc: dict[int, str] = {}
        self.task_stacks: set[int] = set()  # pfns of vmalloc areas marked VM_TASK_STACK
        # Set by check() from the LIVEDUMP note: were vmalloc and module mappings write-protected?
        self.aliases_protected = False
        # ... and user mappings (note version 5)?
        self.user_protected = False
        # vmalloc maps at most every page once: however torn the areas, the walk tries no more pages than that.
        tried = 0
        for va in self._bounded("vmap areas", for_each_vmap_area(prog), self.nr_pages):
            try:
                vm = va.vm
                if not vm:
                    continue
                try:
                    caller = prog.symbol(int(vm.caller)).name
                except LookupError:
                    caller = f"{int(vm.caller):#x}"
                start = int(vm.addr)
                stack = bool(int(vm.flags) & VM_TASK_STACK)
                nr = min(int(vm.nr_pages), (int(va.va_end) - int(va.va_start)) // PAGE_SIZE)
            except READ_ERRORS as e:
                self.problems.append(f"a vmap area: {e}")
                continue
            nr = max(0, min(nr, self.nr_pages - tried))
            tried += nr
            if not nr and tried >= self.nr_pages:
                self.problems.append("vmap areas: more pages than the dump has, not read further")
                break
            for i in range(nr):
                try:
                    pfn = int(follow_phys(mm, start + i * PAGE_SIZE)) // PAGE_SIZE
                except READ_ERRORS:
                    continue
                self.vmalloc[pfn] = caller
                if stack:
                    self.task_stacks.add(pfn)
        wp = prog.object("wp", filename="wrprotect.c")
        self.pool = {int(wp.tables[i].pfn) for i in range(int(wp.nr_tables))} if wp else set()
        self.free = self._free_pfns()
        self.stop_stacks = self._stopper_stack_pfns(mm)
        self.user_pgds = self._user_pgd_pfns()
        self.percpu = self._percpu_ranges()
        self.phys_base = prog.read_u64(prog.symbol("phys_base").address)
        self.image = (prog.symbol("_text").address, prog.symbol("__end_of_kernel_reserve").address)

    def _bounded(self, what: str, items: Iterable, limit: int) -> Iterator:
        """items, stopping with a note at a read error or after limit of them (a torn list may loop)."""
        try:
            for i, item in enumerate(items):
                if i >= limit:
                    self.problems.append(f"{what}: more than {limit}, not read further")
                    return
                yield item
        except READ_ERRORS as e:
            self.problems.append(f"{what}: {e}")

    def _mem_map(self, section: int) -> int:
        """The section's encoded mem_map: struct page of pfn is at it + pfn * sizeof(struct page)."""
        root = self.mem_section[section // self.sections_per_root]
        return int(root[section % self.sections_per_root].section_mem_map) & ~0x3F  # SECTION_MAP_MASK

    def page(self, pfn: int):
        from drgn import Object

        mem_map = self._mem_map(pfn >> (self.section_bits - PAGE_SHIFT))
        return Object(self.prog, "struct page *", value=mem_map + pfn * self.page_size)

    def _free_pfns(self) -> set[int]:
        from drgn.helpers.linux.list import list_for_each_entry

        free: set[int] = set()
        walked = 0
        prog = self.prog
        for nid in range(int(prog["nr_online_nodes"]) if "nr_online_nodes" in prog else 1):
            pgdat = prog["node_data"][nid] if "node_data" in prog else prog["contig_page_data"].address_of_()
            for z in range(len(pgdat.node_zones)):
                zone = pgdat.node_zones[z]
                if not int(zone.present_pages):
                    continue  # an empty zone's free lists were never initialised
                for order in range(len(zone.free_area)):
                    area = zone.free_area[order]
                    for mt in range(len(area.free_list)):
                        blocks = list_for_each_entry("struct page", area.free_list[mt].address_of_(), "lru")
                        # All lists together hold at most a block per page: a torn one may loop.
                        for page in self._bounded(f"free list {z}/{order}/{mt}", blocks, self.nr_pages - walked):
                            walked += 1
                            try:
                                head = self._pfn_of(page)
                            except READ_ERRORS as e:
                                self.problems.append(f"free list {z}/{order}/{mt}: {e}")
                                break
                            free.update(range(head, head + (1 << order)))
        return free

    def _pfn_of(self, page) -> int:
        # Classic sparsemem keeps the section number in the top bits of page->flags.
        section = int(page.flags) >> (64 - (self.physmem_bits - self.section_bits))
        return (int(page) - self._mem_map(section)) // self.page_size

    def _stopper_stack_pfns(self, mm) -> set[int]:
        from drgn.helpers.linux.mm import follow_phys
        from drgn.helpers.linux.pid import for_each_task

        pfns: set[int] = set()
        size = int(self.prog["THREAD_SIZE"]) if "THREAD_SIZE" in self.prog else 4 * PAGE_SIZE
        for task in self._bounded("tasks", for_each_task(self.prog), self.nr_pages):
            try:
                if not task.comm.string_().startswith(b"migration/"):
                    continue
                base = int(task.stack)
            except READ_ERRORS as e:
                self.problems.append(f"a task: {e}")
                continue
            for off in range(0, size, PAGE_SIZE):
                try:
                    pfns.add(int(follow_phys(mm, base + off)) // PAGE_SIZE)
                except READ_ERRORS:
                    continue
        return pfns

    def _user_pgd_pfns(self) -> set[int]:
        """The PGD pages the stop writes: those of the mm each CPU had loaded (an exiting process's, which no
        task names any more, included), and of every task's mm (with PTI, the user copy next to each too)."""
        from drgn.helpers.linux.cpumask import for_each_possible_cpu
        from drgn.helpers.linux.percpu import per_cpu
        from drgn.helpers.linux.pid import for_each_task

        mms = []
        try:
            mms += [per_cpu(self.prog["cpu_tlbstate"], cpu).loaded_mm for cpu in for_each_possible_cpu(self.prog)]
        except (KeyError, *READ_ERRORS) as e:
            self.problems.append(f"the CPUs' loaded mms: {e}")
        for task in self._bounded("tasks", for_each_task(self.prog), self.nr_pages):
            mms.append(task.mm)
        pfns: set[int] = set()
        for mm in mms:
            try:
                if not mm:
                    continue
                pgd = int(mm.pgd)
            except READ_ERRORS as e:
                self.problems.append(f"an mm: {e}")
                continue
            if pgd >= self.page_offset:
                pfn = (pgd - self.page_offset) // PAGE_SIZE
                pfns.update((pfn, pfn + 1))
        return pfns

    def _percpu_ranges(self) -> list[tuple[int, int, int]]:
        """(first pfn, end pfn, per-cpu offset) of each possible CPU's static per-cpu area in the direct map."""
        start = self.prog.symbol("__per_cpu_start").address
        end = self.prog.symbol("__per_cpu_end").address
        out = []
        offsets = self.prog["__per_cpu_offset"]
        for cpu in range(int(self.prog["nr_cpu_ids"])):
            base = int(offsets[cpu]) + start
            if base < self.page_offset:
                continue
            phys = base - self.page_offset
            out.append((phys // PAGE_SIZE, (phys + end - start + PAGE_SIZE - 1) // PAGE_SIZE, int(offsets[cpu])))
        return out

    def symbol_at(self, addr: int) -> str:
        """The symbol holding addr, or the nearest one below it as name+offset (per-cpu and local symbols
        often have no size)."""
        try:
            return self.prog.symbol(addr).name
        except LookupError:
            pass
        if self._symbols is None:
            self._symbols = sorted((s.address, s.name) for s in self.prog.symbols())
            self._addresses = [a for a, _ in self._symbols]
        i = bisect.bisect_right(self._addresses, addr) - 1
        if i < 0:
            return f"{addr:#x}"
        base, name = self._symbols[i]
        return name if base == addr else f"{name}+{addr - base:#x}"

    def image_address(self, pfn: int) -> int | None:
        """The kernel image address of pfn; None outside the image and in the parts freed after boot
        (init sections, the gaps between text, rodata and data), which are ordinary pages since."""
        from drgn.helpers.linux.mm import PageReserved

        # phys_base is the image's physical minus virtual offset, modulo 2^64 (KASLR may load it "below").
        va = (pfn * PAGE_SIZE - self.phys_base + START_KERNEL_MAP) & (2**64 - 1)
        if not self.image[0] <= va < self.image[1] or not PageReserved(self.page(pfn)):
            return None
        return va

    def owner(self, pfn: int) -> str:
        """What the page was at the instant, for a person to look at."""
        from drgn import Object
        from drgn.helpers.linux.mm import PageSlab, PageTail

        page = self.page(pfn)
        flags, mapcount = int(page.flags), int(page._mapcount.counter) + 1
        if pfn in self.vmalloc:
            return f"vmalloc area of {self.vmalloc[pfn]}"
        va = self.image_address(pfn)
        if va is not None:
            return f"kernel image at {self.symbol_at(va)}"
        if PageSlab(page):
            head = int(page.compound_head) - 1 if PageTail(page) else int(page)
            cache = Object(self.prog, "struct slab *", value=head).slab_cache
            return f"slab cache {cache.name.string_().decode(errors='replace')}"
        ptype = int(page.page_type) & 0xFFFFFFFF
        if (ptype & (PAGE_TYPE_BASE | PG_BUDDY)) == PAGE_TYPE_BASE:
            return "buddy free block head"
        if (ptype & (PAGE_TYPE_BASE | 0x200)) == PAGE_TYPE_BASE:
            return "page table page"
        mapping = int(page.mapping)
        return f"page flags {flags & 0xFFFFF:#x}, mapcount {mapcount}, mapping {mapping:#x}"


def classify(snap: Snapshot, pfn: int, ours: bytes, truth: bytes, failed: set[int]) -> Differing:
    if pfn in failed:
        return Differing(pfn, FAILED)
    zero = ours == bytes(PAGE_SIZE)
    if zero and pfn in snap.free:
        return Differing(pfn, FREE)
    caller = snap.vmalloc.get(pfn)
    if caller and caller.startswith(OWN_PREFIXES):
        return Differing(pfn, OWN, caller)
    if pfn in snap.pool:
        return Differing(pfn, OWN, "page table pool")
    words = differing_words(ours, truth)
    if words and all(protected_or_split(x, y, snap.pool) for _, x, y in words):
        return Differing(pfn, PROTECTED_ENTRIES)
    if words and pfn in snap.user_pgds and all(user_table_protected(x, y) for _, x, y in words):
        return Differing(pfn, PROTECTED_ENTRIES, "user page table")
    if words and all(hardware_set(x, y) for _, x, y in words):
        return Differing(pfn, HW_BITS)
    if pfn in snap.stop_stacks:
        return Differing(pfn, STOP_STACKS)
    offsets = [o for o, _, _ in words]
    for first, end, cpu_off in snap.percpu:
        if first <= pfn < end:
            names = sorted({snap.symbol_at(snap.page_offset + pfn * PAGE_SIZE + o - cpu_off) for o in offsets})
            return Differing(pfn, STOP_PERCPU, ", ".join(names))
    if caller and not snap.aliases_protected:
        return Differing(pfn, VMALLOC, caller)
    if pfn in snap.task_stacks:
        return Differing(pfn, VMALLOC, "task stack")
    if int(snap.page(pfn)._mapcount.counter) >= 0 and not snap.user_protected:
        return Differing(pfn, USER)
    va = snap.image_address(pfn)
    if va is not None:
        names = {snap.symbol_at(va + o) for o in offsets}
        if names <= STOP_WRITES:
            return Differing(pfn, STOP_KERNEL, ", ".join(sorted(names)))
        return Differing(pfn, UNEXPLAINED, "kernel image: " + ", ".join(sorted(names))[:300])
    return Differing(pfn, UNEXPLAINED, snap.owner(pfn))


def check(livedump: Path, capture: Path, vmlinux: Path, differing: list[int], pages: int, identical: int,
          not_in_capture: int) -> Report:
    from . import validate

    prog = validate.open_drgn(livedump, vmlinux)
    ld, qemu = elfcore.read(livedump), elfcore.read(capture)
    snap = Snapshot(prog, ld.vmcoreinfo(), pages)
    note = ld.livedump()
    failed = set(note.failed_pfns) if note else set()
    snap.aliases_protected = bool(note and note.aliases_protected)
    snap.user_protected = bool(note and note.user_protected)
    report = Report(pages=pages, identical=identical, not_in_capture=not_in_capture)
    report.problems = snap.problems
    for pfn in differing:
        ours, truth = ld.read_phys(pfn * PAGE_SIZE, PAGE_SIZE), qemu.read_phys(pfn * PAGE_SIZE, PAGE_SIZE)
        try:
            d = classify(snap, pfn, ours, truth, failed)
        except READ_ERRORS as e:
            d = Differing(pfn, UNEXPLAINED, f"its struct page cannot be read: {e}")
        report.classes[d.cls] += 1
        report.pages_by_class.setdefault(d.cls, []).append(d)
        if d.cls != UNEXPLAINED and d.detail:
            for name in d.detail.split(", "):
                report.named[f"{d.cls}: {name}"] += 1
    return report
