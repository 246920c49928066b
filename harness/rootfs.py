"""The guest initramfs: busybox-static, the overlay, the tools, static helpers.

The same ``buildroot-config/rootfs-overlay`` is used by the Buildroot
defconfig (``BR2_ROOTFS_OVERLAY``) for people who build the rootfs with
Buildroot; here it is packed directly with :mod:`harness.cpio`.

For another architecture than the host's (``--arch arm64``) the helpers are
built with its cross gcc, busybox is that architecture's (extracted by
``make setup``), and its applets are listed by running it under
qemu-user.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import cpio
from .arch import DEFAULT as DEFAULT_ARCH
from .arch import Arch
from .errors import HarnessError, ToolMissing
from .runner import Runner
from .settings import REPO_ROOT, ROOTFS_OVERLAY, TOOLS_DIR

HELPERS_DIR = REPO_ROOT / "buildroot-config" / "helpers"
BASE_DIRS = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc",
             "mnt", "var")
# Nodes needed before /init mounts devtmpfs (the kernel opens /dev/console itself).
DEVICE_NODES = (("dev/console", 5, 1, 0o600), ("dev/null", 1, 3, 0o666), ("dev/ttyS0", 4, 64, 0o600))


def device_nodes(arch: Arch = DEFAULT_ARCH) -> tuple[tuple[str, int, int, int], ...]:
    """DEVICE_NODES and the architecture's serial console (arm64's PL011: ttyAMA0, 204:64) beside ttyS0."""
    console = (f"dev/{arch.console}", *arch.console_node, 0o600)
    return DEVICE_NODES if console in DEVICE_NODES else (*DEVICE_NODES, console)


class RootfsError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("rootfs", message, detail=detail)


@dataclass(frozen=True)
class RootfsSpec:
    busybox: Path = Path("/bin/busybox")
    overlay: Path = ROOTFS_OVERLAY
    # C sources built with gcc -static into /usr/bin/<stem>.
    helpers: tuple[Path, ...] = field(default_factory=lambda: default_helpers())
    # Files installed as they are: archive path -> host path.
    scripts: dict[str, Path] = field(default_factory=dict)
    # -I directories for the helpers (the kernel's installed uapi headers).
    include_dirs: tuple[Path, ...] = ()
    # Whose busybox (its runner lists the applets), compiler and console node.
    arch: Arch = DEFAULT_ARCH


def default_helpers() -> tuple[Path, ...]:
    return tuple(sorted(HELPERS_DIR.glob("*.c")))


def livedump_tool(headers: Path) -> tuple[tuple[Path, ...], dict[str, Path]]:
    """The guest tool and its ioctl helper, if this kernel has the livedump uapi.

    A kernel without the series (``--kernel-src`` on a plain tree) still gets
    a guest, just without the tool.
    """
    tool = TOOLS_DIR / "livedump"
    if not (headers / "linux" / "livedump.h").is_file() or not tool.is_file():
        return (), {}
    return tuple(sorted(TOOLS_DIR.glob("*.c"))), {"usr/bin/livedump": tool}


# Modules the guest loads (archive path -> path in the kernel's build directory), when the kernel has them:
# test_livedump_module lends its data to the torture load (harness/dump.py's torture()).
GUEST_MODULES = {"lib/modules/test_livedump_module.ko": "lib/test_livedump_module.ko"}


def kernel_modules(build_dir: Path) -> dict[str, Path]:
    """The GUEST_MODULES this kernel built."""
    return {dest: build_dir / rel for dest, rel in GUEST_MODULES.items() if (build_dir / rel).is_file()}


def is_static_elf(path: Path) -> bool:
    """True for an ELF64 executable without PT_INTERP (no dynamic loader)."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", ident, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", ident, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, = struct.unpack("<I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def elf_machine(path: Path) -> int:
    with open(path, "rb") as f:
        ident = f.read(20)
    return struct.unpack_from("<H", ident, 18)[0] if len(ident) == 20 and ident[:4] == b"\x7fELF" else -1


