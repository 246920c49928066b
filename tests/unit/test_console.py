from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from harness.console import GuestConsole, SerialLog, Timeouts, find_oops, parse_status, sentinels
from harness.errors import GuestCrashed, GuestTimeout, HarnessError

NONCE = "0123456789abcdef"


def sh(text: str) -> str:
    return subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, check=False).stdout


# -- sentinels -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [0, 1, 3, 127])
def test_sentinels_match_real_shell_output(status):
    begin, end, begin_re, end_re = sentinels(NONCE, 4)
    out = sh(f"{begin}; (exit {status}); {end}")
    assert begin_re.search(out)
    assert parse_status(out, NONCE, 4) == status


def test_sentinels_frame_command_output():
    begin, end, begin_re, end_re = sentinels(NONCE, 1)
    out = sh(f"{begin}; ( echo hello; echo world\n) </dev/null; {end}")
    start = begin_re.search(out).end()
    stop = end_re.search(out).start()
    assert out[start:stop].strip("\n") == "hello\nworld"


def test_echoed_shell_text_does_not_match():
    begin, end, begin_re, end_re = sentinels(NONCE, 2)
    echoed = f"{begin}; ( false\n) </dev/null; {end}\n"
    assert parse_status(echoed, NONCE, 2) is None
    assert begin_re.search(echoed) is None
    # Even the echo with the output of a previous command around it.
    assert parse_status("$ " + echoed + "some output\n", NONCE, 2) is None


def test_other_nonce_or_sequence_does_not_match():
    begin, end, _, _ = sentinels(NONCE, 5)
    out = sh(f"{begin}; (exit 9); {end}")
    assert parse_status(out, NONCE, 5) == 9
    assert parse_status(out, "fedcba9876543210", 5) is None
    assert parse_status(out, NONCE, 6) is None
    # seq 5 must not match the output of seq 50 or 15.
    out50 = sh(f"{sentinels(NONCE, 50)[0]}; (exit 1); {sentinels(NONCE, 50)[1]}")
    assert parse_status(out50, NONCE, 5) is None
    out15 = sh(f"{sentinels(NONCE, 15)[0]}; (exit 1); {sentinels(NONCE, 15)[1]}")
    assert parse_status(out15, NONCE, 5) is None


def test_status_survives_printk_noise_before_the_sentinel():
    begin, end, _, _ = sentinels(NONCE, 3)
    out = "[   12.345678] random: crng init done\n" + sh(f"{begin}; (exit 4); {end}")
    assert parse_status(out, NONCE, 3) == 4


@pytest.mark.parametrize("line, marker", [
    ("[    1.234] Kernel panic - not syncing: VFS: Unable to mount root fs", "Kernel panic"),
    ("[    2.000] BUG: kernel NULL pointer dereference, address: 0000000000000000", "BUG:"),
    ("[    3.1] WARNING: CPU: 0 PID: 1 at mm/livedump.c:42 livedump_start+0x1/0x2", "WARNING:"),
    ("[    4.2] general protection fault, probably for non-canonical address", "general protection fault"),
    ("[   99.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!", "watchdog: BUG"),
    ("[  120.5] INFO: task livedump:77 blocked for more than 120 seconds.", "INFO: task"),
    ("[    5.5] Call Trace:", "Call Trace:"),
    ("[    6.6] UBSAN: shift-out-of-bounds in kernel/x.c:1:2", "UBSAN:"),
    ("[    7.7] KASAN: use-after-free in foo+0x1/0x2", "KASAN:"),
])
def test_find_oops(line, marker):
    text = "[    0.000] Linux version 6.1.192\n" + line + "\n[    9.9] more\n"
    assert find_oops(text) == marker


def test_find_oops_quiet_console():
    text = ("[    0.000000] Linux version 6.1.192 (livedump@harness)\n"
            "[    1.000000] Run /init as init process\n"
            "livedump-guest: ready\n"
            "bug fixed; no warnings here\n")
    assert find_oops(text) is None


