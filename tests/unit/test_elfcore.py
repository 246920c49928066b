"""elfcore reads the headers and notes a livedump (or kdump) vmcore carries."""

from __future__ import annotations

import struct

import pytest

from harness import elfcore


def note(name: str, ntype: int, desc: bytes) -> bytes:
    raw_name = name.encode() + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(raw_name), len(desc), ntype) + pad(raw_name) + pad(desc)


def prstatus(pid: int, rip: int, rsp: int) -> bytes:
    desc = bytearray(elfcore.PRSTATUS_SIZE)
    struct.pack_into("<i", desc, elfcore.PRSTATUS_PID_OFFSET, pid)
    regs = [0] * len(elfcore.X86_64_REGS)
    regs[elfcore.X86_64_REGS.index("rip")] = rip
    regs[elfcore.X86_64_REGS.index("rsp")] = rsp
    struct.pack_into(f"<{len(regs)}Q", desc, elfcore.PRSTATUS_REGS_OFFSET, *regs)
    return bytes(desc)


def livedump_desc(reason: str, pfns: list[int]) -> bytes:
    head = struct.pack("<IIqQQQQQQQQ128s", 1, 2, 1_700_000_000_000_000_000, 1234, 131072, 17, 40, 9000, 70,
                       len(pfns), len(pfns), reason.encode())
    return head + struct.pack(f"<{len(pfns)}Q", *pfns)


def make_core(notes: bytes, loads: list[tuple[int, int, bytes]], *, e_type: int = 4, trailing: bytes = b"") -> bytes:
    phnum = 1 + len(loads)
    data_start = 64 + 56 * phnum
    note_off = data_start
    load_off = note_off + len(notes)
    phdrs = struct.pack("<IIQQQQQQ", elfcore.PT_NOTE, 0, note_off, 0, 0, len(notes), len(notes), 0)
    body = notes
    for paddr, vaddr, payload in loads:
        phdrs += struct.pack("<IIQQQQQQ", elfcore.PT_LOAD, 7, load_off + len(body) - len(notes), vaddr, paddr,
                             len(payload), len(payload), 0)
        body += payload
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr += struct.pack("<HHIQQQIHHHHHH", e_type, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    return ehdr + phdrs + body + trailing


@pytest.fixture
def core_file(tmp_path):
    notes = (note("VMCOREINFO", 0, b"OSRELEASE=6.1.192-livedump\nKERNELOFFSET=1a000000\n\0")
             + note("CORE", elfcore.NT_PRSTATUS, prstatus(0, 0xFFFFFFFF81000000, 0xFFFFC90000003F00))
             + note("CORE", elfcore.NT_PRSTATUS, prstatus(0, 0xFFFFFFFF81000010, 0xFFFFC90000007F00))
             + note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("because", [0x1234, 0x5678])))
    data = make_core(notes, [(0x1000, 0xFFFF888000001000, b"A" * 4096), (0x100000, 0xFFFF888000100000, b"B" * 8192)],
                     trailing=b"\xff" * 10000)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return path, len(data) - 10000


def test_segments_and_end_ignore_trailing_disk_bytes(core_file):
    path, elf_size = core_file
    core = elfcore.read(path)
    assert [s.type for s in core.segments] == [elfcore.PT_NOTE, elfcore.PT_LOAD, elfcore.PT_LOAD]
    assert [(s.paddr, s.filesz) for s in core.loads] == [(0x1000, 4096), (0x100000, 8192)]
    assert core.end == elf_size
    with open(path, "rb") as f:
        f.seek(core.loads[1].offset)
        assert f.read(4) == b"BBBB"


def test_read_phys_finds_the_segment(core_file):
    core = elfcore.read(core_file[0])
    assert core.read_phys(0x1000, 4) == b"AAAA"
    assert core.read_phys(0x101000, 4096) == b"B" * 4096
    with pytest.raises(KeyError):
        core.read_phys(0x2000, 1)  # a hole between the segments
    with pytest.raises(KeyError):
        core.read_phys(0x101800, 4096)  # runs past the end of the segment


