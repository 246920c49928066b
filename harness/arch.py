"""What differs between the guest architectures the harness builds and boots, as data.

One frozen :class:`Arch` per architecture: the kernel's ``ARCH=``, the cross
compiler, the QEMU binary and machine, the console, the kernel image, the
guest's busybox, the ELF machine of its dumps, and which host-side dump
readers can read them. The pipeline, the build, the config, the rootfs and
QEMU take their differences from here, so ``x86_64`` (the default) keeps
exactly the words it always had and ``arm64`` is a second row of the table.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from .consistency import UNPROTECTED_ALIASES, UNPROTECTED_USER
from .elfcore import EM_AARCH64, EM_X86_64
from .errors import HarnessError, ToolMissing
from .settings import FRAGMENTS_DIR, Paths


@dataclass(frozen=True)
class Arch:
    name: str  # what --arch takes
    kernel_arch: str  # make ARCH=
    srcarch: str  # the directory under arch/ (what Kconfig's SRCARCH is)
    cross_compile: str  # make CROSS_COMPILE=; "" builds with the host's tools
    compiler_package: str  # the Debian package of the kernel's and the helpers' gcc
    qemu: str
    qemu_package: str
    machine_argv: tuple[str, ...]  # QEMU words naming the machine; () is QEMU's default (x86: pc)
    tcg_cpu: str  # -cpu under TCG; KVM always takes the host's
    console: str  # the guest's serial console device (console=...)
    console_node: tuple[int, int]  # its /dev node (major, minor), in the initramfs before devtmpfs
    early_console: tuple[str, ...]  # kernel words that make the very first output visible (the KVM probe)
    image: str  # the bootable kernel image, relative to the build directory
    image_target: str  # the make target that builds it
    busybox_dir: str  # "" : the host's /bin/busybox; else the extracted package under the cache's downloads
    busybox_runner: tuple[str, ...]  # how the host runs the guest's busybox (to list its applets)
    busybox_runner_package: str
    elf_machine: int  # e_machine of the kernel's vmcores
    kvm_host_machines: tuple[str, ...]  # platform.machine() values on which KVM can run this guest
    com2_hold: bool  # an ISA serial port at 0x2f8 for the oracle's hold socket (LIVEDUMP_INIT_TEST_HOLD)
    # Host dump readers that can read this architecture's dumps: Debian's crash and makedumpfile are built
    # for x86 only.
    host_readers: frozenset[str]
    # Kernel mappings the series' write protection does not cover on this architecture
    # (consistency.UNPROTECTED_*): the consistency checker's invariants behind them are its known gaps.
    unprotected_mappings: frozenset[str] = frozenset()
    # A guest command that prints how the kernel maps RAM, as /proc/meminfo's "DirectMap4k: N kB" lines
    # (4K, 2M, 1G leaves): bench's granularity before, during and after a dump.
    linear_map_cmd: str = "grep DirectMap /proc/meminfo"
    # test_livedump's latency probe (times a fault's work with the TSC): x86 only.
    latency_probe: bool = True

    @property
    def helper_cc(self) -> str:
        """The C compiler for the guest's static helpers."""
        return f"{self.cross_compile}gcc"

    @property
    def cross(self) -> bool:
        return bool(self.cross_compile)

    def build_tag(self) -> str:
        """What the build directory's name adds for this architecture: nothing for x86_64, so that its
        build directories (and their caches) stay what they always were."""
        return "" if self.name == "x86_64" else f"{self.name}-"

    def fragment(self, name: str, fragments_dir: Path = FRAGMENTS_DIR) -> Path:
        """Fragment ``name``: the architecture's own (fragments/<arch>/<name>.config) if it has one,
        else the common one."""
        own = fragments_dir / self.name / f"{name}.config"
        return own if own.is_file() else fragments_dir / f"{name}.config"

    def busybox(self, paths: Paths) -> Path:
        if not self.busybox_dir:
            return Path("/bin/busybox")
        return paths.downloads / self.busybox_dir / "bin" / "busybox"

    def reads(self, reader: str) -> bool:
        return reader in self.host_readers

    def reader_skip_reason(self, reader: str) -> str:
        """Why a host reader does not read this architecture's dumps ("" when it does)."""
        if self.reads(reader):
            return ""
        return f"Debian's {reader} on this host reads x86-64 dumps only, not {self.name} ones"

    def require_compiler(self, stage: str) -> None:
        """The cross compiler, before anything hands it to make (an x86_64 build checks gcc as it always
        did, in build.REQUIRED_TOOLS)."""
        if self.cross and shutil.which(self.helper_cc) is None:
            raise ToolMissing(stage, self.helper_cc, self.compiler_package)

    def require_busybox_runner(self, stage: str) -> None:
        if self.busybox_runner and shutil.which(self.busybox_runner[0]) is None:
            raise ToolMissing(stage, self.busybox_runner[0], self.busybox_runner_package)

    def kvm_usable_here(self, host_machine: str | None = None) -> bool:
        return (host_machine or platform.machine()) in self.kvm_host_machines


