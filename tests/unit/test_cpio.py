from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness import cpio
from harness.cpio import Entry

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the system cpio")

ENTRIES = [
    Entry.directory("bin"),
    Entry.directory("dev"),
    Entry.directory("etc"),
    Entry.file("init", b"#!/bin/sh\necho hello from init\n", perm=0o755),
    Entry.file("etc/motd", b"welcome\n"),
    Entry.file("etc/secret", b"s3cret", perm=0o600),
    Entry.file("etc/empty", b""),
    Entry.file("bin/odd", b"x" * 5, perm=0o750),  # sizes that need padding
    Entry.symlink("bin/sh", "busybox"),
    Entry.file("bin/busybox", bytes(range(256)) * 3, perm=0o755),
    Entry.char_device("dev/console", 5, 1),
    Entry.char_device("dev/ttyS0", 4, 64, perm=0o620),
]


def archive(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    cpio.write(buf, entries)
    return buf.getvalue()


@pytest.fixture
def image(tmp_path) -> Path:
    p = tmp_path / "initramfs.cpio"
    p.write_bytes(archive(ENTRIES))
    return p


def cpio_run(args: list[str], image: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    with open(image, "rb") as f:
        return subprocess.run(["cpio", *args], stdin=f, cwd=cwd, capture_output=True, text=True, check=True)


def test_cpio_lists_every_entry_in_order(image):
    names = cpio_run(["-t", "--quiet"], image).stdout.split()
    expected = sorted((e.name for e in ENTRIES), key=lambda n: n.split("/"))
    assert names == expected
    # Parents come before their children.
    assert names.index("etc") < names.index("etc/motd")


def test_cpio_extracts_contents_modes_and_symlinks(tmp_path, image):
    out = tmp_path / "x"
    out.mkdir()
    # Device nodes cannot be made without root; extract everything else.
    r = cpio_run(["-idv", "--no-absolute-filenames", "--quiet", "--nonmatching", "dev/*"], image, cwd=out)
    assert "init" in r.stderr.split()
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hello from init\n"
    assert (out / "etc" / "motd").read_text() == "welcome\n"
    assert (out / "etc" / "empty").read_bytes() == b""
    assert (out / "bin" / "odd").read_bytes() == b"xxxxx"
    assert (out / "bin" / "busybox").read_bytes() == bytes(range(256)) * 3
    assert stat.S_IMODE((out / "init").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "etc" / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "bin" / "odd").stat().st_mode) == 0o750
    assert (out / "bin" / "sh").is_symlink()
    assert os.readlink(out / "bin" / "sh") == "busybox"
    assert (out / "etc").is_dir()


def test_cpio_lists_device_major_minor_and_modes(image):
    lines = cpio_run(["-tv", "--quiet"], image).stdout.splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in lines}
    console = by_name["dev/console"].split()
    assert console[0] == "crw-------"
    assert (console[4], console[5]) == ("5,", "1")
    tty = by_name["dev/ttyS0"].split()
    assert tty[0] == "crw--w----"
    assert (tty[4], tty[5]) == ("4,", "64")
    assert by_name["bin/sh"].startswith("lrwxrwxrwx") and by_name["bin/sh"].endswith("bin/sh -> busybox")
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["etc"].startswith("drwxr-xr-x")
    # Owners are fixed to root.
    assert all(line.split()[2:4] == ["root", "root"] for line in lines)


def test_cpio_is_deterministic():
    shuffled = ENTRIES[::-1]
    shuffled = shuffled[1::2] + shuffled[::2]
    assert shuffled != ENTRIES
    assert archive(shuffled) == archive(ENTRIES)


def test_cpio_content_changes_the_bytes():
    other = [e if e.name != "etc/motd" else Entry.file("etc/motd", b"welcome!\n") for e in ENTRIES]
    assert archive(other) != archive(ENTRIES)


def test_cpio_alignment_and_trailer():
    data = archive(ENTRIES)
    assert len(data) % 4 == 0
    # Walk the headers: every header starts 4-byte aligned with the newc magic.
    offset, names = 0, []
    while True:
        assert offset % 4 == 0
        header = data[offset:offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = data[offset + 110: offset + 110 + namesize]
        assert name.endswith(b"\0")
        names.append(name[:-1].decode())
        data_start = offset + 110 + namesize
        data_start += -data_start % 4
        assert data_start % 4 == 0
        offset = data_start + size
        offset += -offset % 4
        if names[-1] == "TRAILER!!!":
            break
    assert offset == len(data)
    assert len(names) == len(ENTRIES) + 1


def test_cpio_leading_slash_is_stripped(tmp_path):
    p = tmp_path / "a.cpio"
    p.write_bytes(archive([Entry.directory("/etc/"), Entry.file("/etc/x", b"1")]))
    assert cpio_run(["-t", "--quiet"], p).stdout.split() == ["etc", "etc/x"]


@pytest.mark.parametrize("entries", [
    [Entry.file("etc/x", b"1"), Entry.file("etc/x", b"2")],
    [Entry.directory("etc"), Entry.directory("/etc/")],
    [Entry.file("/", b"")],
])
def test_cpio_rejects_duplicate_or_empty_names(entries):
    with pytest.raises(ValueError, match="bad or duplicate cpio entry name"):
        archive(entries)
