"""Cut a livedump out of the block device (or raw disk image) it was written to.

crash and drgn open the device itself, trailing bytes and all; a file of
exactly the dump is what one copies to another machine or attaches to a bug.
Its size comes from the ELF headers (the end of the last segment's data).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import elfcore
from .errors import HarnessError

CHUNK = 8 << 20


class ExtractError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("extract", message, detail=detail)


def _source_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)  # block devices report their size this way too


def extract(source: Path, out: Path, *, progress=sys.stderr, force: bool = False) -> int:
    """Copy the ELF dump at offset 0 of source to out; return its size in bytes.

    Refuses a source without a LIVEDUMP note (not a livedump, or its header
    not written: an aborted dump), one shorter than its headers say, and an
    existing out unless force. out is written under a temporary name and
    renamed when complete, so a partial copy never looks like a dump.
    """
    try:
        core = elfcore.read(source)
    except (elfcore.NotAnElfDump, OSError) as e:
        raise ExtractError(f"{source} does not start with an ELF vmcore: {e}") from None
    if core.livedump() is None:
        raise ExtractError(f"{source} has no LIVEDUMP note: not a (complete) livedump")
    size = core.end
    if out.exists() and not force:
        raise ExtractError(f"{out} exists (use --force to overwrite)")
    tmp = out.with_name(f".{out.name}.partial")
    src = os.open(source, os.O_RDONLY)
    try:
        available = _source_size(src)
        if available < size:
            raise ExtractError(f"{source} holds {available} bytes but the dump needs {size}: truncated")
        done, last_report = 0, 0.0
        with open(tmp, "wb") as dst:
            while done < size:
                chunk = os.pread(src, min(CHUNK, size - done), done)
                if not chunk:
                    raise ExtractError(f"unexpected end of {source} at {done} of {size} bytes")
                dst.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                if progress and (now - last_report > 1 or done == size):
                    progress.write(f"\rextract: {done >> 20}/{size >> 20} MiB ({100 * done // size}%)")
                    progress.flush()
                    last_report = now
            dst.flush()
            os.fsync(dst.fileno())
        if progress:
            progress.write("\n")
        os.replace(tmp, out)
    finally:
        os.close(src)
        tmp.unlink(missing_ok=True)
    return size
