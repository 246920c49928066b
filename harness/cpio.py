"""A newc (SVR4, no CRC) cpio writer for initramfs images.

Written in Python so the rootfs needs neither root nor mknod: device nodes,
owners and modes are simply fields of the archive. Output is deterministic:
entries are sorted, and times and owners are fixed.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive, no leading "/"
    mode: int  # full st_mode, file type included
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0

    @classmethod
    def directory(cls, name: str, perm: int = 0o755) -> Entry:
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> Entry:
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, name: str, target: str) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return cls(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, uid: int, gid: int, nlink: int, size: int, rdev: tuple[int, int],
            namesize: int) -> bytes:
    fields = (ino, mode, uid, gid, nlink, 0, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def write(out: BinaryIO, entries: list[Entry]) -> None:
    """Write entries (parents first, as sorted by name) and the trailer."""
    names = set()
    for e in entries:
        name = e.name.strip("/")
        if not name or name in names:
            raise ValueError(f"bad or duplicate cpio entry name {e.name!r}")
        names.add(name)
    ordered = sorted(entries, key=lambda e: e.name.strip("/").split("/"))
    for ino, e in enumerate(ordered, start=1):
        name = e.name.strip("/").encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        out.write(_header(ino, e.mode, e.uid, e.gid, nlink, len(e.data), e.rdev, len(name)))
        out.write(name + _pad(110 + len(name)))
        out.write(e.data + _pad(len(e.data)))
    name = TRAILER.encode() + b"\0"
    out.write(_header(0, 0, 0, 0, 1, 0, (0, 0), len(name)))
    out.write(name + _pad(110 + len(name)))
