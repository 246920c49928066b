"""Driving the guest's serial console with pexpect.

Each command's exit status comes back as a sentinel line carrying a per-boot
random nonce and a per-command counter. The shell prints it with ``$?``
expanded, so neither echoed input nor console noise can fake a result.
Everything the guest prints is also scanned for oops markers.

Timeouts are named: ``boot`` (until /init says ready), ``command`` (one
command), ``run`` (the whole session). When one fires the error says which,
after how long, and shows the last console lines.
"""

from __future__ import annotations

import ctypes
import re
import secrets
import shlex
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import GuestCrashed, GuestTimeout, HarnessError

# Only the fixed part: printk output can land in the middle of the line.
READY = re.compile(r"livedump-guest: ready")
# Console lines that mean the guest kernel is in trouble.
OOPS_MARKERS = ("Kernel panic", "BUG:", "WARNING:", "Call Trace:", "general protection fault",
                "Oops:", "watchdog: BUG", "INFO: task", "UBSAN:", "KASAN:")
_OOPS = re.compile("|".join(re.escape(m) for m in OOPS_MARKERS))
TAIL_LINES = 50


@dataclass(frozen=True)
class Timeouts:
    boot: float = 300.0
    command: float = 120.0
    run: float = 1800.0


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    output: str


def sentinels(nonce: str, seq: int) -> tuple[str, str, re.Pattern, re.Pattern]:
    """Shell text that frames a command's output, and the patterns of its output.

    The shell text holds printf formats where the output holds the values
    (the status is ``$?``), so an echoed command line never matches.
    """
    begin = f"printf 'LDST-%s-%d:BEGIN\\n' {nonce} {seq}"
    end = f"printf '\\nLDRC-%s-%d:%d:END\\n' {nonce} {seq} \"$?\""
    return (begin, end, re.compile(rf"LDST-{nonce}-{seq}:BEGIN\r*\n"),
            re.compile(rf"LDRC-{nonce}-{seq}:(\d+):END"))


def parse_status(text: str, nonce: str, seq: int) -> int | None:
    m = sentinels(nonce, seq)[3].search(text)
    return int(m.group(1)) if m else None


def find_oops(text: str) -> str | None:
    m = _OOPS.search(text)
    return m.group(0) if m else None


def _die_with_parent() -> None:
    # QEMU must not outlive the harness, even when the harness is SIGKILLed.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class SerialLog:
    """The whole console in a file, and the last lines in memory."""

    def __init__(self, path: Path | None):
        self._file: IO[str] | None = open(path, "w", errors="replace") if path else None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = ""

    def write(self, text: str) -> None:
        if self._file:
            self._file.write(text)
            self._file.flush()
        lines = (self._partial + text.replace("\r", "")).split("\n")
        self._partial = lines.pop()
        self._tail.extend(lines)

    def flush(self) -> None:
        pass

    def tail(self) -> str:
        lines = list(self._tail) + ([self._partial] if self._partial else [])
        return "\n".join(lines[-TAIL_LINES:])

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


