"""Bad input to /dev/livedump: the documented errno, an unchanged state, and a dump still works.

The livedump tool exits with the errno of the failing ioctl (see
Documentation/admin-guide/livedump.rst for the table).
"""

from __future__ import annotations

import errno
import re

import pytest
from guest_checks import expect_errno, state

from harness import dump as dump_mod

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def guest2(pipeline):
    """A guest with a big enough dump disk (/dev/vdb) and a 16 MiB one (/dev/vdc)."""
    disks = dump_mod.dump_disks(pipeline.run.directory / "errors", dump_mod.memory_bytes(pipeline.options.memory),
                                small=True)
    with pipeline.boot(disks) as console:
        yield console


@pytest.mark.parametrize("step", ["start", "sweep"])
def test_wrong_order_in_idle(guest2, step):
    assert state(guest2) == "idle"
    expect_errno(guest2, f"livedump {step}", errno.EINVAL, "idle")


def test_release_with_nothing_to_release_says_so(guest2):
    """The tool checks STATUS first; UNINIT itself still fails with EINVAL in IDLE (ldfuzz, the kernel's table)."""
    assert state(guest2) == "idle"
    r = guest2.run("livedump release")
    assert r.status == 0 and "livedump: nothing to release" in r.output, r.output
    assert state(guest2) == "idle"


def test_sweep_before_start_leaves_ready(guest2):
    guest2.run(f"livedump init {dump_mod.DUMP_TARGET}", check=True)
    try:
        expect_errno(guest2, "livedump sweep", errno.EINVAL, "ready")
        busy = expect_errno(guest2, f"livedump init {dump_mod.DUMP_TARGET}", errno.EBUSY, "ready")
        assert "a dump is already set up, state ready" in busy.output, busy.output
        assert '"livedump release" drops it' in busy.output, busy.output
    finally:
        guest2.run("livedump release", check=True)
    assert state(guest2) == "idle"


def test_target_too_small_is_refused_at_init(guest2):
    expect_errno(guest2, f"livedump init {dump_mod.SMALL_TARGET}", errno.ENOSPC, "idle")


def test_non_block_target(guest2):
    """Neither a block device nor a regular file."""
    expect_errno(guest2, "livedump init /dev/null", errno.ENOTBLK, "idle")


def test_a_regular_file_on_tmpfs_is_refused_and_left_alone(guest2):
    """0043 takes files on ext4 and xfs only: on tmpfs the file would be the memory being dumped. An existing
    file keeps its content and size."""
    guest2.run("echo keep > /tmp/not-a-device", check=True)
    out = expect_errno(guest2, "livedump init /tmp/not-a-device", errno.EOPNOTSUPP, "idle").output
    assert "ext4 or xfs" in out, out
    assert guest2.run("cat /tmp/not-a-device", check=True).output.strip() == "keep"


def test_unprivileged_caller(guest2):
    # Make the node itself open to all, so it is the driver that refuses.
    guest2.run("chmod 0666 /dev/livedump", check=True)
    try:
        expect_errno(guest2, "runas 65534 livedump status", errno.EPERM, "idle")
    finally:
        guest2.run("chmod 0600 /dev/livedump", check=True)


def test_a_dump_still_works_after_all_that(guest2):
    taken = dump_mod.dump_with_markers(guest2, dump_mod.DUMP_TARGET, reason="after bad input")
    assert taken.result.status == 0, taken.result.output
    assert state(guest2) == "idle"


def test_progress_is_one_line_on_a_terminal_plain_lines_otherwise_and_nothing_quiet(guest2):
    """The serial console is a terminal: one line rewritten in place; through a pipe, a line per poll."""
    on_tty = guest2.run(f"livedump dump {dump_mod.DUMP_TARGET} --reason tty")
    assert on_tty.status == 0, on_tty.output
    # The console drops the carriage returns; the erase-to-end-of-line after each state shows the mode.
    assert re.search(r"livedump: +\d+% \d+/\d+ pages, [\d.]+ MiB/s, \d+ COW faults, reserve \d+% at most"
                     r"[^\n]*\x1b\[K", on_tty.output), on_tty.output
    piped = guest2.run(f"livedump dump {dump_mod.DUMP_TARGET} --reason piped | cat")
    assert piped.status == 0, piped.output
    assert "\x1b[K" not in piped.output and re.search(r"^livedump: \d+/\d+ pages$", piped.output, re.M), \
        piped.output
    assert re.search(r"^livedump: state=done$", piped.output, re.M)
    quiet = guest2.run(f"livedump dump {dump_mod.DUMP_TARGET} --reason quiet --quiet")
    assert quiet.status == 0 and quiet.output.strip() == "", quiet.output
    assert state(guest2) == "idle"
