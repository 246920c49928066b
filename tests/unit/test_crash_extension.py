"""The crash extension's note parser (crash-patches/livedump_note.c) on synthetic ELF cores.

crash itself cannot open a synthetic core without a matching kernel, so the
parser the extension uses is also built as ``test-livedump-note``, which
prints what the ``livedump`` command prints; these tests run it. The
extension itself is compiled too (with -Werror) when crash's headers are
installed.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

CRASH_PATCHES = Path(__file__).resolve().parents[2] / "crash-patches"
PT_LOAD, PT_NOTE, NT_PRSTATUS, NT_LIVEDUMP = 1, 4, 1, 0x4C440001
PRSTATUS_SIZE, PID_OFF, REGS_OFF, RIP, RSP = 336, 32, 112, 16, 19
START_NS = 1_795_645_801_123_456_789  # 2026-11-25 22:30:01.123456789 UTC
PAGE = 4096


# -- a tiny ELF core generator ---------------------------------------------------

def note(name: str, ntype: int, desc: bytes) -> bytes:
    raw = name.encode() + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(raw), len(desc), ntype) + pad(raw) + pad(desc)


def prstatus(pid: int, rip: int, rsp: int) -> bytes:
    desc = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<i", desc, PID_OFF, pid)
    struct.pack_into("<Q", desc, REGS_OFF + RIP * 8, rip)
    struct.pack_into("<Q", desc, REGS_OFF + RSP * 8, rsp)
    return bytes(desc)


def livedump_desc(reason: str = "because", pfns: tuple[int, ...] = (), *, version: int = 1, nr_cpus: int = 2,
                  pages_total: int = 3, failed: int | None = None, nr_listed: int | None = None,
                  alias_entries: int = 98, user_flags: int = 1, user_entries: int = 12) -> bytes:
    failed = len(pfns) if failed is None else failed
    nr_listed = len(pfns) if nr_listed is None else nr_listed
    head = struct.pack("<IIqQQQQQQQQ128s", version, nr_cpus, START_NS, 1_234_567, pages_total, 17, 40, 9000, 70,
                       failed, nr_listed, reason.encode())
    assert len(head) == 208
    if version >= 2:
        # What the dump cost: reserve, used at most, page table pages, used, slowest fault, log2 histogram.
        head += struct.pack("<5Q32Q", 4096, 1234, 300, 21, 98_765, *([0] * 8 + [5, 7] + [0] * 22))
        assert len(head) == 208 + 296
    if version >= 3:
        # Page classes: user,free,own (bits 3, 4, 5) left out, 11300 pages in no PT_LOAD; RAM by class is
        # what the segments hold (kernel, cache) plus those.
        head += struct.pack("<IIQ16Q", 0x38, 7, 11300, pages_total - 30, 20, 10, 6000, 5000, 300, 0, *([0] * 9))
        assert len(head) == 208 + 296 + 144
    if version >= 4:
        # Of the entries protected, those in the vmalloc and module areas.
        head += struct.pack("<Q", alias_entries)
    if version >= 5:
        # Flags (bit 0: user mappings protected), a reserved u32, user page table entries protected.
        head += struct.pack("<IIQ", user_flags, 0, user_entries)
    return head + struct.pack(f"<{len(pfns)}Q", *pfns)


def livedump_notes(desc: bytes, cpus: int = 2) -> bytes:
    out = note("VMCOREINFO", 0, b"OSRELEASE=6.1.192-livedump\nKERNELOFFSET=1a000000\n\0")
    for i in range(cpus):
        out += note("CORE", NT_PRSTATUS, prstatus(100 + i, 0xFFFFFFFF81000000 + i, 0xFFFFC90000003F00 + i))
    return out + note("LIVEDUMP", NT_LIVEDUMP, desc)


def make_core(notes: bytes, loads: list[tuple[int, bytes]], *, e_type: int = 4, trailing: bytes = b"",
              truncate: int = 0) -> bytes:
    """ELF64 core: PT_NOTE first, then one PT_LOAD per (paddr, data), data page-aligned after the notes."""
    phnum = 1 + len(loads)
    note_off = 64 + 56 * phnum
    data_off = (note_off + len(notes) + PAGE - 1) // PAGE * PAGE
    phdrs = struct.pack("<IIQQQQQQ", PT_NOTE, 0, note_off, 0, 0, len(notes), len(notes), 0)
    body, off = b"", data_off
    for paddr, data in loads:
        phdrs += struct.pack("<IIQQQQQQ", PT_LOAD, 7, off, 0xFFFF888000000000 + paddr, paddr, len(data), len(data), 0)
        body += data
        off += len(data)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr += struct.pack("<HHIQQQIHHHHHH", e_type, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    head = ehdr + phdrs + notes
    data = head + b"\0" * (data_off - len(head)) + body
    if truncate:
        data = data[:-truncate]
    return data + trailing


LOADS = [(0x1000, b"A" * PAGE), (0x100000, b"B" * 2 * PAGE)]
# 33 pages in two segments with a gap: what a dump that left pages out holds.
LOADS_33 = [(0x1000, b"A" * PAGE), (0x200000, b"C" * 32 * PAGE)]


# -- building and running -----------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("make and a C compiler are needed")
    out = tmp_path_factory.mktemp("crash-ext")
    targets = [f"O={out}", "CFLAGS=-Wall -Wextra -Wno-unused-parameter -Werror -g -O2", "prog"]
    r = subprocess.run(["make", "-C", str(CRASH_PATCHES), *targets], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def run(built: Path, path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(built / "test-livedump-note"), *args, str(path)], capture_output=True, text=True)


def run_note(built: Path, tmp_path: Path, desc: bytes, loads=LOADS) -> subprocess.CompletedProcess:
    """The tool on a dump of ``loads`` whose LIVEDUMP note holds ``desc``."""
    return run(built, write(tmp_path, make_core(livedump_notes(desc), loads)))


def write(tmp_path: Path, data: bytes, name: str = "dump.img") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_extension_compiles_with_crash_flags(tmp_path):
    if not Path("/usr/include/crash/defs.h").is_file():
        pytest.skip("crash headers not installed (Debian: apt install crash)")
    r = subprocess.run(["make", "-C", str(CRASH_PATCHES), f"O={tmp_path}", "CFLAGS=-Wall -Werror -g -O2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-fPIC -shared -rdynamic -DX86_64 -DGDB_10_2 -I/usr/include/crash" in r.stdout
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "livedump.so")], capture_output=True,
                             text=True).stdout
    assert "livedump_init" in symbols


# -- the note ---------------------------------------------------------------------------

def test_prints_the_note_and_cpus(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc("before upgrade")), LOADS))
    r = run(built, path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "LIVEDUMP note version 1\n" in out
    assert "  reason:            before upgrade\n" in out
    assert "  start time:        2026-11-25 22:30:01.123456789 UTC (1795645801123456789 ns)\n" in out
    assert "  pause:             1234567 ns (1.235 ms" in out
    assert "  pages total:       3 (0.0 MiB in 2 PT_LOAD segments)\n" in out
    assert "  COW faults:        17 " in out
    assert "  stop copied:       40 " in out
    assert "  zero pages:        9000 " in out
    assert "  protected entries: 70 " in out
    assert "  failed pages:      0\n" in out
    assert "  CPUs captured:     2 NT_PRSTATUS notes\n" in out
    assert "      0      100  ffffffff81000000  ffffc90000003f00\n" in out
    assert "      1      101  ffffffff81000001  ffffc90000003f01\n" in out
    assert "MISMATCH" not in out


def test_version_3_shows_the_classes_and_finds_the_pfns_after_them(built, tmp_path):
    desc = livedump_desc("v3", pfns=(0x200, 0x201, 0x202), version=3, pages_total=33)
    r = run_note(built, tmp_path, desc, LOADS_33)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "LIVEDUMP note version 3\n" in out
    assert "unknown version" not in out
    assert "  left out:          user,free,own (11300 pages in no PT_LOAD segment)\n" in out
    assert ("  RAM by class:      kernel 3 cache 20 cache-private 10 user 6000 free 5000 own 300 unknown 0"
            in out)
    assert re.search(r"^\s+0x200-0x202\b", out, re.M), out


def test_version_4_says_whether_vmalloc_and_module_mappings_were_protected(built, tmp_path):
    desc = livedump_desc("v4", pfns=(0x200, 0x201), version=4, pages_total=33)
    r = run_note(built, tmp_path, desc, LOADS_33)
    assert r.returncode == 0, r.stderr
    assert "LIVEDUMP note version 4\n" in r.stdout and "unknown version" not in r.stdout
    assert "  alias entries:     98 (of those, vmalloc and module mappings)\n" in r.stdout
    # The pfns follow alias_entries.
    assert re.search(r"^\s+0x200-0x201\b", r.stdout, re.M), r.stdout
    off = livedump_desc("v4 off", version=4, pages_total=33, alias_entries=0)
    r = run_note(built, tmp_path, off, LOADS_33)
    assert r.returncode == 0, r.stderr
    assert "  alias entries:     0 (vmalloc and module mappings NOT protected" in r.stdout
    # A version 3 note says nothing about them.
    v3 = livedump_desc("v3", version=3, pages_total=33)
    assert "alias entries" not in run_note(built, tmp_path, v3, LOADS_33).stdout


def test_version_5_says_whether_user_mappings_were_protected(built, tmp_path):
    desc = livedump_desc("v5", pfns=(0x300, 0x301), version=5, pages_total=33)
    r = run_note(built, tmp_path, desc, LOADS_33)
    assert r.returncode == 0, r.stderr
    assert "LIVEDUMP note version 5\n" in r.stdout and "unknown version" not in r.stdout
    assert "  user entries:      12 (user page table entries write-protected)\n" in r.stdout
    assert "  alias entries:     98 " in r.stdout
    # The pfns follow the version 5 fields.
    assert re.search(r"^\s+0x300-0x301\b", r.stdout, re.M), r.stdout
    off = livedump_desc("v5 off", version=5, pages_total=33, user_flags=0, user_entries=0)
    r = run_note(built, tmp_path, off, LOADS_33)
    assert r.returncode == 0, r.stderr
    assert "  user entries:      user mappings NOT protected" in r.stdout
    # A version 4 note says nothing about them.
    v4 = livedump_desc("v4", version=4, pages_total=33)
    assert "user entries" not in run_note(built, tmp_path, v4, LOADS_33).stdout


def test_version_2_shows_the_costs_and_finds_the_pfns_after_them(built, tmp_path):
    desc = livedump_desc("v2", pfns=(0x100, 0x101), version=2)
    r = run_note(built, tmp_path, desc)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "LIVEDUMP note version 2\n" in out
    assert "unknown version" not in out
    assert "  reserve:           4096 pages, at most 1234 in use at once\n" in out
    assert "  page table pages:  300 to split large mappings, 21 used\n" in out
    assert "  slowest fault:     98765 ns\n" in out
    # The pfns follow the version 2 fields, not the version 1 struct.
    assert re.search(r"^\s+0x100-0x101\b", out, re.M), out


def test_version_1_has_no_costs(built, tmp_path):
    out = run_note(built, tmp_path, livedump_desc()).stdout
    assert "LIVEDUMP note version 1\n" in out
    assert "reserve:" not in out and "slowest fault:" not in out


def test_failed_pfns_are_sorted_and_coalesced(built, tmp_path):
    pfns = (0x105, 0x1, 0x101, 0x100, 0x102, 0x2, 0x3, 0x200, 0x102)
    path = write(tmp_path, make_core(livedump_notes(livedump_desc(pfns=pfns, failed=12)), LOADS))
    out = run(built, path).stdout
    assert "  failed pages:      12 (INCONSISTENT" in out
    assert "    0x1-0x3 0x100-0x102 0x105 0x200\n" in out
    assert "(9 listed in 4 ranges; 3 more not listed)" in out


def test_many_ranges_wrap(built, tmp_path):
    pfns = tuple(range(0, 40, 2))  # 20 single pages
    out = run_note(built, tmp_path, livedump_desc(pfns=pfns)).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("    0x")]
    assert len(lines) == 4 and all(len(ln.split()) <= 6 for ln in lines)


def test_cpu_count_mismatch_is_shown(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc(nr_cpus=4), cpus=2), LOADS))
    assert "(MISMATCH: the LIVEDUMP note says 4)" in run(built, path).stdout


def test_reason_is_bounded_by_the_note(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc("x" * 128)), LOADS))
    out = run(built, path).stdout
    assert f"  reason:            {'x' * 127}\n" in out


def test_nr_listed_beyond_the_descriptor_is_clamped(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc(pfns=(7,), nr_listed=1000)), LOADS))
    r = run(built, path)
    assert r.returncode == 0
    assert "(1 listed in 1 range" in r.stdout


def test_short_livedump_note_is_an_error(built, tmp_path):
    path = write(tmp_path, make_core(note("LIVEDUMP", NT_LIVEDUMP, b"\0" * 100), LOADS))
    r = run(built, path)
    assert r.returncode == 2
    assert "LIVEDUMP note is 100 bytes, expected at least 208" in r.stderr


# -- not a livedump ------------------------------------------------------------------

@pytest.mark.parametrize("notes,kind", [
    (note("VMCOREINFO", 0, b"OSRELEASE=6.1\n") + note("CORE", NT_PRSTATUS, prstatus(1, 0, 0)),
     "kernel vmcore (kdump or similar)"),
    (note("CORE", NT_PRSTATUS, prstatus(1, 0, 0)) + note("QEMU", 0, b"\0" * 64), "QEMU dump-guest-memory vmcore"),
    # right name, wrong type: not ours
    (note("LIVEDUMP", 0x4C440099, livedump_desc()), "ELF core without VMCOREINFO"),
])
def test_core_without_livedump_note_is_refused(built, tmp_path, notes, kind):
    path = write(tmp_path, make_core(notes, LOADS))
    for args in ((), ("-c",)):
        r = run(built, path, *args)
        assert r.returncode == 1
        assert r.stdout == ""
        assert f"is not a livedump: no LIVEDUMP note ({kind})" in r.stderr


@pytest.mark.parametrize("data,message", [
    (b"", "cannot read an ELF header: file too short"),
    (b"\0" * 8192, "does not start with an ELF header"),
    (make_core(b"", [], e_type=2), "not a core dump (ET_CORE)"),
    (make_core(b"", [])[:100], "cannot read 1 program headers"),
])
def test_not_an_elf_core(built, tmp_path, data, message):
    r = run(built, write(tmp_path, data))
    assert r.returncode == 2
    assert message in r.stderr


def test_truncated_note_segment(built, tmp_path):
    data = bytearray(make_core(livedump_notes(livedump_desc()), LOADS))
    # Claim a descriptor longer than the PT_NOTE segment in the last note's header.
    last = data.rfind(b"LIVEDUMP\0") - 12
    struct.pack_into("<I", data, last + 4, 100_000)
    r = run(built, write(tmp_path, bytes(data)))
    assert r.returncode == 2
    assert "truncated ELF note" in r.stderr


# -- livedump -c -----------------------------------------------------------------------

def test_check_passes_on_a_complete_raw_disk_with_trailing_bytes(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc()), LOADS, trailing=b"\xff" * 50000))
    r = run(built, path, "-c")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PT_LOAD: all 2 segments present and readable" in r.stdout
    assert "inconsistent pages: none" in r.stdout
    assert r.stdout.rstrip().endswith("result: OK")


def test_check_finds_a_truncated_segment(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc()), LOADS, truncate=100))
    r = run(built, path, "-c")
    assert r.returncode == 1
    assert "PROBLEM: PT_LOAD #2 (paddr 0x100000-0x101fff) needs file bytes up to" in r.stdout
    assert "PT_LOAD #1" not in r.stdout
    assert "result: FAILED (1 problem)" in r.stdout
    assert "check failed" in r.stderr


def test_check_reports_inconsistent_pages_with_their_place(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc(pfns=(0x101, 0x100, 0x1, 0x5000))), LOADS))
    r = run(built, path, "-c")
    assert r.returncode == 1
    out = r.stdout
    assert "PROBLEM: 4 pages marked inconsistent" in out
    assert "    pfn 0x1: PT_LOAD #1, file offset 0x1000\n" in out
    assert "    pfn 0x100-0x101: PT_LOAD #2, file offset 0x2000\n" in out
    assert "    pfn 0x5000: not in any PT_LOAD segment\n" in out
    assert "result: FAILED (1 problem)" in out


def test_check_accounts_for_ram_by_class(built, tmp_path):
    good = write(tmp_path, make_core(livedump_notes(livedump_desc(version=3, pages_total=33)), LOADS_33))
    r = run(built, good, "-c")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  page classes: 11333 pages of RAM, 33 dumped, 11300 left out\n" in r.stdout
    # More left out than the classes left out hold, and RAM that is neither dumped nor left out.
    desc = bytearray(livedump_desc(version=3, pages_total=33))
    struct.pack_into("<Q", desc, 208 + 296 + 8, 20000)  # excluded_pages
    r = run(built, write(tmp_path, make_core(livedump_notes(bytes(desc)), LOADS_33)), "-c")
    assert r.returncode == 1
    assert "PROBLEM: RAM by class is 11333 pages, not the 33 dumped + 20000 left out" in r.stdout
    assert "PROBLEM: 20000 pages left out, the classes left out hold 11300" in r.stdout


def test_check_finds_counters_that_disagree_with_the_headers(built, tmp_path):
    path = write(tmp_path, make_core(livedump_notes(livedump_desc(pages_total=5, nr_cpus=3)), LOADS))
    out = run(built, path, "-c").stdout
    assert "PROBLEM: the note counts 5 pages, the PT_LOAD segments hold 3" in out
    assert "PROBLEM: the note says 3 CPUs, the dump has 2 NT_PRSTATUS notes" in out
    assert "result: FAILED (2 problems)" in out


TRAILER_MAGIC = 0x4C494152544C444C  # "LDLTRAIL", include/uapi/linux/livedump.h


def test_a_streams_trailer_gives_the_final_note(built, tmp_path):
    """A stream's headers hold its LIVEDUMP note as of the start of the sweep; the final one follows the
    segments, with its size and the magic as the file's last 16 bytes, and is the one shown."""
    start = livedump_desc("streamed", version=3, pages_total=33)
    final_note = note("LIVEDUMP", NT_LIVEDUMP, livedump_desc("streamed", pfns=(0x200, 0x201), version=3,
                                                             pages_total=33))
    trailer = final_note + struct.pack("<QQ", len(final_note), TRAILER_MAGIC)
    r = run(built, write(tmp_path, make_core(livedump_notes(start), LOADS_33, trailing=trailer)))
    assert r.returncode == 0, r.stderr
    assert "final, from the stream's trailer" in r.stdout
    assert "  failed pages:      2 " in r.stdout
    assert re.search(r"^\s+0x200-0x201\b", r.stdout, re.M), r.stdout


