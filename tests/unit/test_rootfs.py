from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness import rootfs
from harness.errors import ToolMissing
from harness.rootfs import RootfsError, RootfsSpec, is_static_elf, overlay_entries

FAKE_BUSYBOX_C = '#include <stdio.h>\nint main(void) { puts("bin/busybox"); puts("bin/sh"); ' \
                 'puts("usr/sbin/chroot"); return 0; }\n'


@pytest.fixture(scope="module")
def static_busybox(tmp_path_factory) -> Path:
    """A static executable that answers --list-full like busybox does."""
    d = tmp_path_factory.mktemp("busybox")
    (d / "bb.c").write_text(FAKE_BUSYBOX_C)
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "busybox"), str(d / "bb.c")], capture_output=True)
    if r.returncode != 0:
        pytest.skip("gcc -static does not work here (no static libc)")
    return d / "busybox"


def test_is_static_elf(static_busybox, tmp_path):
    assert is_static_elf(static_busybox)
    dynamic = Path(shutil.which("sh") or "/bin/sh").resolve()
    assert not is_static_elf(dynamic)
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n" + "x" * 100)
    assert not is_static_elf(script)
    (tmp_path / "short").write_bytes(b"\x7fELF")
    assert not is_static_elf(tmp_path / "short")


def test_overlay_entries(tmp_path):
    ov = tmp_path / "overlay"
    (ov / "etc" / "init.d").mkdir(parents=True)
    (ov / "init").write_text("#!/bin/sh\n")
    (ov / "init").chmod(0o755)
    (ov / "etc" / "init.d" / "rcS").write_text("mount -a\n")
    (ov / "etc" / "init.d" / "rcS").chmod(0o700)
    (ov / "etc" / "mtab").symlink_to("/proc/mounts")
    entries = {e.name: e for e in overlay_entries(ov)}
    assert set(entries) == {"init", "etc", "etc/init.d", "etc/init.d/rcS", "etc/mtab"}
    assert entries["init"].data == b"#!/bin/sh\n"
    assert stat.S_IMODE(entries["init"].mode) == 0o755 and stat.S_ISREG(entries["init"].mode)
    assert stat.S_IMODE(entries["etc/init.d/rcS"].mode) == 0o700
    assert stat.S_ISLNK(entries["etc/mtab"].mode) and entries["etc/mtab"].data == b"/proc/mounts"
    assert stat.S_ISDIR(entries["etc/init.d"].mode)


def test_overlay_rejects_special_files(tmp_path):
    ov = tmp_path / "overlay"
    ov.mkdir()
    os.mkfifo(ov / "fifo")
    with pytest.raises(RootfsError) as ei:
        overlay_entries(ov)
    assert "only files, directories and symlinks" in str(ei.value)


def test_repo_overlay_has_init():
    names = {e.name for e in overlay_entries(rootfs.ROOTFS_OVERLAY)}
    assert "init" in names


def make_overlay(tmp_path: Path, *, init: bool = True) -> Path:
    ov = tmp_path / "overlay"
    (ov / "etc").mkdir(parents=True)
    (ov / "etc" / "motd").write_text("hi\n")
    if init:
        (ov / "init").write_text("#!/bin/sh\necho 'livedump-guest: ready'\nexec sh\n")
        (ov / "init").chmod(0o755)
    return ov


def test_build_initramfs(tmp_path, static_busybox, runner):
    tool = tmp_path / "livedump-tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    spec = RootfsSpec(busybox=static_busybox, overlay=make_overlay(tmp_path), helpers=(),
                      scripts={"usr/local/bin/livedump": tool})
    out = rootfs.build(spec, tmp_path / "run" / "initramfs.cpio", runner)
    listing = subprocess.run(["cpio", "-tv", "--quiet"], stdin=open(out, "rb"), capture_output=True, text=True,
                             check=True).stdout.splitlines()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing]
    for must in ("init", "bin/busybox", "bin/sh", "usr/sbin/chroot", "dev/console", "dev/null", "etc/motd",
                 "usr/local", "usr/local/bin", "usr/local/bin/livedump", "tmp"):
        assert must in names, must
    assert names.count("bin/busybox") == 1
    by = dict(zip(names, listing, strict=True))
    assert by["bin/sh"].endswith("bin/sh -> /bin/busybox")
    assert by["tmp"].startswith("drwxrwxrwt")
    assert by["dev/console"].startswith("crw-------")
    assert by["usr/local/bin/livedump"].startswith("-rwxr-xr-x")
    # Parents before children, for the kernel's unpacker.
    assert names.index("usr/local") < names.index("usr/local/bin") < names.index("usr/local/bin/livedump")
    assert not out.with_suffix(".tmp").exists()
    # Same inputs, same bytes.
    first = out.read_bytes()
    rootfs.build(spec, out, runner)
    assert out.read_bytes() == first


def test_build_without_init(tmp_path, static_busybox, runner):
    spec = RootfsSpec(busybox=static_busybox, overlay=make_overlay(tmp_path, init=False), helpers=())
    with pytest.raises(RootfsError) as ei:
        rootfs.build(spec, tmp_path / "initramfs.cpio", runner)
    assert "no /init" in str(ei.value)
    assert not (tmp_path / "initramfs.cpio").exists()


def test_build_rejects_dynamic_or_missing_busybox(tmp_path, runner):
    overlay = make_overlay(tmp_path)
    spec = RootfsSpec(busybox=Path("/bin/sh").resolve(), overlay=overlay, helpers=())
    with pytest.raises(RootfsError) as ei:
        rootfs.build(spec, tmp_path / "i.cpio", runner)
    assert "is not a static executable; install busybox-static" in str(ei.value)
    spec = RootfsSpec(busybox=tmp_path / "nope", overlay=overlay, helpers=())
    with pytest.raises(ToolMissing) as ei:
        rootfs.build(spec, tmp_path / "i.cpio", runner)
    assert "busybox-static" in str(ei.value)


def test_helper_compile_error_is_reported(tmp_path, static_busybox, runner):
    bad = tmp_path / "broken.c"
    bad.write_text("int main(void) { return undeclared; }\n")
    spec = RootfsSpec(busybox=static_busybox, overlay=make_overlay(tmp_path), helpers=(bad,))
    with pytest.raises(RootfsError) as ei:
        rootfs.build(spec, tmp_path / "i.cpio", runner)
    assert ei.value.message == "cannot compile broken.c"
    assert "undeclared" in ei.value.detail


def test_livedump_tool_needs_the_uapi_header(tmp_path):
    assert rootfs.livedump_tool(tmp_path) == ((), {})


def test_the_guest_gets_the_modules_the_kernel_built(tmp_path):
    assert rootfs.kernel_modules(tmp_path) == {}  # a kernel from before the module, or without modules
    ko = tmp_path / "lib" / "test_livedump_module.ko"
    ko.parent.mkdir()
    ko.write_bytes(b"\x7fELF")
    assert rootfs.kernel_modules(tmp_path) == {"lib/modules/test_livedump_module.ko": ko}
