from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import qemu
from harness.errors import ToolMissing
from harness.qemu import AccelChoice, Disk, QemuConfig, choose_accel, probe_kvm


def value_after(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def values_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_defaults(tmp_path):
    argv = QemuConfig(kernel=tmp_path / "bzImage", initrd=tmp_path / "initramfs.cpio").argv()
    assert argv[0] == "qemu-system-x86_64"
    assert value_after(argv, "-smp") == "2"
    assert value_after(argv, "-m") == "512M"
    assert "-no-reboot" in argv
    assert value_after(argv, "-serial") == "stdio"
    assert value_after(argv, "-kernel") == str(tmp_path / "bzImage")
    assert value_after(argv, "-initrd") == str(tmp_path / "initramfs.cpio")
    assert value_after(argv, "-accel") == "tcg"
    assert value_after(argv, "-cpu") == "max"
    assert " ".join(argv).count("-accel tcg -cpu max") == 1
    append = value_after(argv, "-append").split()
    assert "panic=-1" in append and "console=ttyS0" in append
    assert "-qmp" not in argv
    assert "-device" not in argv and "-drive" not in argv


def test_argv_settings(tmp_path):
    cfg = QemuConfig(kernel=tmp_path / "k", accel="kvm", smp=4, memory="2G", append=("livedump.debug=1",),
                     qmp_socket=tmp_path / "qmp.sock", extra=("-s",))
    argv = cfg.argv()
    assert (value_after(argv, "-accel"), value_after(argv, "-cpu")) == ("kvm", "host")
    assert value_after(argv, "-smp") == "4"
    assert value_after(argv, "-m") == "2G"
    assert value_after(argv, "-append").split()[-1] == "livedump.debug=1"
    assert "panic=-1" in value_after(argv, "-append").split()
    assert value_after(argv, "-qmp") == f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"
    assert "-initrd" not in argv
    assert argv[-1] == "-s"


def test_argv_one_virtio_blk_per_disk(tmp_path):
    disks = (Disk(tmp_path / "a.img", 1 << 20), Disk(tmp_path / "b.img", 2 << 20), Disk(tmp_path / "c.img", 4096))
    argv = QemuConfig(kernel=tmp_path / "k", disks=disks).argv()
    drives = values_after(argv, "-drive")
    devices = values_after(argv, "-device")
    assert len(drives) == len(devices) == 3
    for i, (disk, drive, device) in enumerate(zip(disks, drives, devices, strict=True)):
        opts = dict(kv.split("=", 1) for kv in drive.split(","))
        assert opts["file"] == str(disk.path)
        assert opts["format"] == "raw" and opts["if"] == "none"
        assert opts["id"] == f"disk{i}"
        assert device == f"virtio-blk-pci,drive=disk{i},id=vdisk{i}"
        assert "throttling.bps-write" not in opts


def test_a_failing_disk_goes_through_blkdebug(tmp_path):
    disk = Disk(tmp_path / "bad.img", 1 << 20, fail_writes_at_sector=1000)
    opts = dict(kv.split("=", 1) for kv in disk.drive("disk1").split(","))
    assert opts["driver"] == "raw" and opts["id"] == "disk1"
    assert opts["file.driver"] == "blkdebug"
    assert opts["file.image.filename"] == str(disk.path)
    assert (opts["file.inject-error.0.event"], opts["file.inject-error.0.errno"],
            opts["file.inject-error.0.sector"]) == ("write_aio", "5", "1000")


def test_a_slow_disk_is_throttled(tmp_path):
    for disk in (Disk(tmp_path / "slow.img", 1 << 20, write_bytes_per_s=8 << 20),
                 Disk(tmp_path / "slowbad.img", 1 << 20, fail_writes_at_sector=8, write_bytes_per_s=8 << 20)):
        opts = dict(kv.split("=", 1) for kv in disk.drive("disk2").split(","))
        assert opts["throttling.bps-write"] == str(8 << 20)
        assert opts["id"] == "disk2"


def test_disk_create_is_sparse(tmp_path):
    size = 256 << 20
    disk = Disk(tmp_path / "sub" / "dump.img", size)
    disk.create()
    st = disk.path.stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20  # nothing written, so (almost) nothing allocated
    # Creating again resets it to zeros at the same size.
    with open(disk.path, "r+b") as f:
        f.write(b"old dump")
    disk.create()
    assert disk.path.stat().st_size == size
    with open(disk.path, "rb") as f:
        assert f.read(8) == b"\0" * 8


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_choose_accel_explicit_does_not_probe(monkeypatch, accel):
    def boom(*a, **k):
        raise AssertionError("probe_kvm must not run for an explicit --accel")

    monkeypatch.setattr(qemu, "probe_kvm", boom)
    warnings = []
    choice = choose_accel(accel, Path("/nonexistent/bzImage"), warn=warnings.append)
    assert choice == AccelChoice(accel, f"requested with --accel {accel}")
    assert warnings == []


def test_probe_kvm_without_dev_kvm(monkeypatch):
    seen = []

    def no_access(path, mode):
        seen.append(path)
        return False

    monkeypatch.setattr(qemu.os, "access", no_access)

    def no_popen(*a, **k):
        raise AssertionError("QEMU must not start without /dev/kvm")

    monkeypatch.setattr(qemu.subprocess, "Popen", no_popen)
    choice = probe_kvm(Path("/nonexistent/bzImage"))
    assert choice.accel == "tcg"
    assert "/dev/kvm" in choice.reason
    assert seen == ["/dev/kvm"]


def test_choose_accel_auto_warns_on_fallback(monkeypatch):
    monkeypatch.setattr(qemu.os, "access", lambda path, mode: False)
    warnings = []
    choice = choose_accel("auto", Path("/nonexistent/bzImage"), warn=warnings.append)
    assert choice.accel == "tcg"
    assert len(warnings) == 1 and "falling back to TCG" in warnings[0] and choice.reason in warnings[0]


def test_probe_kvm_qemu_that_prints_nothing(monkeypatch, tmp_path):
    """A QEMU that hangs silently (nested KVM stuck in the BIOS) means TCG, within the timeout."""
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'SeaBIOS (version 1.16)'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(qemu.os, "access", lambda path, mode: True)
    choice = probe_kvm(tmp_path / "bzImage", timeout=1.0)
    assert choice.accel == "tcg"
    assert "no kernel output in 1s" in choice.reason
    assert "SeaBIOS" in choice.reason


def test_probe_kvm_qemu_that_boots(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Linux version 6.1.192 (livedump@harness)'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(qemu.os, "access", lambda path, mode: True)
    choice = probe_kvm(tmp_path / "bzImage", timeout=5.0)
    assert choice.accel == "kvm"
    assert "booted to kernel output" in choice.reason


def test_require_qemu_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as ei:
        qemu.require_qemu()
    assert ei.value.stage == "qemu"
    assert ei.value.message == ("qemu-system-x86_64 not found; install the Debian package qemu-system-x86 "
                                "(make setup does)")
    assert ei.value.exit_code == 2


def test_commas_in_paths_are_escaped(tmp_path):
    """A comma in the artifacts path must not split QEMU's option strings."""
    odd = tmp_path / "run,2026" / "disk.img"
    argv = QemuConfig(kernel=tmp_path / "bzImage", disks=(Disk(odd, 1 << 20),),
                      qmp_socket=tmp_path / "a,b" / "qmp.sock").argv()
    drive = argv[argv.index("-drive") + 1]
    assert drive.startswith(f"file={tmp_path}/run,,2026/disk.img,format=raw,")
    assert argv[argv.index("-qmp") + 1] == f"unix:{tmp_path}/a,,b/qmp.sock,server=on,wait=off"
    failing = Disk(odd, 1 << 20, fail_writes_at_sector=8).drive("d0")
    assert f"file.image.filename={tmp_path}/run,,2026/disk.img," in failing
