"""harness/fsimage.py: ext4 images made on the host and files copied back out of them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness import fsimage
from harness.errors import HarnessError
from harness.qemu import Disk

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                                reason="e2fsprogs is not installed (make setup installs it)")

EXT4_MAGIC_OFFSET = 1024 + 0x38  # superblock at 1 KiB, s_magic at 0x38


def ext4_magic(image) -> bytes:
    with open(image, "rb") as f:
        f.seek(EXT4_MAGIC_OFFSET)
        return f.read(2)


def test_a_disk_with_a_file_system_is_made_each_time_it_is_created(tmp_path):
    disk = Disk(tmp_path / "fs.img", 16 << 20, filesystem="ext4")
    disk.create()
    assert ext4_magic(disk.path) == b"\x53\xef"
    # A plain disk is all zeros: no file system.
    plain = Disk(tmp_path / "raw.img", 16 << 20)
    plain.create()
    assert ext4_magic(plain.path) == b"\0\0"


def test_a_file_written_into_the_image_comes_back_out_unchanged(tmp_path):
    image = tmp_path / "fs.img"
    Disk(image, 16 << 20, filesystem="ext4").create()
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(256)) * 4099)
    subprocess.run(["debugfs", "-w", "-R", f"write {payload} /live.vmcore", str(image)], check=True,
                   capture_output=True)
    out = fsimage.copy_out(image, "/live.vmcore", tmp_path / "copy")
    assert out.read_bytes() == payload.read_bytes()


def test_a_file_that_is_not_in_the_image_is_an_error_not_an_empty_copy(tmp_path):
    image = tmp_path / "fs.img"
    Disk(image, 16 << 20, filesystem="ext4").create()
    stale = tmp_path / "copy"
    stale.write_bytes(b"from an earlier run")
    with pytest.raises(HarnessError, match="not in fs.img"):
        fsimage.copy_out(image, "/live.vmcore", stale)
    assert not stale.exists()


def test_an_unknown_file_system_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="no mkfs for 'xfs'"):
        fsimage.make(tmp_path / "x.img", "xfs")