def test_without_the_magic_trailing_bytes_are_not_a_trailer(built, tmp_path):
    start = livedump_desc("streamed", version=3, pages_total=33)
    final_note = note("LIVEDUMP", NT_LIVEDUMP, livedump_desc("streamed", pfns=(0x200,), version=3, pages_total=33))
    trailer = final_note + struct.pack("<QQ", len(final_note), TRAILER_MAGIC ^ 1)
    r = run(built, write(tmp_path, make_core(livedump_notes(start), LOADS_33, trailing=trailer)))
    assert r.returncode == 0, r.stderr
    assert "trailer" not in r.stdout
    assert "  failed pages:      0\n" in r.stdout


def test_a_trailer_claiming_more_than_follows_the_segments_is_refused(built, tmp_path):
    start = livedump_desc("streamed", version=3, pages_total=33)
    trailer = b"\0" * 64 + struct.pack("<QQ", 1 << 20, TRAILER_MAGIC)
    r = run(built, write(tmp_path, make_core(livedump_notes(start), LOADS_33, trailing=trailer)))
    assert r.returncode != 0
    assert "the trailer claims" in r.stdout + r.stderr


def trigger_note(event: int, *, regs: bool = True) -> bytes:
    desc = struct.pack("<IiiIqQ128s", event, 1, 173, int(regs), START_NS, 579_000,
                       b"WARN at lib/test_livedump.c:571 tld_warn_set+0x2b/0x50")
    gregs = [0] * 27
    gregs[RIP], gregs[RSP] = 0xFFFFFFFF8CEABFDB, 0xFFFFC900001C3DF8
    return note("LIVEDUMP", 0x4C440002, desc + struct.pack("<27Q", *gregs))


