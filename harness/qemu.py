"""QEMU command lines as data, and an honest KVM probe.

KVM is only used after a real boot attempt shows kernel output within a few
seconds: on nested setups ``/dev/kvm`` exists and QEMU still hangs in the
BIOS. Falling back to TCG is announced loudly and recorded in result.json.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import fsimage
from .errors import ToolMissing

QEMU = "qemu-system-x86_64"
# loglevel=5: warnings and worse reach the console (the harness scans them),
# routine boot chatter stays in the ring buffer and out of command output.
BASE_APPEND = ("console=ttyS0", "panic=-1", "oops=panic", "loglevel=5", "printk.time=1")


def opt_value(value: object) -> str:
    """A value inside a QEMU option string (``-drive file=...``, ``-qmp unix:...``): QEMU splits options at
    commas, and a literal comma is written twice."""
    return str(value).replace(",", ",,")


@dataclass(frozen=True)
class Disk:
    """A virtio-blk disk backed by a sparse raw file."""

    path: Path
    size: int  # bytes
    # Fail every write that touches this 512-byte sector with EIO (QEMU's blkdebug): a target going bad.
    fail_writes_at_sector: int | None = None
    # Cap writes at this many bytes per second (QEMU's I/O throttling): a slow target, so that a dump to
    # it lasts long enough for something to happen mid-sweep (a hot-unplug).
    write_bytes_per_s: int | None = None
    # Made with this file system (fsimage.FILESYSTEMS) each time it is created: a guest disk to mount.
    filesystem: str | None = None

    def drive(self, drive_id: str) -> str:
        """The -drive option for this disk."""
        common = f"if=none,id={drive_id},cache=unsafe"
        if self.write_bytes_per_s is not None:
            common += f",throttling.bps-write={self.write_bytes_per_s}"
        if self.fail_writes_at_sector is None:
            return f"file={opt_value(self.path)},format=raw,{common}"
        return (f"driver=raw,{common},file.driver=blkdebug,file.image.driver=file,"
                f"file.image.filename={opt_value(self.path)},"
                f"file.inject-error.0.event=write_aio,file.inject-error.0.errno=5,"
                f"file.inject-error.0.sector={self.fail_writes_at_sector}")

    def create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as f:
            f.truncate(self.size)
        if self.filesystem is not None:
            fsimage.make(self.path, self.filesystem)


def device_id(index: int) -> str:
    """The QEMU device id of the index-th disk (what QMP's device_del names)."""
    return f"vdisk{index}"


@dataclass(frozen=True)
class QemuConfig:
    kernel: Path
    initrd: Path | None = None
    accel: str = "tcg"  # "kvm" or "tcg"
    smp: int = 2
    memory: str = "512M"
    disks: tuple[Disk, ...] = ()
    append: tuple[str, ...] = ()
    qmp_socket: Path | None = None
    # COM2 (I/O port 0x2f8) on a unix socket: LIVEDUMP_INIT_TEST_HOLD announces the snapshot instant there
    # and waits for a byte back (the oracle).
    hold_socket: Path | None = None
    extra: tuple[str, ...] = field(default=())

    def argv(self) -> list[str]:
        argv = [QEMU, "-nodefaults", "-display", "none", "-no-reboot",
                "-accel", self.accel, "-cpu", "host" if self.accel == "kvm" else "max",
                "-smp", str(self.smp), "-m", self.memory,
                "-serial", "stdio",
                "-kernel", str(self.kernel),
                "-append", " ".join(BASE_APPEND + self.append)]
        if self.initrd is not None:
            argv += ["-initrd", str(self.initrd)]
        for i, disk in enumerate(self.disks):
            argv += ["-drive", disk.drive(f"disk{i}"), "-device", f"virtio-blk-pci,drive=disk{i},id={device_id(i)}"]
        if self.qmp_socket is not None:
            argv += ["-qmp", f"unix:{opt_value(self.qmp_socket)},server=on,wait=off"]
        if self.hold_socket is not None:
            argv += ["-chardev", f"socket,id=hold,path={opt_value(self.hold_socket)},server=on,wait=off",
                     "-device", "isa-serial,chardev=hold,iobase=0x2f8,irq=3"]
        return argv + list(self.extra)


def require_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise ToolMissing("qemu", QEMU, "qemu-system-x86")
    return path


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str


def probe_kvm(kernel: Path, timeout: float = 8.0) -> AccelChoice:
    """Boot ``kernel`` under KVM until it prints; any failure means TCG."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "/dev/kvm is missing or not accessible")
    argv = QemuConfig(kernel=kernel, accel="kvm", smp=1, memory="128M",
                      append=("earlyprintk=ttyS0",)).argv()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    except OSError as e:
        return AccelChoice("tcg", f"KVM probe could not start QEMU: {e}")
    seen = b""
    try:
        while time.monotonic() - start < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                if b"Linux version" in seen:
                    return AccelChoice("kvm", f"KVM probe booted to kernel output in {time.monotonic() - start:.1f}s")
        tail = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return AccelChoice("tcg", f"KVM probe showed no kernel output in {timeout:.0f}s ({tail[0]})")
    finally:
        proc.kill()
        proc.wait()


def choose_accel(requested: str, kernel: Path, *, warn=lambda msg: print(msg, file=sys.stderr)) -> AccelChoice:
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, f"requested with --accel {requested}")
    choice = probe_kvm(kernel)
    if choice.accel == "tcg":
        warn(f"WARNING: KVM unusable, falling back to TCG (slow, software emulation): {choice.reason}")
    return choice
