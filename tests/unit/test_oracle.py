"""The oracle: QEMU's capture on the guest's hold byte, the page comparison, and why pages differ."""

from __future__ import annotations

import socket
import struct
import tempfile
from pathlib import Path

import pytest

from harness import oracle, oraclecheck
from harness.oraclecheck import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SOFTW2,
    PAGE_SIZE,
)
from tests.unit.test_elfcore import make_core, note
from tests.unit.test_qmp import FakeQemu

LEAF_2M = 0x8000000001E00000 | _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_PSE
PTE = 0x8000000000123000 | _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED


def page(*words: int) -> bytes:
    return struct.pack("<512Q", *words, *[0] * (512 - len(words)))


# -- the bit rules ---------------------------------------------------------------------------------------

def test_an_entry_the_stop_protected_is_read_only_and_tagged_in_the_capture():
    protected = (PTE & ~_PAGE_RW) | _PAGE_SOFTW2
    assert oraclecheck.protected_or_split(PTE, protected, pool=set())
    # The other way round (the snapshot read-only, the capture writable) is not the stop's doing.
    assert not oraclecheck.protected_or_split(protected, PTE, pool=set())
    # Only RW cleared, no tag: somebody else's read-only entry.
    assert not oraclecheck.protected_or_split(PTE, PTE & ~_PAGE_RW, pool=set())
    # Not present: not an entry.
    assert not oraclecheck.protected_or_split(_PAGE_RW, _PAGE_SOFTW2, pool=set())


def test_a_large_leaf_split_by_the_stop_points_into_the_pool():
    table = 0x3201 << 12 | _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
    assert oraclecheck.protected_or_split(LEAF_2M, table, pool={0x3201})
    assert not oraclecheck.protected_or_split(LEAF_2M, table, pool={0x3202})
    # A 4K entry replaced by another 4K entry is no split.
    assert not oraclecheck.protected_or_split(PTE, table, pool={0x3201})


def test_accessed_and_dirty_bits_set_after_the_instant():
    assert oraclecheck.hardware_set(PTE | _PAGE_DIRTY, PTE)
    assert oraclecheck.hardware_set(PTE, PTE & ~_PAGE_ACCESSED)
    assert not oraclecheck.hardware_set(PTE & ~_PAGE_ACCESSED, PTE)  # cleared, not set
    assert not oraclecheck.hardware_set(PTE | _PAGE_DIRTY | 0x8000, PTE)  # and the address changed
    assert not oraclecheck.hardware_set(0x60, 0x00)  # not present


# -- classify ---------------------------------------------------------------------------------------------

class FakePage:
    def __init__(self, mapcount: int):
        self._mapcount = type("A", (), {"counter": mapcount - 1})()


class FakeSnapshot:
    """What classify() asks of oraclecheck.Snapshot, as plain data."""

    page_offset = 0xFFFF888000000000

    def __init__(self, **kw):
        self.free, self.vmalloc, self.pool, self.stop_stacks = set(), {}, set(), set()
        self.task_stacks: set[int] = set()
        self.aliases_protected = False
        self.user_protected = False
        self.user_pgds: set[int] = set()
        self.percpu: list[tuple[int, int, int]] = []
        self.image: dict[int, int] = {}   # pfn -> kernel image address
        self.symbols: dict[int, str] = {}
        self.mapcount: dict[int, int] = {}
        self.__dict__.update(kw)

    def symbol_at(self, addr: int) -> str:
        return self.symbols.get(addr, f"{addr:#x}")

    def image_address(self, pfn: int) -> int | None:
        return self.image.get(pfn)

    def page(self, pfn: int):
        return FakePage(self.mapcount.get(pfn, 0))

    def owner(self, pfn: int) -> str:
        return f"owner of {pfn:#x}"


ZERO = bytes(PAGE_SIZE)
DATA = page(1, 2, 3)
LATER = page(1, 2, 4)