def test_vmcoreinfo_and_prstatus(core_file):
    core = elfcore.read(core_file[0])
    assert core.vmcoreinfo()["KERNELOFFSET"] == "1a000000"
    regs = core.prstatus()
    assert len(regs) == 2
    assert regs[1].regs["rip"] == 0xFFFFFFFF81000010
    assert regs[0].regs["rsp"] == 0xFFFFC90000003F00


def test_livedump_note(core_file):
    ld = elfcore.read(core_file[0]).livedump()
    assert ld is not None
    assert (ld.version, ld.nr_cpus, ld.pause_ns, ld.cow_faults) == (1, 2, 1234, 17)
    assert ld.reason == "because"
    assert ld.failed_pfns == (0x1234, 0x5678)


def test_livedump_note_version_2_costs_and_pfns_after_them():
    head = bytearray(livedump_desc("v2", []))
    struct.pack_into("<I", head, 0, 2)
    struct.pack_into("<QQ", head, 64, 1, 1)  # failed_pages, nr_listed
    hist = [0] * elfcore.FAULT_HIST_BUCKETS
    hist[10] = 3
    desc = bytes(head) + struct.pack(f"<5Q{len(hist)}Q", 4096, 1234, 300, 21, 98_765, *hist) + struct.pack("<Q", 0x42)
    ld = elfcore.LivedumpNote.parse(desc)
    assert (ld.version, ld.reason, ld.failed_pfns) == (2, "v2", (0x42,))
    assert (ld.reserve_pages, ld.reserve_used_max, ld.table_pages, ld.tables_used) == (4096, 1234, 300, 21)
    assert ld.fault_max_ns == 98_765 and ld.fault_ns_log2[10] == 3
    # A version 1 note has none of these.
    v1 = elfcore.LivedumpNote.parse(livedump_desc("v1", [7]))
    assert v1.reserve_pages is None and v1.failed_pfns == (7,)


def v3_desc(pfns: list[int], *, exclude: int = 0x38, excluded: int = 11_000) -> bytes:
    head = bytearray(livedump_desc("v3", []))
    struct.pack_into("<I", head, 0, 3)
    struct.pack_into("<QQ", head, 64, len(pfns), len(pfns))  # failed_pages, nr_listed
    costs = struct.pack(f"<5Q{elfcore.FAULT_HIST_BUCKETS}Q", 1, 1, 1, 1, 1, *([0] * elfcore.FAULT_HIST_BUCKETS))
    classes = struct.pack("<IIQ16Q", exclude, 7, excluded, 700, 20, 10, 6000, 5000, 300, 0, *([0] * 9))
    return bytes(head) + costs + classes + struct.pack(f"<{len(pfns)}Q", *pfns)


def test_livedump_note_version_3_classes():
    ld = elfcore.LivedumpNote.parse(v3_desc([0x99]))
    assert ld.version == 3 and ld.failed_pfns == (0x99,)
    assert ld.excluded_classes == ("user", "free", "own")
    assert ld.class_pages == {"kernel": 700, "cache": 20, "cache-private": 10, "user": 6000, "free": 5000,
                              "own": 300, "unknown": 0}
    assert ld.excluded_pages == 11_000
    assert elfcore.LivedumpNote.parse(v3_desc([], exclude=0)).excluded_classes == ()
    # Version 2 has no classes.
    head = bytearray(livedump_desc("v2", []))
    struct.pack_into("<I", head, 0, 2)
    v2 = elfcore.LivedumpNote.parse(bytes(head) + struct.pack("<37Q", *([0] * 37)))
    assert v2.class_pages is None and v2.excluded_classes is None


def test_livedump_note_version_3_names_classes_it_does_not_know():
    desc = bytearray(v3_desc([]))
    at = 208 + 296
    struct.pack_into("<I", desc, at + 4, 8)  # nr_classes: one more than this reader knows
    struct.pack_into("<Q", desc, at + 16 + 7 * 8, 42)
    assert elfcore.LivedumpNote.parse(bytes(desc)).class_pages["class 7"] == 42
    struct.pack_into("<I", desc, at + 4, 17)
    with pytest.raises(elfcore.NotAnElfDump, match="17 page classes"):
        elfcore.LivedumpNote.parse(bytes(desc))


