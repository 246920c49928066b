"""Disk images that hold a file system: made on the host before a boot, read back on the host after it.

A dump to a regular file (``livedump dump /mnt/live.vmcore``) is checked where an SRE would look at it: the
file, copied out of the guest's file system image, not read back through the guest that wrote it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import HarnessError, ToolMissing

# Block size 4096 whatever the image size: mkfs picks 1024 for small file systems, and a dump file's
# blocks are best mapped a page at a time.
MKFS = {"ext4": ("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0")}
FILESYSTEMS = tuple(MKFS)


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise ToolMissing("fsimage", argv[0], "e2fsprogs") from e
    if done.returncode != 0:
        raise HarnessError("fsimage", f"{what}: `{' '.join(argv)}` exited {done.returncode}",
                           detail=done.stderr[-2000:])
    return done


def make(image: Path, filesystem: str) -> None:
    """Put an empty ``filesystem`` on the (sparse, already sized) file ``image``."""
    if filesystem not in MKFS:
        raise HarnessError("fsimage", f"no mkfs for {filesystem!r}; known: {', '.join(FILESYSTEMS)}")
    _run([*MKFS[filesystem], str(image)], f"making {filesystem} on {image.name}")


def copy_out(image: Path, path: str, dest: Path) -> Path:
    """Copy the file at ``path`` (absolute, inside the ext4 ``image``) to ``dest`` with debugfs: no mount,
    no root needed. Raises if the file is not there."""
    dest.unlink(missing_ok=True)
    done = _run(["debugfs", "-R", f"dump -p {path} {dest}", str(image)], f"copying {path} out of {image.name}")
    if not dest.exists():
        raise HarnessError("fsimage", f"{path} is not in {image.name}", detail=done.stderr[-2000:])
    return dest
