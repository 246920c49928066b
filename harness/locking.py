"""Inter-process locks on the shared cache: one writer per tree and build directory.

Two harness runs (a developer's `make test-qemu` and a test session, say)
that build in the same O= directory at once corrupt each other's objects;
the second one waits instead, and says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(directory: Path, what: str, lock_dir: Path, *,
              say: Callable[[str], None] = lambda m: None) -> Iterator[None]:
    """Hold an flock for ``directory`` (lock files live in ``lock_dir``, not next to
    the directory, which may be the user's own tree); report if another process holds it."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    lock_path = lock_dir / f"{directory.name}-{digest}.lock"
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            say(f"waiting for {what} {directory} (in use by {holder})")
            start = time.monotonic()
            fcntl.flock(f, fcntl.LOCK_EX)
            say(f"got {what} after {time.monotonic() - start:.0f}s")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