def test_serial_log_tail_keeps_last_lines(tmp_path):
    log = SerialLog(tmp_path / "serial.log")
    for i in range(80):
        log.write(f"line {i}\r\n")
    log.write("partial")
    tail = log.tail().splitlines()
    assert tail[-1] == "partial"
    assert tail[-2] == "line 79"
    assert len(tail) == 50
    log.close()
    assert (tmp_path / "serial.log").read_bytes().startswith(b"line 0\r\nline 1\r\n")


# -- GuestConsole against fake guests ---------------------------------------------------


@pytest.fixture
def consoles():
    made: list[GuestConsole] = []

    def _make(argv: list[str], **kw) -> GuestConsole:
        c = GuestConsole(argv, **kw)
        made.append(c)
        return c

    yield _make
    for c in made:
        if c.child.isalive():
            c.child.terminate(force=True)
        c.log.close()


def test_boot_timeout(tmp_path, consoles):
    c = consoles(["/bin/sh", "-c", "echo booting; sleep 30"], timeouts=Timeouts(boot=1),
                 serial_log=tmp_path / "serial.log")
    start = time.monotonic()
    with pytest.raises(GuestTimeout) as ei:
        c.wait_ready()
    elapsed = time.monotonic() - start
    e = ei.value
    assert e.which == "boot"
    assert 0.9 <= elapsed < 5
    assert re.fullmatch(r"boot timeout after 1\.\ds waiting for the guest's ready line", e.message), e.message
    assert e.stage == "qemu"
    assert "booting" in e.console_tail
    assert "booting" in e.detail
    assert "booting" in (tmp_path / "serial.log").read_text()


def test_guest_exit_during_boot(consoles):
    c = consoles(["/bin/sh", "-c", "echo early exit; exit 3"], timeouts=Timeouts(boot=10))
    start = time.monotonic()
    with pytest.raises(HarnessError) as ei:
        c.wait_ready()
    assert time.monotonic() - start < 5  # EOF is noticed at once, not after the boot timeout
    assert not isinstance(ei.value, GuestTimeout)
    assert "QEMU exited while waiting for the guest's ready line" in ei.value.message
    assert "early exit" in ei.value.detail


def test_stderr_goes_to_its_own_log(tmp_path, consoles):
    c = consoles(["/bin/sh", "-c", "echo to-console; echo to-stderr >&2; sleep 5"],
                 stderr_log=tmp_path / "qemu stderr.log", timeouts=Timeouts(boot=1))
    with pytest.raises(GuestTimeout) as ei:
        c.wait_ready()
    assert "to-console" in ei.value.console_tail
    assert "to-stderr" not in ei.value.console_tail
    assert (tmp_path / "qemu stderr.log").read_text() == "to-stderr\n"


def test_panic_during_boot(consoles):
    c = consoles(["/bin/sh", "-c", "echo 'Linux version 6.1.192'; echo 'Kernel panic - not syncing: Attempted to kill "
                  "init!'; echo ' dump_stack+0x1'; sleep 30"], timeouts=Timeouts(boot=20))
    start = time.monotonic()
    with pytest.raises(GuestCrashed) as ei:
        c.wait_ready()
    assert time.monotonic() - start < 10
    assert ei.value.marker == "Kernel panic"
    assert ei.value.message == "guest kernel reported 'Kernel panic'"
    assert "Attempted to kill init!" in ei.value.detail
    # The lines after the marker are collected too.
    assert "dump_stack+0x1" in ei.value.detail


def test_oops_check_can_be_disabled(fake_sh_guest, consoles):
    argv = [*fake_sh_guest[:2], "echo 'WARNING: harmless'; " + fake_sh_guest[2]]
    c = consoles(argv, timeouts=Timeouts(boot=5, command=5), check_oops=False)
    c.wait_ready()
    r = c.run("echo 'BUG: not really'; exit 3")
    assert (r.status, r.output) == (3, "BUG: not really")


def test_oops_before_ready_is_caught(fake_sh_guest, consoles):
    argv = [*fake_sh_guest[:2], "echo 'WARNING: CPU: 0 PID: 1 at x.c:1'; " + fake_sh_guest[2]]
    c = consoles(argv, timeouts=Timeouts(boot=5, command=5))
    with pytest.raises(GuestCrashed) as ei:
        c.wait_ready()
    assert ei.value.marker == "WARNING:"