def test_an_armed_dump_shows_its_trigger(built, tmp_path):
    notes = livedump_notes(livedump_desc("armed", version=3, pages_total=33)) + trigger_note(1)
    r = run(built, write(tmp_path, make_core(notes, LOADS_33)))
    assert r.returncode == 0, r.stderr
    assert ("  trigger:           warn on CPU 1, task 173, 0.579 ms before the stop: "
            "WARN at lib/test_livedump.c:571 tld_warn_set+0x2b/0x50\n") in r.stdout
    assert "  trigger registers: rip ffffffff8ceabfdb  rsp ffffc900001c3df8 (at the event)\n" in r.stdout


def test_a_dump_started_by_hand_shows_no_trigger_and_a_short_trigger_note_is_refused(built, tmp_path):
    r = run(built, write(tmp_path, make_core(livedump_notes(livedump_desc("by hand", version=3, pages_total=33)),
                                             LOADS_33)))
    assert r.returncode == 0 and "trigger" not in r.stdout, r.stdout
    short = livedump_notes(livedump_desc("armed", version=3, pages_total=33)) + note("LIVEDUMP", 0x4C440002,
                                                                                     b"\0" * 40)
    r = run(built, write(tmp_path, make_core(short, LOADS_33), name="short.img"))
    assert r.returncode != 0 and "trigger note is 40 bytes" in r.stdout + r.stderr