def busybox_entries(busybox: Path, runner: Runner, arch: Arch = DEFAULT_ARCH) -> list[cpio.Entry]:
    if not busybox.is_file():
        if arch.busybox_dir:
            raise RootfsError(f"no {arch.name} busybox at {busybox}: make setup (scripts/setup.sh) downloads "
                              f"busybox-static:{arch.name} and extracts it there")
        raise ToolMissing("rootfs", str(busybox), "busybox-static")
    if not is_static_elf(busybox):
        raise RootfsError(f"{busybox} is not a static executable; install busybox-static")
    if elf_machine(busybox) != arch.elf_machine:
        raise RootfsError(f"{busybox} is not an {arch.name} executable (ELF machine {elf_machine(busybox)}, "
                          f"expected {arch.elf_machine})")
    arch.require_busybox_runner("rootfs")
    listing = runner.run([*arch.busybox_runner, str(busybox), "--list-full"], capture=True,
                         mutates=False).stdout.split()
    entries = [cpio.Entry.file("bin/busybox", busybox.read_bytes(), 0o755)]
    for applet in listing:
        if applet != "bin/busybox":
            entries.append(cpio.Entry.symlink(applet, "/bin/busybox"))
    return entries


def overlay_entries(overlay: Path) -> list[cpio.Entry]:
    entries = []
    for root, dirs, files in os.walk(overlay):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            host = Path(root) / name
            rel = host.relative_to(overlay).as_posix()
            st = host.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append(cpio.Entry.symlink(rel, os.readlink(host)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(cpio.Entry.directory(rel, stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode):
                entries.append(cpio.Entry.file(rel, host.read_bytes(), stat.S_IMODE(st.st_mode)))
            else:
                raise RootfsError(f"{host}: only files, directories and symlinks belong in the overlay")
    return entries


def compile_helper(source: Path, out: Path, include_dirs: tuple[Path, ...], runner: Runner,
                   arch: Arch = DEFAULT_ARCH) -> None:
    cc = arch.helper_cc
    if shutil.which(cc) is None:
        raise ToolMissing("rootfs", cc, arch.compiler_package)
    argv = [cc, "-static", "-O2", "-Wall", "-Werror", *(f"-I{d}" for d in include_dirs), "-o", str(out),
            str(source)]
    r = runner.run(argv, check=False, capture=True)
    if r.returncode != 0:
        raise RootfsError(f"cannot compile {source.name}", detail=(r.stderr or "").strip())


def build(spec: RootfsSpec, out: Path, runner: Runner) -> Path:
    entries: dict[str, cpio.Entry] = {}

    def add(e: cpio.Entry) -> None:
        entries[e.name.strip("/")] = e  # later sources override earlier ones

    for d in BASE_DIRS:
        add(cpio.Entry.directory(d, 0o1777 if d == "tmp" else 0o755))
    for name, major, minor, perm in device_nodes(spec.arch):
        add(cpio.Entry.char_device(name, major, minor, perm))
    for e in busybox_entries(spec.busybox, runner, spec.arch):
        add(e)
    for e in overlay_entries(spec.overlay):
        add(e)
    for dest, host in spec.scripts.items():
        add(cpio.Entry.file(dest, host.read_bytes(), 0o755))
    with tempfile.TemporaryDirectory(prefix="livedump-helpers-") as tmp:
        for source in spec.helpers:
            binary = Path(tmp) / source.stem
            compile_helper(source, binary, spec.include_dirs, runner, spec.arch)
            if not runner.dry_run:
                add(cpio.Entry.file(f"usr/bin/{source.stem}", binary.read_bytes(), 0o755))
    if "init" not in entries:
        raise RootfsError(f"no /init: {spec.overlay}/init is missing")
    # Every parent directory must exist in the archive before its children.
    for name in list(entries):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            entries.setdefault(parent, cpio.Entry.directory(parent))
    if runner.dry_run:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    with open(tmp_out, "wb") as f:
        cpio.write(f, list(entries.values()))
    tmp_out.replace(out)
    return out