class GuestConsole:
    def __init__(self, argv: list[str], *, serial_log: Path | None = None, stderr_log: Path | None = None,
                 timeouts: Timeouts = Timeouts(), check_oops: bool = True):
        import pexpect

        self._pexpect = pexpect
        self.timeouts = timeouts
        self.check_oops = check_oops
        self.log = SerialLog(serial_log)
        self.nonce = secrets.token_hex(8)
        self.seq = 0
        self.release: str | None = None
        self.started = time.monotonic()
        # QEMU's own stderr goes to a file so it cannot interleave with the guest console.
        cmd = " ".join(shlex.quote(a) for a in argv)
        if stderr_log:
            cmd += f" 2>{shlex.quote(str(stderr_log))}"
        self.child = pexpect.spawn("/bin/sh", ["-c", f"exec {cmd}"], encoding="utf-8",
                                   codec_errors="replace", preexec_fn=_die_with_parent, echo=False,
                                   dimensions=(50, 200))
        self.child.logfile_read = self.log

    def _deadline(self, which: str, seconds: float) -> tuple[str, float]:
        left_in_run = self.timeouts.run - (time.monotonic() - self.started)
        if left_in_run < seconds:
            return "run", max(left_in_run, 0.0)
        return which, seconds

    def _expect(self, pattern: re.Pattern | str, which: str, seconds: float, waiting_for: str,
                since: float | None = None) -> str:
        """Wait for pattern; raise on EOF, an oops marker, or the named timeout."""
        pexpect = self._pexpect
        name, limit = self._deadline(which, seconds)
        start = time.monotonic() if since is None else since  # since: when the whole wait began
        patterns = [pattern, pexpect.EOF, pexpect.TIMEOUT]
        if self.check_oops:
            patterns.insert(1, _OOPS)
        idx = self.child.expect(patterns, timeout=limit)
        matched = patterns[idx]
        if matched is pexpect.TIMEOUT:
            raise GuestTimeout(name, time.monotonic() - start if name != "run" else self.timeouts.run,
                               self.log.tail(), waiting_for=waiting_for)
        if matched is pexpect.EOF:
            raise HarnessError("qemu", f"QEMU exited while waiting for {waiting_for} "
                               f"(exit status {self.child.wait() if not self.child.isalive() else '?'})",
                               detail="last console lines:\n" + self.log.tail())
        if matched is _OOPS:
            # Take the marker before the next expect() replaces child.match.
            marker = self.child.match.group(0) if hasattr(self.child.match, "group") else "oops"
            # Let the rest of the report reach the log before we show it.
            try:
                self.child.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=2)
            except Exception:
                pass
            raise GuestCrashed(marker, self.log.tail())
        return self.child.before

    def wait_ready(self) -> str:
        self._expect(READY, "boot", self.timeouts.boot, "the guest's ready line")
        # No prompt, no echo, no line editing: only what commands print.
        self.run("stty -echo 2>/dev/null; set +o emacs 2>/dev/null; PS1=''; export PS1", check=True)
        self.release = self.run("uname -r", check=True).output.strip().splitlines()[-1]
        return self.release

    def run(self, command: str, *, timeout: float | None = None, check: bool = False) -> CommandResult:
        """Run one shell command in the guest; return its real exit status and output.

        The command runs in a subshell (``exit N`` returns N instead of ending
        the console), with stdin from /dev/null so it cannot swallow the rest
        of the line, and on its own line so a trailing comment is harmless.
        Output is what the guest printed between the two sentinels.
        """
        self.seq += 1
        begin, end, begin_pattern, end_pattern = sentinels(self.nonce, self.seq)
        self.child.send(f"{begin}; ( {command}\n) </dev/null; {end}\n")
        limit = timeout or self.timeouts.command
        started = time.monotonic()
        what = f"`{command}` to finish"
        self._expect(begin_pattern, "command", limit, what, since=started)
        before = self._expect(end_pattern, "command", max(limit - (time.monotonic() - started), 0.0), what,
                              since=started)
        status = int(self.child.match.group(1))
        output = before.replace("\r", "").strip("\n")
        result = CommandResult(command, status, output)
        if check and status != 0:
            raise HarnessError("guest", f"`{command}` exited {status}", detail=output)
        return result

    def interact(self) -> None:
        self.child.logfile_read = None
        self.child.interact()

    def close(self, *, raise_oops: bool = True) -> None:
        """Power the guest off and read the console to its end. What it printed after the last command
        (a release, the shutdown) is scanned too: an oops there raises GuestCrashed once QEMU is gone,
        unless raise_oops is False (another error is on its way already)."""
        rest = ""
        try:
            if self.child.isalive():
                self.child.send("poweroff -f\n")
            self.child.expect(self._pexpect.EOF, timeout=10)
        except Exception:
            pass
        if isinstance(self.child.before, str):
            rest = self.child.before
        self.child.terminate(force=True)
        self.log.close()
        marker = find_oops(rest) if self.check_oops and raise_oops else None
        if marker:
            raise GuestCrashed(marker, self.log.tail())

    def __enter__(self) -> GuestConsole:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(raise_oops=exc_type is None)
