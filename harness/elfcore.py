"""Reading the headers and notes of an ELF64 vmcore (livedump, kdump, QEMU).

Only the standard library: this runs on the host against the raw disk image a
guest wrote, which is the ELF file followed by whatever the disk held before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS = 1
NT_LIVEDUMP = 0x4C440001
LIVEDUMP_NOTE_NAME = "LIVEDUMP"
EM_X86_64 = 62
EM_AARCH64 = 183
# struct elf_prstatus on a 64-bit kernel: pr_pid at 32, pr_reg (the architecture's elf_gregset_t) at 112,
# then pr_fpvalid and padding to 8 bytes. Only pr_reg's length differs between architectures.
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REGS_OFFSET = 112
X86_64_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
               "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")
# arm64's struct user_pt_regs: x0..x30, sp, pc, pstate.
AARCH64_REGS = (*(f"x{i}" for i in range(31)), "sp", "pc", "pstate")


@dataclass(frozen=True)
class RegisterLayout:
    """An architecture's NT_PRSTATUS: its size, pr_reg's register names in order, and which are pc and sp."""

    arch: str
    prstatus_size: int
    regs: tuple[str, ...]
    pc: str
    sp: str


PRSTATUS_LAYOUTS = {
    EM_X86_64: RegisterLayout("x86_64", 336, X86_64_REGS, pc="rip", sp="rsp"),
    EM_AARCH64: RegisterLayout("arm64", 392, AARCH64_REGS, pc="pc", sp="sp"),
}
PRSTATUS_SIZE = PRSTATUS_LAYOUTS[EM_X86_64].prstatus_size  # x86-64's, as before other architectures
# struct livedump_note, include/uapi/linux/livedump.h: version 1, then what version 2 adds (what the dump cost).
_LIVEDUMP_NOTE = struct.Struct("<IIqQQQQQQQQ128s")
FAULT_HIST_BUCKETS = 32
_LIVEDUMP_COSTS = struct.Struct(f"<5Q{FAULT_HIST_BUCKETS}Q")
# Version 3: the page classes left out, how many are counted, pages in no PT_LOAD, RAM by class at the stop
# (enum livedump_page_class, room for 16).
PAGE_CLASSES = ("kernel", "cache", "cache-private", "user", "free", "own", "unknown")
NOTE_CLASSES = 16
_LIVEDUMP_CLASSES = struct.Struct(f"<IIQ{NOTE_CLASSES}Q")
# Version 4: of the entries protected, those in the vmalloc and module areas (0: aliases not protected).
_LIVEDUMP_ALIASES = struct.Struct("<Q")
# Version 5: flags (NOTE_USER_PROTECTED), a reserved u32, user page table entries write-protected.
_LIVEDUMP_USER = struct.Struct("<IIQ")
NOTE_USER_PROTECTED = 1 << 0


def class_names(mask: int) -> tuple[str, ...]:
    """The page classes whose bits (1 << class, as in livedump_init::exclude) are set in mask."""
    return tuple(PAGE_CLASSES[bit] if bit < len(PAGE_CLASSES) else f"class {bit}"
                 for bit in range(32) if mask & (1 << bit))


class NotAnElfDump(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes


@dataclass(frozen=True)
class PrStatus:
    pid: int
    regs: dict[str, int]
    machine: int = EM_X86_64  # the dump's e_machine: which registers regs names

    @property
    def layout(self) -> RegisterLayout:
        return prstatus_layout(self.machine)

    @property
    def pc(self) -> int:
        """Where the CPU was executing (x86-64 rip, arm64 pc)."""
        return self.regs[self.layout.pc]

    @property
    def sp(self) -> int:
        """Its stack pointer (x86-64 rsp, arm64 sp)."""
        return self.regs[self.layout.sp]


def prstatus_layout(machine: int) -> RegisterLayout:
    try:
        return PRSTATUS_LAYOUTS[machine]
    except KeyError:
        known = ", ".join(f"{m} ({layout.arch})" for m, layout in PRSTATUS_LAYOUTS.items())
        raise NotAnElfDump(f"no NT_PRSTATUS layout for ELF machine {machine}; known: {known}") from None


@dataclass(frozen=True)
class LivedumpNote:
    version: int
    nr_cpus: int
    start_time_ns: int
    pause_ns: int
    pages_total: int
    cow_faults: int
    stop_copied: int
    zero_pages: int
    protected_entries: int
    failed_pages: int
    nr_listed: int
    reason: str
    failed_pfns: tuple[int, ...]
    # Version 2: None in a version 1 note.
    reserve_pages: int | None = None
    reserve_used_max: int | None = None
    table_pages: int | None = None
    tables_used: int | None = None
    fault_max_ns: int | None = None
    fault_ns_log2: tuple[int, ...] | None = None
    # Version 3: None before.
    exclude: int | None = None
    class_pages: dict[str, int] | None = None
    excluded_pages: int | None = None
    # Version 4: None before.
    alias_entries: int | None = None
    # Version 5: None before.
    flags: int | None = None
    user_entries: int | None = None

    @property
    def user_protected(self) -> bool | None:
        """Were user mappings write-protected (livedump.protect_user)? None: the note does not say (before v5)."""
        return None if self.flags is None else bool(self.flags & NOTE_USER_PROTECTED)

    @property
    def aliases_protected(self) -> bool | None:
        """Were the vmalloc and module mappings write-protected? None: the note does not say (before v4)."""
        return None if self.alias_entries is None else self.alias_entries > 0

    @property
    def excluded_classes(self) -> tuple[str, ...] | None:
        return None if self.exclude is None else class_names(self.exclude)

    @classmethod
    def parse(cls, desc: bytes) -> LivedumpNote:
        if len(desc) < _LIVEDUMP_NOTE.size:
            raise NotAnElfDump(f"LIVEDUMP note is {len(desc)} bytes, expected at least {_LIVEDUMP_NOTE.size}")
        fields = _LIVEDUMP_NOTE.unpack_from(desc)
        version, nr_listed = fields[0], fields[10]
        reason = fields[-1].split(b"\0", 1)[0].decode(errors="replace")
        costs: dict = {}
        pfn_offset = _LIVEDUMP_NOTE.size
        if version >= 2:
            if len(desc) < _LIVEDUMP_NOTE.size + _LIVEDUMP_COSTS.size:
                raise NotAnElfDump(f"LIVEDUMP note version {version} is {len(desc)} bytes, expected at least "
                                   f"{_LIVEDUMP_NOTE.size + _LIVEDUMP_COSTS.size}")
            c = _LIVEDUMP_COSTS.unpack_from(desc, _LIVEDUMP_NOTE.size)
            costs = dict(reserve_pages=c[0], reserve_used_max=c[1], table_pages=c[2], tables_used=c[3],
                         fault_max_ns=c[4], fault_ns_log2=tuple(c[5:]))
            if version >= 3:
                at = _LIVEDUMP_NOTE.size + _LIVEDUMP_COSTS.size
                if len(desc) < at + _LIVEDUMP_CLASSES.size + 8 * nr_listed:
                    raise NotAnElfDump(f"LIVEDUMP note version {version} is {len(desc)} bytes, expected at least "
                                       f"{at + _LIVEDUMP_CLASSES.size} and the listed pfns")
                exclude, nr_classes, excluded, *pages = _LIVEDUMP_CLASSES.unpack_from(desc, at)
                if nr_classes > NOTE_CLASSES:
                    raise NotAnElfDump(f"LIVEDUMP note counts {nr_classes} page classes, room for {NOTE_CLASSES}")
                names = [PAGE_CLASSES[i] if i < len(PAGE_CLASSES) else f"class {i}" for i in range(nr_classes)]
                costs.update(exclude=exclude, class_pages=dict(zip(names, pages[:nr_classes], strict=True)),
                             excluded_pages=excluded)
                if version >= 4:
                    at += _LIVEDUMP_CLASSES.size
                    if len(desc) < at + _LIVEDUMP_ALIASES.size + 8 * nr_listed:
                        raise NotAnElfDump(f"LIVEDUMP note version {version} is {len(desc)} bytes, expected at "
                                           f"least {at + _LIVEDUMP_ALIASES.size} and the listed pfns")
                    (costs["alias_entries"],) = _LIVEDUMP_ALIASES.unpack_from(desc, at)
                    if version >= 5:
                        at += _LIVEDUMP_ALIASES.size
                        if len(desc) < at + _LIVEDUMP_USER.size + 8 * nr_listed:
                            raise NotAnElfDump(f"LIVEDUMP note version {version} is {len(desc)} bytes, expected "
                                               f"at least {at + _LIVEDUMP_USER.size} and the listed pfns")
                        costs["flags"], _, costs["user_entries"] = _LIVEDUMP_USER.unpack_from(desc, at)
            # The pfns are the descriptor's tail, whatever a later version adds before them.
            pfn_offset = len(desc) - 8 * nr_listed
        if pfn_offset < _LIVEDUMP_NOTE.size or pfn_offset + 8 * nr_listed > len(desc):
            raise NotAnElfDump(f"LIVEDUMP note lists {nr_listed} pfns but is {len(desc)} bytes")
        pfns = struct.unpack_from(f"<{nr_listed}Q", desc, pfn_offset) if nr_listed else ()
        return cls(*fields[:-1], reason, tuple(pfns), **costs)


# A streamed dump (LIVEDUMP_INIT_STREAM) ends with its final LIVEDUMP note after the last segment: the ELF
# note, then its size and this magic, both little-endian u64 (include/uapi/linux/livedump.h).
TRAILER_MAGIC = 0x4C494152544C444C  # "LDLTRAIL"
_TRAILER_FOOTER = struct.Struct("<QQ")


NT_LIVEDUMP_TRIGGER = 0x4C440002
TRIGGER_NAMES = ("warn", "sysrq", "call")  # by bit, include/uapi/linux/livedump.h LIVEDUMP_TRIGGER_*
_TRIGGER_NOTE = struct.Struct("<IiiIqQ128s27Q")


@dataclass(frozen=True)
class TriggerNote:
    """What started an armed dump (NT_LIVEDUMP_TRIGGER)."""

    event: str
    cpu: int
    pid: int  # 0: interrupt context
    time_ns: int
    delay_ns: int  # from the event to the stop
    where: str
    regs: dict[str, int] | None  # at the event, when it had them (a WARN does)

    @classmethod
    def parse(cls, desc: bytes) -> TriggerNote:
        if len(desc) < _TRIGGER_NOTE.size:
            raise NotAnElfDump(f"trigger note is {len(desc)} bytes, expected {_TRIGGER_NOTE.size}")
        event, cpu, pid, has_regs, time_ns, delay_ns, where, *regs = _TRIGGER_NOTE.unpack_from(desc)
        names = [name for bit, name in enumerate(TRIGGER_NAMES) if event & (1 << bit)]
        return cls(",".join(names) or f"unknown {event:#x}", cpu, pid, time_ns, delay_ns,
                   where.split(b"\0", 1)[0].decode(errors="replace"),
                   dict(zip(X86_64_REGS, regs, strict=True)) if has_regs else None)


@dataclass(frozen=True)
class Vmcore:
    path: Path
    segments: tuple[Segment, ...]
    notes: tuple[Note, ...]
    # The notes of a stream's trailer; () for a dump written to a target.
    trailer: tuple[Note, ...] = ()
    machine: int = EM_X86_64  # e_machine

    @property
    def loads(self) -> list[Segment]:
        return [s for s in self.segments if s.type == PT_LOAD]

    @property
    def end(self) -> int:
        """File size the ELF needs: where the last segment's data ends."""
        return _segments_end(self.segments)

    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of the dump at physical address ``paddr``; they must lie in one PT_LOAD."""
        for s in self.loads:
            if s.paddr <= paddr and paddr + size <= s.paddr + s.filesz:
                with open(self.path, "rb") as f:
                    f.seek(s.offset + paddr - s.paddr)
                    data = f.read(size)
                if len(data) != size:
                    raise NotAnElfDump(f"{self.path} ends inside the PT_LOAD holding {paddr:#x}")
                return data
        raise KeyError(f"no PT_LOAD holds physical {paddr:#x}..{paddr + size:#x}")

    def prstatus(self) -> list[PrStatus]:
        """The CPUs' NT_PRSTATUS notes, with the registers of the dump's architecture (e_machine)."""
        notes = [n for n in self.notes if n.name == "CORE" and n.type == NT_PRSTATUS]
        if not notes:
            return []
        layout = prstatus_layout(self.machine)
        out = []
        for n in notes:
            if len(n.desc) != layout.prstatus_size:
                raise NotAnElfDump(f"NT_PRSTATUS descriptor is {len(n.desc)} bytes, expected "
                                   f"{layout.prstatus_size} ({layout.arch})")
            pid, = struct.unpack_from("<i", n.desc, PRSTATUS_PID_OFFSET)
            regs = struct.unpack_from(f"<{len(layout.regs)}Q", n.desc, PRSTATUS_REGS_OFFSET)
            out.append(PrStatus(pid, dict(zip(layout.regs, regs, strict=True)), self.machine))
        return out

    def vmcoreinfo(self) -> dict[str, str]:
        for n in self.notes:
            if n.name == "VMCOREINFO":
                text = n.desc.split(b"\0", 1)[0].decode(errors="replace")
                return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return {}

    def livedump(self) -> LivedumpNote | None:
        """The dump's final LIVEDUMP note: a stream's trailer, or the one in the PT_NOTE."""
        for n in (*self.trailer, *self.notes):
            if n.name == LIVEDUMP_NOTE_NAME and n.type == NT_LIVEDUMP:
                return LivedumpNote.parse(n.desc)
        return None

    def trigger(self) -> TriggerNote | None:
        """What started an armed dump; None for a dump started by hand."""
        for n in self.notes:
            if n.name == LIVEDUMP_NOTE_NAME and n.type == NT_LIVEDUMP_TRIGGER:
                return TriggerNote.parse(n.desc)
        return None

    def livedump_in_headers(self) -> LivedumpNote | None:
        """The LIVEDUMP note in the PT_NOTE: a stream's, as of the start of its sweep."""
        return replace(self, trailer=()).livedump()


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_notes(data: bytes) -> list[Note]:
    notes, pos = [], 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break
        pos += 12
        name = data[pos:pos + namesz].split(b"\0", 1)[0].decode(errors="replace")
        pos += _align4(namesz)
        desc = data[pos:pos + descsz]
        if len(desc) != descsz:
            raise NotAnElfDump("truncated ELF note")
        pos += _align4(descsz)
        notes.append(Note(name, ntype, desc))
    return notes