def test_livedump_note_version_3_cut_short_is_an_error():
    with pytest.raises(elfcore.NotAnElfDump, match="version 3"):
        elfcore.LivedumpNote.parse(v3_desc([])[:-16])


def v4_desc(pfns: list[int], *, alias_entries: int) -> bytes:
    """A version 4 note: version 3's struct, then alias_entries, then the pfns."""
    desc = bytearray(v3_desc([]))
    struct.pack_into("<I", desc, 0, 4)
    struct.pack_into("<QQ", desc, 64, len(pfns), len(pfns))
    return bytes(desc) + struct.pack("<Q", alias_entries) + struct.pack(f"<{len(pfns)}Q", *pfns)


def test_livedump_note_version_4_says_whether_aliases_were_protected():
    ld = elfcore.LivedumpNote.parse(v4_desc([0x77, 0x78], alias_entries=98))
    assert ld.version == 4 and ld.alias_entries == 98 and ld.aliases_protected is True
    assert ld.failed_pfns == (0x77, 0x78) and ld.class_pages["user"] == 6000
    off = elfcore.LivedumpNote.parse(v4_desc([], alias_entries=0))
    assert off.alias_entries == 0 and off.aliases_protected is False
    # Before version 4 the note does not say.
    v3 = elfcore.LivedumpNote.parse(v3_desc([0x99]))
    assert v3.alias_entries is None and v3.aliases_protected is None
    with pytest.raises(elfcore.NotAnElfDump, match="version 4"):
        elfcore.LivedumpNote.parse(v4_desc([], alias_entries=1)[:-4])


def v5_desc(pfns: list[int], *, flags: int, user_entries: int) -> bytes:
    """A version 5 note: version 4's struct, then flags, a reserved u32 and user_entries, then the pfns."""
    desc = bytearray(v4_desc([], alias_entries=98))
    struct.pack_into("<I", desc, 0, 5)
    struct.pack_into("<QQ", desc, 64, len(pfns), len(pfns))
    return bytes(desc) + struct.pack("<IIQ", flags, 0, user_entries) + struct.pack(f"<{len(pfns)}Q", *pfns)


def test_livedump_note_version_5_says_whether_user_mappings_were_protected():
    ld = elfcore.LivedumpNote.parse(v5_desc([0x55], flags=elfcore.NOTE_USER_PROTECTED, user_entries=12))
    assert ld.version == 5 and ld.user_protected is True and ld.user_entries == 12
    assert ld.failed_pfns == (0x55,) and ld.alias_entries == 98
    off = elfcore.LivedumpNote.parse(v5_desc([], flags=0, user_entries=0))
    assert off.user_protected is False and off.user_entries == 0
    # Before version 5 the note does not say.
    v4 = elfcore.LivedumpNote.parse(v4_desc([], alias_entries=1))
    assert v4.flags is None and v4.user_protected is None
    with pytest.raises(elfcore.NotAnElfDump, match="version 5"):
        elfcore.LivedumpNote.parse(v5_desc([], flags=1, user_entries=1)[:-4])


def test_livedump_note_version_2_cut_short_is_an_error():
    head = bytearray(livedump_desc("v2", []))
    struct.pack_into("<I", head, 0, 2)
    with pytest.raises(elfcore.NotAnElfDump, match="version 2"):
        elfcore.LivedumpNote.parse(bytes(head) + b"\0" * 100)


def test_not_a_livedump_has_no_note(tmp_path):
    path = tmp_path / "qemu.core"
    path.write_bytes(make_core(note("CORE", elfcore.NT_PRSTATUS, prstatus(1, 0, 0)), []))
    assert elfcore.read(path).livedump() is None


