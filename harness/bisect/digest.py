"""A digest of a kernel image that two builds of the same code share: is the culprit's kernel its parent's?"""

from __future__ import annotations

import hashlib
import mmap
import re
import struct
from pathlib import Path

_SHF_ALLOC = 0x2
_SHT_NOBITS = 8
_SKIP_SECTIONS = {".notes"}  # the build id hashes the whole link, build number included


def image_digest(vmlinux: Path, build_dir: Path | None = None) -> str:
    """sha256 of vmlinux's loaded sections, ignoring what differs between two builds of the same code.

    Every link bumps the build number (``#N`` in UTS_VERSION) and with it the
    build id; both are masked so an unchanged tree gives the same digest.
    """
    with open(vmlinux, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _section_digest(data, build_dir)


def _section_digest(data, build_dir: Path | None) -> str:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return hashlib.sha256(data[:]).hexdigest()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = sections[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    version = b""
    if build_dir is not None:
        for name in ("utsversion.h", "compile.h"):  # 6.1 has it in utsversion.h, older kernels in compile.h
            header = build_dir / "include" / "generated" / name
            m = re.search(r'UTS_VERSION "([^"]*)"', header.read_text(errors="replace")) if header.is_file() else None
            if m:
                version = m.group(1).encode()
                break
    h = hashlib.sha256()
    for name_off, sh_type, flags, _addr, offset, size, *_ in sections:
        name = names[name_off:names.index(b"\0", name_off)].decode(errors="replace")
        if not flags & _SHF_ALLOC or sh_type == _SHT_NOBITS or name in _SKIP_SECTIONS:
            continue
        body = data[offset:offset + size]
        if version:
            body = body.replace(version, b"\0" * len(version))
        h.update(name.encode() + b"\0" + body)
    return h.hexdigest()