X86_64 = Arch(
    name="x86_64", kernel_arch="x86_64", srcarch="x86", cross_compile="", compiler_package="gcc",
    qemu="qemu-system-x86_64", qemu_package="qemu-system-x86", machine_argv=(), tcg_cpu="max",
    console="ttyS0", console_node=(4, 64), early_console=("earlyprintk=ttyS0",),
    image="arch/x86/boot/bzImage", image_target="bzImage",
    busybox_dir="", busybox_runner=(), busybox_runner_package="",
    elf_machine=EM_X86_64, kvm_host_machines=("x86_64",), com2_hold=True,
    host_readers=frozenset({"crash", "makedumpfile"}),
)

ARM64 = Arch(
    name="arm64", kernel_arch="arm64", srcarch="arm64", cross_compile="aarch64-linux-gnu-",
    compiler_package="gcc-aarch64-linux-gnu", qemu="qemu-system-aarch64", qemu_package="qemu-system-arm",
    # GICv3: the only GIC with which the kernel can use pseudo-NMIs (ARM64_PSEUDO_NMI), which livedump's
    # stop must handle. QEMU's virt defaults to GICv2.
    machine_argv=("-M", "virt,gic-version=3"),
    # cortex-a57 rather than max: a plain ARMv8.0 CPU, which TCG emulates faster than max's pointer
    # authentication and MTE, and which the GICv3 CPU interface works with (pseudo-NMI needs only that).
    tcg_cpu="cortex-a57",
    console="ttyAMA0", console_node=(204, 64), early_console=("earlycon",),
    image="arch/arm64/boot/Image", image_target="Image",
    busybox_dir="arm64/busybox-static", busybox_runner=("qemu-aarch64-static",),
    busybox_runner_package="qemu-user-static",
    elf_machine=EM_AARCH64, kvm_host_machines=("aarch64",), com2_hold=False,
    host_readers=frozenset(),
    # arch/arm64/mm/wrprotect.c protects the linear map and the image's data only (livedump.rst, "arm64").
    unprotected_mappings=frozenset({UNPROTECTED_ALIASES, UNPROTECTED_USER}),
    # arm64 has no DirectMap lines: the leaves of the linear map, from the kernel's page table dump
    # (CONFIG_PTDUMP_DEBUGFS), summed per level, mapped ranges only (MEM/ attributes), in their format.
    linear_map_cmd=("awk '/Linear Mapping start/ {f = 1; next} /Linear Mapping end/ {f = 0} "
                    "f && /MEM\\// && $2 ~ /^[0-9]+[KMGT]$/ {u = substr($2, length($2)); "
                    "n = substr($2, 1, length($2) - 1) * (u == \"K\" ? 1 : u == \"M\" ? 1024 : "
                    "u == \"G\" ? 1048576 : 1073741824); kb[$3] += n} "
                    "END {printf \"DirectMap4k: %d kB\\nDirectMap2M: %d kB\\nDirectMap1G: %d kB\\n\", "
                    "kb[\"PTE\"], kb[\"PMD\"], kb[\"PUD\"]}' /sys/kernel/debug/kernel_page_tables"),
    latency_probe=False,
)

ARCHES = {"x86_64": X86_64, "arm64": ARM64}
DEFAULT = X86_64


def by_name(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise HarnessError("arch", f"unknown architecture {name!r}; known: {', '.join(ARCHES)}") from None


def by_elf_machine(machine: int) -> Arch | None:
    return next((a for a in ARCHES.values() if a.elf_machine == machine), None)