@pytest.fixture
def guest(fake_sh_guest, consoles, tmp_path):
    c = consoles(fake_sh_guest, timeouts=Timeouts(boot=10, command=10, run=60),
                 serial_log=tmp_path / "serial.log")
    release = c.wait_ready()
    assert release == os.uname().release
    assert c.run("type poweroff").output.endswith("function"), "the fake guest must not reach the host's poweroff"
    return c


def test_run_status_and_output(guest):
    assert guest.run("true").status == 0
    assert guest.run("false").status == 1
    r = guest.run("echo hi")
    assert (r.command, r.status, r.output) == ("echo hi", 0, "hi")
    assert guest.run("exit 7").status == 7
    # `exit` ran in a subshell: the console is still alive.
    assert guest.run("echo still here").output == "still here"
    assert guest.run("printf 'a\\nb\\n'; exit 2").output == "a\nb"
    assert guest.run("printf 'no newline'").output == "no newline"


def test_run_cannot_be_fooled_by_fake_sentinels(guest):
    nonce, seq = guest.nonce, guest.seq + 1
    r = guest.run(f"echo LDRC-{nonce}-{seq + 1}:0:END; echo LDRC-0000-{seq}:0:END; exit 5")
    assert r.status == 5


def test_run_stdin_is_dev_null_and_comment_is_harmless(guest):
    assert guest.run("cat").status == 0  # would hang reading the console otherwise
    assert guest.run("echo x # trailing comment").output == "x"
    assert guest.run("echo after").output == "after"


def test_run_check_raises_with_output(guest):
    with pytest.raises(HarnessError) as ei:
        guest.run("echo oh no; exit 4", check=True)
    assert ei.value.stage == "guest"
    assert ei.value.message == "`echo oh no; exit 4` exited 4"
    assert ei.value.detail == "oh no"


def test_command_timeout(guest):
    start = time.monotonic()
    with pytest.raises(GuestTimeout) as ei:
        guest.run("sleep 5", timeout=1)
    assert time.monotonic() - start < 3
    assert ei.value.which == "command"
    assert re.fullmatch(r"command timeout after 1\.\ds waiting for `sleep 5` to finish", ei.value.message)


def test_command_timeout_counts_the_whole_command(guest):
    """The message gives the command's whole wait, not just the part after the begin sentinel."""
    guest.child.send("sleep 0.7\n")  # the shell is busy before it even prints the begin sentinel
    with pytest.raises(GuestTimeout) as ei:
        guest.run("sleep 5", timeout=1.5)
    assert ei.value.which == "command"
    assert 1.4 <= ei.value.seconds < 3
    assert ei.value.message.startswith("command timeout after 1.")


def test_oops_during_command(guest):
    with pytest.raises(GuestCrashed) as ei:
        guest.run("echo 'BUG: unable to handle page fault for address: ffff'")
    assert ei.value.marker == "BUG:"


def test_run_timeout(fake_sh_guest, consoles):
    c = consoles(fake_sh_guest, timeouts=Timeouts(boot=10, command=60, run=2))
    c.wait_ready()
    start = time.monotonic()
    with pytest.raises(GuestTimeout) as ei:
        c.run("sleep 10")
    assert time.monotonic() - start < 4
    assert ei.value.which == "run"
    assert ei.value.message.startswith("run timeout after 2.0s waiting for `sleep 10` to finish")


def test_close_ends_the_guest(guest):
    child = guest.child
    start = time.monotonic()
    guest.close()
    assert time.monotonic() - start < 5
    assert not child.isalive()


def test_an_oops_after_the_last_command_fails_the_close(guest):
    """The console is read to its end: an oops while releasing or powering off is not thrown away."""
    guest.run("(sleep 0.3; echo 'BUG: unable to handle page fault at shutdown') &")
    time.sleep(0.8)
    with pytest.raises(GuestCrashed) as ei:
        guest.close()
    assert ei.value.marker == "BUG:"
    assert not guest.child.isalive()


def test_an_error_on_its_way_is_not_replaced_by_a_late_oops(guest):
    guest.run("(sleep 0.3; echo 'WARNING: late') &")
    time.sleep(0.8)
    with pytest.raises(RuntimeError, match="first"):
        with guest:
            raise RuntimeError("first")