@pytest.mark.parametrize("snap, pfn, ours, truth, expected", [
    (FakeSnapshot(), 7, DATA, LATER, oraclecheck.FAILED),
    (FakeSnapshot(free={5}), 5, ZERO, DATA, oraclecheck.FREE),
    (FakeSnapshot(vmalloc={5: "ld_ioctl_init"}), 5, DATA, LATER, oraclecheck.OWN),
    (FakeSnapshot(pool={5}), 5, page(LEAF_2M), ZERO, oraclecheck.OWN),
    (FakeSnapshot(), 5, page(PTE, PTE), page(PTE & ~_PAGE_RW | _PAGE_SOFTW2, PTE), oraclecheck.PROTECTED_ENTRIES),
    (FakeSnapshot(), 5, page(PTE | _PAGE_DIRTY), page(PTE), oraclecheck.HW_BITS),
    (FakeSnapshot(stop_stacks={5}), 5, DATA, LATER, oraclecheck.STOP_STACKS),
    (FakeSnapshot(percpu=[(4, 6, 0)]), 5, DATA, LATER, oraclecheck.STOP_PERCPU),
    (FakeSnapshot(image={5: 0xFFFFFFFF81000000}, symbols={0xFFFFFFFF81000010: "hpet"}), 5, DATA, LATER,
     oraclecheck.STOP_KERNEL),
    (FakeSnapshot(vmalloc={5: "tld_start"}), 5, DATA, LATER, oraclecheck.VMALLOC),
    (FakeSnapshot(mapcount={5: 1}), 5, DATA, LATER, oraclecheck.USER),
])
def test_each_class(snap, pfn, ours, truth, expected):
    assert oraclecheck.classify(snap, pfn, ours, truth, failed={7}).cls == expected


def test_what_no_class_explains_is_unexplained_with_its_owner():
    d = oraclecheck.classify(FakeSnapshot(), 5, DATA, LATER, failed=set())
    assert d.cls == oraclecheck.UNEXPLAINED and d.detail == "owner of 0x5"
    # A free page the dump did not write as zeros is not explained by being free...
    assert oraclecheck.classify(FakeSnapshot(free={5}), 5, DATA, LATER, failed=set()).cls == oraclecheck.UNEXPLAINED
    # ...nor a kernel variable the stop is not known to write.
    other = FakeSnapshot(image={5: 0xFFFFFFFF81000000}, symbols={0xFFFFFFFF81000010: "jiffies"})
    d = oraclecheck.classify(other, 5, DATA, LATER, failed=set())
    assert d.cls == oraclecheck.UNEXPLAINED and "jiffies" in d.detail


def test_with_vmalloc_protected_only_a_task_stack_is_a_vmalloc_difference():
    """A dump that protected the vmalloc and module areas explains no vmalloc page by its alias but the stacks,
    which stay writable and are copied only from the saved stack pointer up."""
    data = FakeSnapshot(vmalloc={5: "tld_start"}, aliases_protected=True)
    d = oraclecheck.classify(data, 5, DATA, LATER, failed=set())
    assert d.cls == oraclecheck.UNEXPLAINED and d.detail == "owner of 0x5"
    stack = FakeSnapshot(vmalloc={5: "kernel_clone"}, task_stacks={5}, aliases_protected=True)
    d = oraclecheck.classify(stack, 5, DATA, LATER, failed=set())
    assert d.cls == oraclecheck.VMALLOC and d.detail == "task stack"
    # livedump's own buffers are explained first, protected or not.
    own = FakeSnapshot(vmalloc={5: "ld_ioctl_init"}, aliases_protected=True)
    assert oraclecheck.classify(own, 5, DATA, LATER, failed=set()).cls == oraclecheck.OWN


def test_per_cpu_differences_name_the_variables():
    snap = FakeSnapshot(percpu=[(0x100, 0x120, 0xFFFF888000100000 - 0x1000)],
                        symbols={0x1000 + 16: "ld_copying"})
    d = oraclecheck.classify(snap, 0x100, DATA, LATER, failed=set())
    assert d.cls == oraclecheck.STOP_PERCPU and d.detail == "ld_copying"


def test_the_report_counts_and_lists_the_unexplained():
    report = oraclecheck.Report(pages=10, identical=7, not_in_capture=0)
    for d in (oraclecheck.Differing(1, oraclecheck.FREE), oraclecheck.Differing(2, oraclecheck.UNEXPLAINED, "slab"),
              oraclecheck.Differing(3, oraclecheck.STOP_PERCPU, "context_tracking")):
        report.classes[d.cls] += 1
        report.pages_by_class.setdefault(d.cls, []).append(d)
    data = report.as_json()
    assert data["differing"][oraclecheck.UNEXPLAINED] == 1 and data["differing"][oraclecheck.FREE] == 1
    assert data["unexplained"] == [{"pfn": 2, "owner": "slab"}]
    assert "unexplained pfn 0x2: slab" in report.summary()
    assert report.summary().startswith("10 pages compared, 7 identical, 3 differing")


# -- compare ----------------------------------------------------------------------------------------------

def write_core(path: Path, loads: list[tuple[int, bytes]]) -> Path:
    path.write_bytes(make_core(note("VMCOREINFO", 0, b"OSRELEASE=x\n\0"), [(pa, 0, data) for pa, data in loads]))
    return path