@pytest.mark.parametrize("data,message", [
    (b"", "does not start with an ELF header"),
    (b"\x00" * 4096, "does not start with an ELF header"),
    (None, "not a core dump"),
])
def test_rejects_what_is_not_an_elf_core(tmp_path, data, message):
    if data is None:
        data = make_core(b"", [], e_type=2)
    path = tmp_path / "x"
    path.write_bytes(data)
    with pytest.raises(elfcore.NotAnElfDump, match=message):
        elfcore.read(path)


def test_wrong_prstatus_size_is_an_error(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(make_core(note("CORE", elfcore.NT_PRSTATUS, b"\0" * 100), []))
    with pytest.raises(elfcore.NotAnElfDump, match="336"):
        elfcore.read(path).prstatus()


def stream_core(tmp_path, trailer: bytes, footer_len: int | None = None, magic: int = elfcore.TRAILER_MAGIC):
    """A streamed dump: the header's LIVEDUMP note as of the sweep's start, the final one after the data."""
    headers = note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("at start", []))
    footer = struct.pack("<QQ", len(trailer) if footer_len is None else footer_len, magic)
    path = tmp_path / "stream.vmcore"
    path.write_bytes(make_core(headers, [(0x1000, 0xFFFF888000001000, b"A" * 4096)], trailing=trailer + footer))
    return path


def test_a_streams_final_note_is_its_trailer(tmp_path):
    final = note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("at start", [0x42, 0x43]))
    core = elfcore.read(stream_core(tmp_path, final))
    assert core.livedump().failed_pfns == (0x42, 0x43)
    assert core.livedump_in_headers().failed_pfns == ()
    assert len(core.trailer) == 1


def test_bytes_after_the_segments_without_the_magic_are_no_trailer(tmp_path):
    final = note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("at start", [0x42]))
    core = elfcore.read(stream_core(tmp_path, final, magic=0x1234))
    assert core.trailer == ()
    assert core.livedump().failed_pfns == ()


def test_a_trailer_longer_than_what_follows_the_segments_is_an_error(tmp_path):
    final = note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("at start", [0x42]))
    with pytest.raises(elfcore.NotAnElfDump, match="trailer claims"):
        elfcore.read(stream_core(tmp_path, final, footer_len=1 << 20))


def trigger_desc(event: int, *, regs: list[int] | None) -> bytes:
    where = b"WARN at lib/test_livedump.c:531 tld_warn_set+0x12/0x20"
    return struct.pack("<IiiIqQ128s27Q", event, 1, 321, regs is not None, 1_700_000_000_000_000_000, 4_500_000,
                       where, *(regs or [0] * 27))


def test_a_trigger_note_says_what_fired_and_the_registers_then(tmp_path):
    regs = list(range(27))
    notes = (note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("armed", []))
             + note("LIVEDUMP", elfcore.NT_LIVEDUMP_TRIGGER, trigger_desc(1, regs=regs)))
    path = tmp_path / "armed.vmcore"
    path.write_bytes(make_core(notes, [(0x1000, 0xFFFF888000001000, b"A" * 4096)]))
    fired = elfcore.read(path).trigger()
    assert (fired.event, fired.cpu, fired.pid, fired.delay_ns) == ("warn", 1, 321, 4_500_000)
    assert fired.where.startswith("WARN at lib/test_livedump.c:531 tld_warn_set")
    assert fired.regs["rip"] == elfcore.X86_64_REGS.index("rip")


def test_a_trigger_without_registers_and_a_dump_without_trigger(tmp_path):
    notes = note("LIVEDUMP", elfcore.NT_LIVEDUMP_TRIGGER, trigger_desc(2, regs=None))
    path = tmp_path / "sysrq.vmcore"
    path.write_bytes(make_core(notes, [(0x1000, 0xFFFF888000001000, b"A" * 4096)]))
    fired = elfcore.read(path).trigger()
    assert (fired.event, fired.regs) == ("sysrq", None)
    plain = tmp_path / "plain.vmcore"
    plain.write_bytes(make_core(note("LIVEDUMP", elfcore.NT_LIVEDUMP, livedump_desc("by hand", [])),
                                [(0x1000, 0xFFFF888000001000, b"A" * 4096)]))
    assert elfcore.read(plain).trigger() is None


