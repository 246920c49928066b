"""What the harness tells the person running it, and what it keeps for later.

One logger, ``harness``, with two handlers:

- stderr: ``harness: 13:52:07 building ...``, info and above (what a person
  follows while a run goes on);
- ``harness.log`` in the run directory: every record with date, time and
  level, debug included (each host command line as it runs), so a run can
  be followed afterwards.

``say()`` (harness.pipeline) is ``log.info()``. A long step is announced
before it starts and, with :func:`progress`, reported every 30 s while it
runs, so minutes of a kernel build are not minutes of silence.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOGGER = logging.getLogger("harness")
RUN_LOG = "harness.log"
PROGRESS_EVERY = 30.0  # seconds between progress lines of a long step

CONSOLE_FORMAT = logging.Formatter("harness: %(asctime)s %(message)s", datefmt="%H:%M:%S")
FILE_FORMAT = logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

_console: logging.Handler | None = None
_run_log: logging.Handler | None = None


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (pytest's capture swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def console(stream: IO[str] | None = None) -> logging.Handler:
    """The stderr handler, (re)made on ``stream`` (default: sys.stderr as it is at each record)."""
    global _console
    if _console is not None:
        LOGGER.removeHandler(_console)
    _console = _attach(logging.StreamHandler(stream) if stream is not None else _Stderr(), logging.INFO,
                       CONSOLE_FORMAT)
    return _console


def _attach(handler: logging.Handler, level: int, fmt: logging.Formatter) -> logging.Handler:
    """handler on LOGGER at level with fmt; LOGGER itself passes everything to its handlers."""
    handler.setLevel(level)
    handler.setFormatter(fmt)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG)
    return handler


def _ensure_console() -> None:
    # A library user (the integration tests build a Pipeline directly) gets the same lines as the CLI.
    if _console is None:
        console()


def to_run_directory(directory: Path) -> Path:
    """Log everything, debug included, to ``directory/harness.log`` from now on (one run at a time)."""
    global _run_log
    close_run_log()
    path = directory / RUN_LOG
    _run_log = _attach(logging.FileHandler(path, encoding="utf-8"), logging.DEBUG, FILE_FORMAT)
    return path


def close_run_log() -> None:
    global _run_log
    if _run_log is not None:
        LOGGER.removeHandler(_run_log)
        _run_log.close()
        _run_log = None


def info(msg: str) -> None:
    _ensure_console()
    LOGGER.info(msg)


def debug(msg: str) -> None:
    """Only in harness.log: details a person reading the run afterwards wants (exact command lines)."""
    LOGGER.debug(msg)


def error(msg: str) -> None:
    _ensure_console()
    LOGGER.error(msg)


def elapsed(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@contextmanager
def progress(what: str, detail: Callable[[], str] | None = None, *, every: float = PROGRESS_EVERY,
             clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """While the block runs, every ``every`` seconds: ``<what>: <elapsed>[, <detail()>]``.

    The lines come from a thread; the block itself is not disturbed, and a
    detail() that fails (a log file not written yet) only drops the detail.
    """
    stop = threading.Event()
    start = clock()

    def tick() -> None:
        while not stop.wait(every):
            try:
                extra = detail() if detail else ""
            except OSError:
                extra = ""
            info(f"{what}: {elapsed(clock() - start)}{', ' + extra if extra else ''}")

    thread = threading.Thread(target=tick, name=f"progress: {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
