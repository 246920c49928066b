"""``python -m harness oracle``: a livedump compared page by page with QEMU's capture of the same instant.

The guest takes a dump with LIVEDUMP_INIT_TEST_HOLD (kernel patch 0040): at the end of the stop, every
CPU still stopped and everything copied and protected, the kernel writes ``L`` to COM2 and polls COM2.
COM2 is a unix socket here; :class:`HoldResponder` waits for the byte, has QEMU write the guest's memory
with ``dump-guest-memory`` (QEMU stops the vCPUs while it does), and answers with a byte, which ends the
stop. That capture is the ground truth of the snapshot instant, but for what the stop itself writes after
the pages are copied and protected. Every page the livedump holds is compared with it by physical address
(:func:`compare`); harness/oraclecheck.py says why each differing page differs.
"""

from __future__ import annotations

import json
import mmap
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import dump as dump_mod
from . import elfcore, oraclecheck
from .console import GuestConsole
from .errors import HarnessError
from .pipeline import Pipeline, say
from .qemu import Disk, require_hold_support
from .qmp import QmpClient

HOLD_SOCKET = "hold.sock"  # COM2, in the run directory
HOLD_BYTE = b"L"      # LIVEDUMP_TEST_HOLD_BYTE
RELEASE_BYTE = b"G"   # LIVEDUMP_TEST_HOLD_ANSWER: only it ends the hold
PAGE_SIZE = 4096
DUMP_TIMEOUT = 900.0


class OracleError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("oracle", message, detail=detail)


@dataclass
class Capture:
    """QEMU's dump of the held guest, or why there is none."""
    path: Path
    wait_ns: int = 0          # from connecting to the byte (the dump up to its stop)
    dump_ns: int = 0          # dump-guest-memory, guest held
    error: str | None = None


class HoldResponder(threading.Thread):
    """On the guest's hold byte: QEMU's dump-guest-memory into ``out``, then the release byte.

    Connect (:meth:`connect`) before the guest may send the byte: QEMU drops what COM2 sends while no
    client is connected, and the guest would then wait out its limit.
    """

    def __init__(self, hold_socket: Path, qmp_socket: Path, out: Path, timeout: float):
        super().__init__(name="oracle-hold", daemon=True)
        self.hold_socket, self.qmp_socket, self.timeout = hold_socket, qmp_socket, timeout
        self.capture = Capture(path=out)
        self._sock: socket.socket | None = None

    def connect(self, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.hold_socket))
                self._sock = sock
                return
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def run(self) -> None:
        assert self._sock is not None, "connect() first"
        start = time.monotonic_ns()
        try:
            self._sock.settimeout(self.timeout)
            while True:
                data = self._sock.recv(64)
                if not data:
                    raise ConnectionError("COM2 closed before the guest held its stop")
                if HOLD_BYTE in data:
                    break
            held = time.monotonic_ns()
            self.capture.wait_ns = held - start
            with QmpClient.connect(self.qmp_socket) as qmp:
                qmp.execute("dump-guest-memory",
                            {"paging": False, "protocol": f"file:{self.capture.path}", "detach": False},
                            timeout=self.timeout)
            self.capture.dump_ns = time.monotonic_ns() - held
        except Exception as e:  # reported through capture.error; the guest's own limit ends its wait
            self.capture.error = f"{type(e).__name__}: {e}"
        finally:
            try:
                self._sock.sendall(RELEASE_BYTE)
            except OSError:
                pass
            self._sock.close()


@dataclass
class Comparison:
    """Every page the livedump holds, against the capture at the same physical address."""
    pages: int = 0
    identical: int = 0
    not_in_capture: int = 0
    differing: list[int] = field(default_factory=list)   # pfns


def _segments(core: elfcore.Vmcore) -> list[tuple[int, int, int]]:
    """(paddr, offset, size) of each PT_LOAD, whole pages only."""
    return [(s.paddr, s.offset, s.filesz & ~(PAGE_SIZE - 1)) for s in core.loads]