def read(path: Path) -> Vmcore:
    with open(path, "rb") as f:
        ehdr = f.read(64)
        if len(ehdr) < 64 or ehdr[:4] != b"\x7fELF":
            raise NotAnElfDump(f"{path} does not start with an ELF header")
        if ehdr[4] != 2 or ehdr[5] != 1:
            raise NotAnElfDump(f"{path} is not a little-endian ELF64 file")
        e_type, e_machine = struct.unpack_from("<HH", ehdr, 16)
        if e_type != 4:
            raise NotAnElfDump(f"{path} is an ELF file of type {e_type}, not a core dump (ET_CORE)")
        e_phoff, = struct.unpack_from("<Q", ehdr, 0x20)
        e_phentsize, e_phnum = struct.unpack_from("<HH", ehdr, 0x36)
        if e_phentsize != 56 or e_phnum == 0:
            raise NotAnElfDump(f"{path}: unexpected program headers ({e_phnum} of {e_phentsize} bytes)")
        f.seek(e_phoff)
        raw = f.read(e_phentsize * e_phnum)
        segments = []
        for i in range(e_phnum):
            p_type, _flags, off, vaddr, paddr, filesz, memsz, align = struct.unpack_from("<IIQQQQQQ", raw, i * 56)
            segments.append(Segment(p_type, off, vaddr, paddr, filesz, memsz, align))
        notes: list[Note] = []
        for s in segments:
            if s.type == PT_NOTE:
                f.seek(s.offset)
                notes += parse_notes(f.read(s.filesz))
        trailer = _read_trailer(f, _segments_end(segments))
    return Vmcore(path, tuple(segments), tuple(notes), trailer, e_machine)


def _segments_end(segments) -> int:
    return max((s.offset + s.filesz for s in segments), default=0)


def _read_trailer(f, end: int) -> tuple[Note, ...]:
    """A stream's trailer between ``end`` (where the segments end) and the end of the file, if it has one."""
    size = f.seek(0, 2)
    if size < end + _TRAILER_FOOTER.size:
        return ()
    f.seek(size - _TRAILER_FOOTER.size)
    length, magic = _TRAILER_FOOTER.unpack(f.read(_TRAILER_FOOTER.size))
    if magic != TRAILER_MAGIC:
        return ()
    if length > size - _TRAILER_FOOTER.size - end:
        raise NotAnElfDump(f"the trailer claims {length} bytes, but only {size - _TRAILER_FOOTER.size - end} "
                           "follow the segments")
    f.seek(size - _TRAILER_FOOTER.size - length)
    return tuple(parse_notes(f.read(length)))