def test_compare_by_physical_address_across_segment_layouts(tmp_path):
    # The livedump: two segments; the capture: one covering the first only partly, laid out differently.
    ours = write_core(tmp_path / "ld.elf", [(0x1000, DATA + DATA + LATER), (0x10000, DATA)])
    truth = write_core(tmp_path / "q.elf", [(0x0, ZERO + DATA + LATER + LATER)])
    cmp = oracle.compare(ours, truth)
    assert cmp.pages == 4
    assert cmp.identical == 2                      # pfns 1 and 3
    assert cmp.differing == [2]                    # DATA in the dump, LATER in the capture
    assert cmp.not_in_capture == 1                 # pfn 0x10


# -- the hold ---------------------------------------------------------------------------------------------

def test_the_responder_captures_on_the_hold_byte_then_releases(tmp_path):
    with tempfile.TemporaryDirectory(prefix="hold-") as d:
        hold, qmp = Path(d) / "hold.sock", Path(d) / "qmp.sock"
        out = tmp_path / "capture.elf"
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        guest.bind(str(hold))
        guest.listen(1)

        def handler(message):
            if message["execute"] == "dump-guest-memory":
                assert message["arguments"]["paging"] is False
                out.write_bytes(b"\x7fELF")
            return [{"return": {}}]

        fake = FakeQemu(qmp, handler)
        responder = oracle.HoldResponder(hold, qmp, out, timeout=10)
        responder.connect()
        conn, _ = guest.accept()
        responder.start()
        conn.sendall(b"noise" + oracle.HOLD_BYTE)   # what the guest's COM2 sends at the end of the stop
        conn.settimeout(10)
        released = conn.recv(1)
        responder.join(10)
        fake.close()
        conn.close()
        guest.close()
    assert released == oracle.RELEASE_BYTE
    assert responder.capture.error is None and out.read_bytes() == b"\x7fELF"
    assert [m["execute"] for m in fake.received] == ["qmp_capabilities", "dump-guest-memory"]


def test_a_guest_that_never_holds_is_an_error_not_a_capture(tmp_path):
    with tempfile.TemporaryDirectory(prefix="hold-") as d:
        hold = Path(d) / "hold.sock"
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        guest.bind(str(hold))
        guest.listen(1)
        responder = oracle.HoldResponder(hold, Path(d) / "qmp.sock", tmp_path / "c.elf", timeout=0.5)
        responder.connect()
        conn, _ = guest.accept()
        responder.start()
        responder.join(10)
        conn.close()
        guest.close()
    assert responder.capture.error is not None and "timed out" in responder.capture.error
    assert not (tmp_path / "c.elf").exists()
    assert not responder.is_alive()


def test_a_user_table_entry_the_stop_protected_is_explained_only_in_a_pgd():
    entry = 0x8000000000345000 | _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | 0x4  # _PAGE_USER
    ours, truth = page(entry, entry), page(entry & ~_PAGE_RW, entry)
    assert oraclecheck.user_table_protected(entry, entry & ~_PAGE_RW)
    assert not oraclecheck.user_table_protected(entry & ~_PAGE_RW, entry)  # the other way round
    d = oraclecheck.classify(FakeSnapshot(user_pgds={5}), 5, ours, truth, failed=set())
    assert d.cls == oraclecheck.PROTECTED_ENTRIES and d.detail == "user page table"
    # The same bits in any other page are somebody else's read-only entry.
    assert oraclecheck.classify(FakeSnapshot(), 5, ours, truth, failed=set()).cls == oraclecheck.UNEXPLAINED


def test_with_user_mappings_protected_a_user_page_difference_is_unexplained():
    assert oraclecheck.classify(FakeSnapshot(mapcount={5: 1}), 5, DATA, LATER, failed=set()).cls == oraclecheck.USER
    d = oraclecheck.classify(FakeSnapshot(mapcount={5: 1}, user_protected=True), 5, DATA, LATER, failed=set())
    assert d.cls == oraclecheck.UNEXPLAINED


def test_the_oracle_reserve_is_a_sixteenth_of_ram_unless_asked(tmp_path, monkeypatch):
    """Four times livedump's default, so that a slow host does not fail pages; --reserve 0 is the default's."""
    from types import SimpleNamespace

    from harness.errors import HarnessError
    from tests.unit.test_arch import pipeline

    p = pipeline(tmp_path, memory="512M")
    assert oracle.reserve_pages(p, None) == (512 << 20) // 4096 // 16 == 8192
    assert oracle.reserve_pages(p, 0) == 0
    assert oracle.reserve_pages(p, 3000) == 3000
    monkeypatch.setattr(p, "build", lambda: pytest.fail("built before refusing"))
    with pytest.raises(HarnessError, match="--reserve must be 0"):
        oracle.command(p, SimpleNamespace(runs=1, reserve=-1))