def compare(livedump: Path, capture: Path) -> Comparison:
    """Page by page, by physical address; a page the capture lacks is counted, not compared."""
    ld, qemu = elfcore.read(livedump), elfcore.read(capture)
    qsegs = _segments(qemu)
    out = Comparison()
    with open(livedump, "rb") as lf, open(capture, "rb") as qf, \
            mmap.mmap(lf.fileno(), 0, access=mmap.ACCESS_READ) as lm, \
            mmap.mmap(qf.fileno(), 0, access=mmap.ACCESS_READ) as qm:
        for paddr, offset, size in _segments(ld):
            for delta in range(0, size, PAGE_SIZE):
                pa = paddr + delta
                out.pages += 1
                q = next(((qo + pa - qp) for qp, qo, qs in qsegs if qp <= pa < qp + qs), None)
                if q is None:
                    out.not_in_capture += 1
                    continue
                if lm[offset + delta:offset + delta + PAGE_SIZE] == qm[q:q + PAGE_SIZE]:
                    out.identical += 1
                else:
                    out.differing.append(pa // PAGE_SIZE)
    return out


@dataclass
class OracleRun:
    """One dump and its capture, compared."""
    index: int
    dump_status: int
    counters: dict[str, str]
    capture: Capture
    report: dict | None = None      # oraclecheck.Report.as_json()
    error: str | None = None

    @property
    def unexplained(self) -> int | None:
        return None if self.report is None else self.report["differing"][oraclecheck.UNEXPLAINED]


def one_run(p: Pipeline, console: GuestConsole, disks: tuple[Disk, ...], index: int, *,
            no_wrprotect: bool, keep: bool, exclude: str = dump_mod.EVERY_PAGE,
            reserve_pages: int = 0) -> OracleRun:
    """A dump held at its instant, QEMU's capture of it, then the comparison and the classes."""
    kernel = p.build()
    capture_path = p.run.path(f"capture-{index}.elf")
    responder = HoldResponder(p.run.path(HOLD_SOCKET), p.run.path("qmp.sock"), capture_path,
                              p.options.timeouts.command)
    responder.connect()
    responder.start()
    flags = " ".join(f for f in (f"--test-hold --exclude {exclude}", "--test-no-wrprotect" if no_wrprotect else "",
                                  dump_mod.reserve_flag(reserve_pages)) if f)
    say(f"oracle run {index}: livedump dump {flags}, QEMU captures the held guest...")
    # A sweep under the load, at the writer's background priority for its first seconds, takes a while.
    timeout = max(DUMP_TIMEOUT, p.options.timeouts.command)
    taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason=f"harness oracle {index}", flags=flags,
                          timeout=timeout)
    responder.join(timeout)
    run = OracleRun(index=index, dump_status=taken.result.status, counters=taken.status,
                    capture=responder.capture)
    try:
        if taken.result.status != 0:
            run.error = f"livedump dump exited {taken.result.status}: {taken.result.output.strip()[-300:]}"
        elif responder.capture.error or not capture_path.exists():
            run.error = f"no capture: {responder.capture.error or 'QEMU wrote no file'}"
        else:
            say(f"oracle run {index}: held {responder.capture.dump_ns / 1e6:.0f} ms for the capture; comparing...")
            image = dump_mod.dump_image(disks)
            cmp = compare(image, capture_path)
            report = oraclecheck.check(image, capture_path, kernel.vmlinux, cmp.differing, cmp.pages,
                                       cmp.identical, cmp.not_in_capture)
            run.report = report.as_json()
            print(f"oracle run {index}: {report.summary()}")
    finally:
        if not keep:
            capture_path.unlink(missing_ok=True)
    return run


def oracle(p: Pipeline, runs: int, *, no_wrprotect: bool = False, keep: bool = False,
           exclude: str = dump_mod.EVERY_PAGE, reserve_pages: int = 0) -> list[OracleRun]:
    """``runs`` dumps of one guest under the e2e load and the torture load, each against its capture; the
    dumps leave out the page classes ``exclude`` names (livedump dump --exclude) and have a reserve of
    ``reserve_pages`` (0: livedump's default)."""
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory))
    out: list[OracleRun] = []
    with p.boot(disks, hold_socket=p.run.path(HOLD_SOCKET)) as console:
        if console.run("command -v livedump").status != 0:
            raise OracleError("the guest has no livedump tool: is the series applied?")
        if not dump_mod.has_torture(console):
            raise OracleError("this kernel has no test_livedump (CONFIG_TEST_LIVEDUMP): no LIVEDUMP_INIT_TEST_HOLD")
        dump_mod.start_load(console)
        dump_mod.torture(console, True)
        try:
            for i in range(1, runs + 1):
                out.append(one_run(p, console, disks, i, no_wrprotect=no_wrprotect, keep=keep, exclude=exclude,
                                   reserve_pages=reserve_pages))
        finally:
            dump_mod.torture(console, False)
            dump_mod.stop_load(console)
    return out


def reserve_pages(p: Pipeline, asked: int | None) -> int:
    """The reserve the oracle's dumps ask for: ``asked`` (--reserve; 0 for livedump's default), else an ample
    one. With the default, a host whose vCPUs were slowed by other work exhausted it under the e2e and
    torture loads (2026-12-07: 3074 COW faults, 2948 slots, 536 failed), and a failed page of the memmap
    tears the free lists the classification reads; the oracle asks whether what the dump holds is the
    instant, not how much reserve a load needs."""
    if asked is not None:
        if asked < 0:
            raise OracleError("--reserve must be 0 (livedump's default) or a number of pages")
        return asked
    return dump_mod.ample_reserve_pages(p.options.memory)


def command(p: Pipeline, args) -> int:
    """Exit 0: every run compared and no page unexplained; 1: unexplained pages (or a run that failed)."""
    if args.runs < 1:
        raise OracleError("--runs must be at least 1")
    reserve = reserve_pages(p, args.reserve)
    require_hold_support(p.arch)  # before a build that could not be used
    kernel = p.build()
    if not (kernel.headers / "linux" / "livedump.h").is_file():
        raise OracleError("this kernel has no livedump (series or fragment missing)")
    with p.run.stage("oracle"):
        runs = oracle(p, args.runs, no_wrprotect=args.test_no_wrprotect, keep=args.keep, exclude=args.exclude,
                      reserve_pages=reserve)
    path = p.run.path("oracle.json")
    path.write_text(json.dumps([asdict(r) for r in runs], indent=2, default=str) + "\n")
    bad = [r for r in runs if r.error or r.unexplained]
    for r in runs:
        say(f"run {r.index}: " + (r.error or f"{r.report['pages']} pages, {r.report['identical']} identical, "
                                            f"{r.unexplained} unexplained"))
    say(f"wrote {path}")
    p.run.facts["oracle"] = {"json": str(path), "runs": len(runs), "no_wrprotect": args.test_no_wrprotect,
                             "unexplained": [r.unexplained for r in runs], "errors": [r.error for r in runs]}
    return 1 if bad else 0
