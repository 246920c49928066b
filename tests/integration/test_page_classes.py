"""Page classes: a dump leaves user and free pages out by default, counts RAM by class, and still reads.

One 512 MiB guest holds 256 MiB of anonymous memory (``ldload anon``) and runs the e2e load. It is dumped
twice onto two disks: first with ``--exclude none`` (every page of RAM in the dump), then with the default
filter (user, free and livedump's own pages left out). The default dump must write at least 256 MiB less;
its note's class counts must agree with the snapshot's own vmstat counters (/proc/meminfo at the stop, read
from the dump with drgn) within 5 %; drgn, crash (``kmem -i``, ``ps``, ``bt -a``, with every check
``make test-qemu`` makes) and ``makedumpfile -c -d 31`` must still read it. The dump of everything is the
control: the same counts, nothing left out, and the anonymous memory is in it.
"""

from __future__ import annotations

import re

import pytest

from harness import dump as dump_mod
from harness import dumpcheck, elfcore, pageclasses, validate

pytestmark = pytest.mark.qemu

ANON_MIB = 256
FULL_TARGET = "/dev/vdc"  # dump_disks(extra=("full",)): the second full-size target


@pytest.fixture(scope="module")
def dumps(pipeline, show):
    disks = dump_mod.dump_disks(pipeline.run.directory / "classes", dump_mod.memory_bytes(pipeline.options.memory),
                                extra=("full",))
    disks[0].path.parent.mkdir(parents=True, exist_ok=True)
    with pipeline.boot(disks) as console:
        held = console.run(f"ldload anon {ANON_MIB} > /tmp/anon.out & "
                           "for i in $(seq 600); do grep -q ready /tmp/anon.out && break; sleep 0.1; done; "
                           "cat /tmp/anon.out; grep AnonPages /proc/meminfo")
        if "anon ready" not in held.output:
            pytest.fail(f"the guest could not hold {ANON_MIB} MiB of anonymous memory: {held.output[-500:]}")
        dump_mod.start_load(console)
        everything = dump_mod.dump(console, FULL_TARGET, reason="everything", flags="--exclude none")
        default = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET, reason="default filter")
        dump_mod.stop_load(console)
    full_image = disks[[d.path.stem for d in disks].index("full")].path
    show(f"page classes: bytes written {everything.status.get('bytes_written')} (everything), "
         f"{default.status.get('bytes_written')} (default filter)")
    return {"everything": everything, "default": default, "full_image": full_image,
            "image": dump_mod.dump_image(disks), "held": held.output}


def test_the_tool_prints_the_filter_it_used(dumps):
    assert dumps["everything"].result.status == 0, dumps["everything"].result.output
    assert dumps["default"].result.status == 0, dumps["default"].result.output
    assert re.search(r"^livedump: exclude=none$", dumps["everything"].result.output, re.M)
    assert re.search(r"^livedump: exclude=user,free,own$", dumps["default"].result.output, re.M)


def test_the_default_filter_writes_at_least_the_anonymous_memory_less(dumps):
    everything = int(dumps["everything"].status["bytes_written"])
    default = int(dumps["default"].status["bytes_written"])
    assert everything - default >= ANON_MIB << 20, f"{everything} bytes with everything, {default} by default"


@pytest.fixture(scope="module")
def notes(dumps):
    return {name: elfcore.read(dumps[image]) for name, image in (("everything", "full_image"),
                                                                  ("default", "image"))}


def test_the_notes_say_what_was_left_out(notes):
    full, default = notes["everything"].livedump(), notes["default"].livedump()
    assert full.version >= 3 and default.version >= 3
    assert full.excluded_classes == () and full.excluded_pages == 0
    assert default.excluded_classes == pageclasses.DEFAULT_EXCLUDED
    # Most of the anonymous memory is user pages, and those are out.
    assert default.class_pages["user"] >= (ANON_MIB << 20) // pageclasses.PAGE_BYTES * 9 // 10
    assert default.excluded_pages >= default.class_pages["user"]
    for name, core in notes.items():
        assert pageclasses.excluded_problems(core.livedump(), core.loads) == [], name


@pytest.mark.parametrize("which", ["everything", "default"])
def test_class_counts_agree_with_the_snapshots_meminfo(pipeline, dumps, notes, which):
    image = dumps["full_image" if which == "everything" else "image"]
    meminfo = pageclasses.snapshot_meminfo(image, pipeline.build().vmlinux)
    note = notes[which].livedump()
    assert meminfo.anon >= (ANON_MIB << 20) // pageclasses.PAGE_BYTES * 9 // 10, meminfo  # the counter itself
    assert pageclasses.class_problems(note, meminfo) == [], (note.class_pages, meminfo)


def test_the_anonymous_memory_is_in_the_full_dump_only(notes):
    """Each page ldload writes is one repeated nonzero byte (0x5a ^ its index): such pages in a dump's
    PT_LOADs are its user memory, dumped."""
    def anon_pages_found(core: elfcore.Vmcore, limit: int) -> int:
        found = 0
        with open(core.path, "rb") as f:
            for s in core.loads:
                for off in range(0, s.filesz, pageclasses.PAGE_BYTES):
                    f.seek(s.offset + off)
                    page = f.read(pageclasses.PAGE_BYTES)
                    if page[0] and page == bytes([page[0]]) * pageclasses.PAGE_BYTES:
                        found += 1
                        if found >= limit:
                            return found
        return found

    wanted = (ANON_MIB << 20) // pageclasses.PAGE_BYTES // 2
    assert anon_pages_found(notes["everything"], wanted) >= wanted
    # Pages of one repeated byte are rare elsewhere: far fewer than the anonymous memory left out.
    assert anon_pages_found(notes["default"], wanted) < wanted // 8


@pytest.fixture(scope="module")
def verdict(pipeline, dumps) -> dumpcheck.DumpVerdict:
    kernel = pipeline.build()
    saw = dumpcheck.GuestSaw.of(dumps["default"], kernel.release, pipeline.options.smp)
    return dumpcheck.check_dump(dumps["image"], kernel.vmlinux, saw, crash_dir=pipeline.run.directory / "classes")


def test_drgn_and_crash_read_the_filtered_dump(verdict):
    assert [str(c) for c in verdict.checks if not c.ok] == []
    assert verdict.crash is not None and verdict.named("crash: `kmem -i`") and verdict.named("crash: `bt -a`")


def test_crash_extension_shows_the_classes(verdict):
    text = verdict.crash.outputs.get("livedump", "")
    assert re.search(r"left out:\s+user,free,own \(\d+ pages", text), text[-800:]


def test_makedumpfile_reads_the_filtered_dump(pipeline, dumps):
    out = validate.makedumpfile(dumps["image"], pipeline.run.directory / "classes" / "default.kdump")
    assert out.kdump_bytes > 0
    # drgn reads the kdump-compressed file makedumpfile made of it.
    view = validate.read_with_drgn(out.path, pipeline.build().vmlinux)
    assert view.init_comm == "swapper/0"
