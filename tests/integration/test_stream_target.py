"""A dump streamed to user space (kernel patch 0044): ``livedump dump - | gzip``, a slow reader, a reader gone.

Under the e2e load the guest pipes ``livedump dump -`` through ``gzip -1`` onto a raw disk; the host
unpacks the gzip stream from the disk image and reads the ELF file with drgn (marker A, not B), crash with
the extension and makedumpfile, as make test-qemu reads a dump written to a block device. The stream's headers carry the
LIVEDUMP note as of the start of the sweep; its final note is the trailer after the last segment.

A reader that waits holds the sweep back (back-pressure: the kernel has not read ahead more than its
buffers and the pipe hold); a reader that goes away ends the dump FAILED with EPIPE, the direct map as it
was, and the next dump works.
"""

from __future__ import annotations

import errno
import zlib
from pathlib import Path

import pytest
from guest_checks import read_back, state

from harness import bench, elfcore, validate
from harness import dump as dump_mod
from harness.console import CommandResult

pytestmark = pytest.mark.qemu

GZIP_TARGET = dump_mod.DUMP_TARGET


def gunzip_from_disk(image: Path, dest: Path) -> Path:
    """The gzip stream at the start of ``image`` unpacked to ``dest``; the rest of the disk is ignored."""
    inflater = zlib.decompressobj(wbits=31)
    with open(image, "rb") as src, open(dest, "wb") as out:
        while not inflater.eof:
            block = src.read(1 << 20)
            if not block:
                raise AssertionError(f"{image.name} ends before its gzip stream does")
            out.write(inflater.decompress(block))
    return dest


@pytest.fixture(scope="module")
def guest(pipeline):
    disks = dump_mod.dump_disks(pipeline.run.path("stream"), dump_mod.memory_bytes(pipeline.options.memory))
    with pipeline.boot(disks, tag="stream") as console:
        yield console, disks
    for disk in disks:
        disk.path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def streamed(pipeline, guest, show):
    console, disks = guest
    markers = dump_mod.Markers.new()
    dump_mod.start_load(console)
    dump_mod.kmsg(console, markers.before)
    piped = console.run(f"set -o pipefail; livedump dump - --reason 'stream' 2>/tmp/stream.err | "
                        f"gzip -1 > {GZIP_TARGET}",
                        timeout=900)
    dump_mod.kmsg(console, markers.after)
    dump_mod.stop_load(console)
    err = console.run("cat /tmp/stream.err", check=True).output
    taken = dump_mod.DumpRun(CommandResult(piped.command, piped.status, err), dump_mod.tool_counters(err), markers,
                             "stream")
    elf = gunzip_from_disk(dump_mod.dump_image(disks), pipeline.run.path("stream") / "stream.vmcore")
    show(f"stream: {elf.stat().st_size} bytes unpacked, pause {taken.status.get('pause_ns')} ns")
    return {"taken": taken, "elf": elf}


def test_the_stream_completes_and_reports_on_stderr(streamed):
    taken = streamed["taken"]
    assert taken.result.status == 0, taken.result.output[-1500:]
    assert taken.status["state"] == "done" and taken.status["error"] == "0", taken.status
    assert "written to standard output" in taken.result.output


def test_the_stream_ends_with_its_final_note(streamed):
    core = elfcore.read(streamed["elf"])
    size = streamed["elf"].stat().st_size
    assert int(streamed["taken"].status["dump_bytes"]) == size
    assert core.trailer, "no trailer after the segments"
    final, at_start = core.livedump(), core.livedump_in_headers()
    assert final.reason == at_start.reason == "stream"
    # What the tool reported from STATUS at the end is the trailer's, not the headers'.
    assert final.cow_faults == int(streamed["taken"].status["cow_faults"])
    assert final.failed_pages == int(streamed["taken"].status["failed_pages"])
    assert at_start.cow_faults <= final.cow_faults
    assert len(final.failed_pfns) == final.nr_listed
    assert (final.class_pages, final.excluded_pages) == (at_start.class_pages, at_start.excluded_pages)


def test_drgn_crash_and_makedumpfile_read_the_stream(pipeline, streamed):
    read_back(pipeline, streamed["taken"], streamed["elf"], pipeline.run.path("stream") / "crash")
    packed = validate.makedumpfile(streamed["elf"], pipeline.run.path("stream") / "stream.kdump")
    assert validate.read_with_drgn(packed.path, pipeline.build().vmlinux).init_comm == "swapper/0"


def test_a_reader_that_waits_holds_the_sweep_back(guest, streamed):
    """Three seconds in, nobody has read: the sweep has gone no further than the kernel's four 256 KiB
    buffers, the tool's 1 MiB and the pipe hold. Then the reader drains it and the dump completes."""
    console, _ = guest
    out = console.run("livedump dump - 2>/tmp/slow.err | "
                      "(sleep 3; livedump status > /tmp/mid.txt; cat > /dev/null); cat /tmp/mid.txt",
                      check=True, timeout=900).output
    mid = dump_mod.parse_status(out)
    assert mid["state"] == "sweeping", out
    assert int(mid["pages_dumped"]) * 4096 < 4 << 20 < int(mid["pages_total"]) * 4096, mid
    assert "state=done" in console.run("cat /tmp/slow.err", check=True).output


def test_a_reader_gone_fails_the_dump_and_the_next_one_works(guest, streamed):
    console, _ = guest
    before = bench.meminfo(console)
    gone = console.run("set -o pipefail; livedump dump - 2>/tmp/gone.err | head -c 4194304 > /dev/null",
                       timeout=900)
    assert gone.status != 0, "the pipeline succeeded although its reader stopped after 4 MiB"
    assert "dump abandoned" in console.run("cat /tmp/gone.err", check=True).output
    st = dump_mod.parse_status(console.run("i=0; while livedump status | grep -q '^state=sweeping' && "
                                           "[ $i -lt 300 ]; do sleep 1; i=$((i+1)); done; livedump status",
                                           check=True, timeout=900).output)
    assert (st["state"], st["error"]) == ("failed", str(-errno.EPIPE)), st
    assert bench.meminfo(console) == before
    again = dump_mod.dump(console, GZIP_TARGET, reason="after a reader gone")
    assert again.result.status == 0, again.result.output[-1500:]
    assert state(console) == "idle"


def test_a_stream_cannot_be_kept_for_later(guest):
    console, _ = guest
    before = state(console)
    result = console.run("livedump init -")
    assert result.status == errno.EINVAL, result.output
    assert "livedump dump -" in result.output
    assert state(console) == before