def test_a_short_trigger_note_is_an_error(tmp_path):
    path = tmp_path / "short.vmcore"
    path.write_bytes(make_core(note("LIVEDUMP", elfcore.NT_LIVEDUMP_TRIGGER, b"\0" * 40),
                               [(0x1000, 0xFFFF888000001000, b"A" * 4096)]))
    with pytest.raises(elfcore.NotAnElfDump, match="trigger note is 40 bytes"):
        elfcore.read(path).trigger()


# -- arm64 (EM_AARCH64) ----------------------------------------------------------

def arm64_prstatus(pid: int, pc: int, sp: int) -> bytes:
    """arm64's struct elf_prstatus: 392 bytes, pr_reg = x0..x30, sp, pc, pstate at 112."""
    desc = bytearray(392)
    struct.pack_into("<i", desc, 32, pid)
    regs = [0x1000 + i for i in range(31)] + [sp, pc, 0x3c5]
    struct.pack_into("<34Q", desc, 112, *regs)
    return bytes(desc)


def core_with_machine(tmp_path, machine: int, *prstatus_descs: bytes):
    notes = b"".join(note("CORE", elfcore.NT_PRSTATUS, d) for d in prstatus_descs)
    data = bytearray(make_core(notes, [(0x40000000, 0xFFFF000000000000, b"A" * 4096)]))
    struct.pack_into("<H", data, 18, machine)
    path = tmp_path / "core"
    path.write_bytes(bytes(data))
    return elfcore.read(path)


def test_arm64_prstatus_registers_pc_and_sp(tmp_path):
    core = core_with_machine(tmp_path, elfcore.EM_AARCH64, arm64_prstatus(7, 0xFFFF800008010000, 0xFFFF80000A003F00),
                             arm64_prstatus(0, 0xFFFF800008020000, 0xFFFF80000A007F00))
    assert core.machine == elfcore.EM_AARCH64
    regs = core.prstatus()
    assert [r.pid for r in regs] == [7, 0]
    assert (regs[0].pc, regs[0].sp) == (0xFFFF800008010000, 0xFFFF80000A003F00)
    assert regs[1].regs["pc"] == 0xFFFF800008020000
    assert regs[0].regs["x0"] == 0x1000 and regs[0].regs["x30"] == 0x1000 + 30
    assert regs[0].regs["pstate"] == 0x3c5
    assert tuple(regs[0].regs) == elfcore.PRSTATUS_LAYOUTS[elfcore.EM_AARCH64].regs == \
        tuple([f"x{i}" for i in range(31)] + ["sp", "pc", "pstate"])


def test_x86_prstatus_pc_and_sp_are_rip_and_rsp(core_file):
    regs = elfcore.read(core_file[0]).prstatus()
    assert (regs[1].pc, regs[0].sp) == (0xFFFFFFFF81000010, 0xFFFFC90000003F00)


def test_prstatus_size_must_match_the_machine(tmp_path):
    # An x86-64 sized note in an arm64 dump (and the reverse) is refused, naming the expected size.
    with pytest.raises(elfcore.NotAnElfDump, match="336 bytes, expected 392 \\(arm64\\)"):
        core_with_machine(tmp_path, elfcore.EM_AARCH64, prstatus(0, 1, 2)).prstatus()
    with pytest.raises(elfcore.NotAnElfDump, match="392 bytes, expected 336 \\(x86_64\\)"):
        core_with_machine(tmp_path, elfcore.EM_X86_64, arm64_prstatus(0, 1, 2)).prstatus()


def test_prstatus_of_an_unknown_machine_is_an_error_not_a_guess(tmp_path):
    with pytest.raises(elfcore.NotAnElfDump, match="no NT_PRSTATUS layout for ELF machine 243"):
        core_with_machine(tmp_path, 243, arm64_prstatus(0, 1, 2)).prstatus()
    assert core_with_machine(tmp_path, 243).prstatus() == []  # no notes: nothing to lay out
