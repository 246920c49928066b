"""QEMU command lines as data, and an honest KVM probe.

KVM is only used after a real boot attempt shows kernel output within a few
seconds: on nested setups ``/dev/kvm`` exists and QEMU still hangs in the
BIOS. Falling back to TCG is announced loudly and recorded in result.json.
A guest of another architecture than the host's (arm64 on x86-64) runs under
TCG only: there is nothing to probe.

The machine, CPU, console and binary come from :mod:`harness.arch`.
"""

from __future__ import annotations

import os
import platform
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import fsimage
from .arch import DEFAULT as DEFAULT_ARCH
from .arch import Arch
from .errors import HarnessError, ToolMissing

QEMU = DEFAULT_ARCH.qemu
# loglevel=5: warnings and worse reach the console (the harness scans them),
# routine boot chatter stays in the ring buffer and out of command output.
COMMON_APPEND = ("panic=-1", "oops=panic", "loglevel=5", "printk.time=1")
# arm64: the kernel uses pseudo-NMIs (GICv3 priority masking) only when asked; livedump's stop must work
# with them, so the guest runs with them as a production arm64 kernel that enables them does.
ARCH_APPEND = {"arm64": ("irqchip.gicv3_pseudo_nmi=1",)}


def base_append(arch: Arch = DEFAULT_ARCH) -> tuple[str, ...]:
    """The harness's own kernel command line for a guest of ``arch``."""
    return (f"console={arch.console}", *COMMON_APPEND, *ARCH_APPEND.get(arch.name, ()))


BASE_APPEND = base_append()


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
    arch: Arch = DEFAULT_ARCH

    def __post_init__(self) -> None:
        if self.hold_socket is not None:
            require_hold_support(self.arch)

    def argv(self) -> list[str]:
        arch = self.arch
        argv = [arch.qemu, "-nodefaults", "-display", "none", "-no-reboot", *arch.machine_argv,
                "-accel", self.accel, "-cpu", "host" if self.accel == "kvm" else arch.tcg_cpu,
                "-smp", str(self.smp), "-m", self.memory,
                "-serial", "stdio",
                "-kernel", str(self.kernel),
                "-append", " ".join(base_append(arch) + self.append)]
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


def require_hold_support(arch: Arch) -> None:
    if not arch.com2_hold:
        raise HarnessError("qemu", f"the hold socket (COM2 at I/O port 0x2f8, LIVEDUMP_INIT_TEST_HOLD: the "
                           f"oracle) is x86 only; an {arch.name} guest has no ISA serial port")


def require_qemu(arch: Arch = DEFAULT_ARCH) -> str:
    path = shutil.which(arch.qemu)
    if path is None:
        raise ToolMissing("qemu", arch.qemu, arch.qemu_package)
    return path


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str


def probe_kvm(kernel: Path, timeout: float = 8.0, arch: Arch = DEFAULT_ARCH) -> AccelChoice:
    """Boot ``kernel`` under KVM until it prints; any failure means TCG."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "/dev/kvm is missing or not accessible")
    argv = QemuConfig(kernel=kernel, accel="kvm", smp=1, memory="128M",
                      append=arch.early_console, arch=arch).argv()
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


def require_accel_possible(requested: str, arch: Arch = DEFAULT_ARCH, host_machine: str | None = None) -> None:
    if requested == "kvm" and not arch.kvm_usable_here(host_machine):
        raise HarnessError("qemu", f"KVM cannot run an {arch.name} guest on this {host_machine or platform.machine()} "
                           "host; use --accel tcg")


def choose_accel(requested: str, kernel: Path, *, warn=lambda msg: print(msg, file=sys.stderr),
                 arch: Arch = DEFAULT_ARCH, host_machine: str | None = None) -> AccelChoice:
    require_accel_possible(requested, arch, host_machine)
    foreign = not arch.kvm_usable_here(host_machine)
    host = host_machine or platform.machine()
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, f"requested with --accel {requested}")
    if foreign:
        # Expected, not a fallback: no warning.
        return AccelChoice("tcg", f"an {arch.name} guest on an {host} host runs under TCG (KVM cannot run it)")
    choice = probe_kvm(kernel, arch=arch)
    if choice.accel == "tcg":
        warn(f"WARNING: KVM unusable, falling back to TCG (slow, software emulation): {choice.reason}")
    return choice
