"""harness.arch: what differs between x86_64 and arm64 guests, and how the stages use it.

x86_64 must keep every word it had before other architectures (argv, make variables, build directory,
Kconfig environment): its builds stay up to date and its logs comparable. The expected x86 values here are
literal, copied from the harness as it was before --arch.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from harness import arch, build, cli, dumpcheck, kconfig, qemu, rootfs, validate
from harness import pipeline as pipeline_mod
from harness.arch import ARCHES, ARM64, X86_64
from harness.artifacts import Run
from harness.errors import HarnessError, ToolMissing
from harness.qemu import AccelChoice, Disk, QemuConfig
from harness.runner import Runner
from harness.settings import FRAGMENTS_DIR, Paths

# -- the table ---------------------------------------------------------------


def test_the_table_has_both_arches_under_their_names():
    assert set(ARCHES) == {"x86_64", "arm64"}
    assert all(a.name == name for name, a in ARCHES.items())
    assert arch.DEFAULT is X86_64
    assert arch.by_name("arm64") is ARM64
    with pytest.raises(HarnessError, match="unknown architecture 'riscv64'; known: x86_64, arm64"):
        arch.by_name("riscv64")


def test_arch_facts():
    assert (X86_64.image, X86_64.image_target, X86_64.console, X86_64.helper_cc, X86_64.elf_machine) == \
        ("arch/x86/boot/bzImage", "bzImage", "ttyS0", "gcc", 62)
    assert (ARM64.image, ARM64.image_target, ARM64.console, ARM64.helper_cc, ARM64.elf_machine) == \
        ("arch/arm64/boot/Image", "Image", "ttyAMA0", "aarch64-linux-gnu-gcc", 183)
    assert ARM64.console_node == (204, 64) and X86_64.console_node == (4, 64)
    assert arch.by_elf_machine(183) is ARM64 and arch.by_elf_machine(62) is X86_64
    assert arch.by_elf_machine(243) is None  # riscv


def test_busybox_paths(tmp_path):
    paths = Paths(cache=tmp_path / "cache", artifacts=tmp_path / "art")
    assert X86_64.busybox(paths) == Path("/bin/busybox")
    assert ARM64.busybox(paths) == tmp_path / "cache" / "downloads" / "arm64" / "busybox-static" / "bin" / "busybox"


def test_setup_extracts_the_arm64_busybox_where_the_harness_looks():
    """scripts/setup.sh and Arch.busybox agree on the place (under LIVEDUMP_CACHE's downloads)."""
    setup = (Path(__file__).resolve().parents[2] / "scripts" / "setup.sh").read_text()
    assert "cache=${LIVEDUMP_CACHE:-$HOME/.cache/livedump}" in setup
    assert f"arm64_busybox_dir=$cache/downloads/{ARM64.busybox_dir}\n" in setup
    assert '"$arm64_busybox_dir/bin/busybox"' in setup
    packages = (Path(__file__).resolve().parents[2] / "scripts" / "debian-packages.txt").read_text().split()
    for package in (ARM64.compiler_package, ARM64.qemu_package, ARM64.busybox_runner_package,
                    "libc6-dev-arm64-cross"):
        assert package in packages


# -- readers -----------------------------------------------------------------


def test_host_readers_are_x86_only():
    for reader in ("crash", "makedumpfile"):
        assert X86_64.reads(reader) and X86_64.reader_skip_reason(reader) == ""
        assert not ARM64.reads(reader)
        assert ARM64.reader_skip_reason(reader) == (f"Debian's {reader} on this host reads x86-64 dumps only, "
                                                    "not arm64 ones")


def good_view() -> validate.DrgnView:
    stop = ["multi_cpu_stop", "cpu_stopper_thread"]
    return validate.DrgnView(release="6.1.192-livedump", init_comm="swapper/0",
                             tasks=[(1, "init"), (50, "ldload"), (51, "ldload"), (52, "ldload")],
                             log="livedump-marker-A-1\n", nr_prstatus=2, prstatus_pids=[0, 0],
                             stop_functions=["multi_cpu_stop"] * 2, stop_traces=[stop, stop])


SAW = dumpcheck.GuestSaw("6.1.192-livedump", 2, dumpcheck.Markers("livedump-marker-A-1", "livedump-marker-B-1"),
                         "r", {"cow_faults": "1"})


def test_an_arm64_dump_skips_crash_with_a_reason_and_never_runs_it(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "read_with_drgn", lambda image, vmlinux: good_view())
    monkeypatch.setattr(validate, "build_crash_extension", lambda out: pytest.fail("crash extension built"))
    monkeypatch.setattr(validate, "run_crash", lambda *a, **kw: pytest.fail("crash was run"))
    verdict = dumpcheck.check_dump(tmp_path / "d.img", tmp_path / "vmlinux", SAW, crash_dir=tmp_path, arch=ARM64)
    skipped = [c for c in verdict.checks if c.skipped]
    assert [c.name for c in skipped] == [dumpcheck.CRASH_SKIPPED]
    assert skipped[0].detail == ARM64.reader_skip_reason("crash")
    assert not skipped[0].ok  # a skip is not a pass
    assert verdict.failed == [] and verdict.skipped == [str(skipped[0])]
    assert verdict.crash is None
    assert verdict.named("drgn: each CPU")  # the unwind checks are drgn's: still made


def test_an_x86_dump_still_runs_crash(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(validate, "read_with_drgn", lambda image, vmlinux: good_view())
    monkeypatch.setattr(validate, "build_crash_extension", lambda out: Path("/x/livedump.so"))
    monkeypatch.setattr(validate, "run_crash", lambda *a, **kw: ran.append(a) or validate.CrashSession({}))
    verdict = dumpcheck.check_dump(tmp_path / "d.img", tmp_path / "vmlinux", SAW, crash_dir=tmp_path)
    assert len(ran) == 1 and not any(c.skipped for c in verdict.checks)
    assert verdict.failed  # an empty crash session fails closed


def test_check_skip_semantics():
    skip = dumpcheck.Check.skip("crash: x", "no crash for arm64")
    assert (skip.ok, skip.failed, skip.skipped, skip.verdict, str(skip)) == \
        (False, False, True, "skip", "crash: x: no crash for arm64")
    assert dumpcheck.Check("a", False).failed and dumpcheck.Check("a", False).verdict == "FAIL"
    assert dumpcheck.Check("a", True).verdict == "ok  "


# -- QEMU --------------------------------------------------------------------

# The x86 command line exactly as the harness wrote it before --arch existed.
X86_ARGV_BEFORE = [
    "qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-reboot", "-accel", "tcg", "-cpu", "max",
    "-smp", "2", "-m", "512M", "-serial", "stdio", "-kernel", "/k/bzImage",
    "-append", "console=ttyS0 panic=-1 oops=panic loglevel=5 printk.time=1 x=1", "-initrd", "/k/i.cpio",
    "-drive", "file=/d/a.img,format=raw,if=none,id=disk0,cache=unsafe",
    "-device", "virtio-blk-pci,drive=disk0,id=vdisk0", "-qmp", "unix:/r/qmp.sock,server=on,wait=off",
    "-chardev", "socket,id=hold,path=/r/hold.sock,server=on,wait=off",
    "-device", "isa-serial,chardev=hold,iobase=0x2f8,irq=3", "-s"]


def full_config(**kw) -> QemuConfig:
    return QemuConfig(kernel=Path("/k/bzImage"), initrd=Path("/k/i.cpio"), disks=(Disk(Path("/d/a.img"), 4096),),
                      append=("x=1",), qmp_socket=Path("/r/qmp.sock"), extra=("-s",), **kw)


def test_x86_argv_is_unchanged():
    assert full_config(hold_socket=Path("/r/hold.sock")).argv() == X86_ARGV_BEFORE
    assert full_config(hold_socket=Path("/r/hold.sock"), arch=X86_64).argv() == X86_ARGV_BEFORE
    assert qemu.BASE_APPEND == ("console=ttyS0", "panic=-1", "oops=panic", "loglevel=5", "printk.time=1")


def test_arm64_argv_exact_words():
    argv = QemuConfig(kernel=Path("/k/Image"), initrd=Path("/k/i.cpio"), disks=(Disk(Path("/d/a.img"), 4096),),
                      append=("x=1",), qmp_socket=Path("/r/qmp.sock"), extra=("-s",), arch=ARM64).argv()
    assert argv == [
        "qemu-system-aarch64", "-nodefaults", "-display", "none", "-no-reboot", "-M", "virt,gic-version=3",
        "-accel", "tcg", "-cpu", "cortex-a57", "-smp", "2", "-m", "512M", "-serial", "stdio",
        "-kernel", "/k/Image",
        "-append", "console=ttyAMA0 panic=-1 oops=panic loglevel=5 printk.time=1 irqchip.gicv3_pseudo_nmi=1 x=1",
        "-initrd", "/k/i.cpio",
        "-drive", "file=/d/a.img,format=raw,if=none,id=disk0,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk0,id=vdisk0", "-qmp", "unix:/r/qmp.sock,server=on,wait=off", "-s"]


def test_arm64_under_kvm_takes_the_host_cpu():
    argv = QemuConfig(kernel=Path("/k/Image"), accel="kvm", arch=ARM64).argv()
    assert argv[argv.index("-cpu") + 1] == "host"


def test_the_hold_socket_is_x86_only():
    with pytest.raises(HarnessError) as ei:
        QemuConfig(kernel=Path("/k/Image"), hold_socket=Path("/r/hold.sock"), arch=ARM64)
    assert ei.value.stage == "qemu"
    assert "x86 only" in ei.value.message and "arm64" in ei.value.message


def test_require_qemu_names_the_arm64_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as ei:
        qemu.require_qemu(ARM64)
    assert ei.value.message == ("qemu-system-aarch64 not found; install the Debian package qemu-system-arm "
                                "(make setup does)")


def test_an_arm64_guest_on_an_x86_host_is_tcg_without_a_probe(monkeypatch):
    monkeypatch.setattr(qemu, "probe_kvm", lambda *a, **k: pytest.fail("KVM probed for a foreign guest"))
    warnings: list[str] = []
    choice = qemu.choose_accel("auto", Path("/k/Image"), warn=warnings.append, arch=ARM64, host_machine="x86_64")
    assert choice.accel == "tcg" and "arm64 guest on an x86_64 host" in choice.reason
    assert warnings == []
    with pytest.raises(HarnessError, match="KVM cannot run an arm64 guest on this x86_64 host; use --accel tcg"):
        qemu.choose_accel("kvm", Path("/k/Image"), arch=ARM64, host_machine="x86_64")


def test_an_arm64_guest_on_an_arm64_host_is_probed(monkeypatch):
    probed = []
    monkeypatch.setattr(qemu, "probe_kvm", lambda kernel, arch: probed.append(arch) or AccelChoice("kvm", "ok"))
    assert qemu.choose_accel("auto", Path("/k/Image"), arch=ARM64, host_machine="aarch64").accel == "kvm"
    assert probed == [ARM64]


# -- build and config ----------------------------------------------------------


def test_make_vars(monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/ccache" if name == "ccache" else None)
    assert build.make_vars() == {"CC": "ccache gcc", "LOCALVERSION": ""}
    assert list(build.make_vars(X86_64).items()) == [("CC", "ccache gcc"), ("LOCALVERSION", "")]
    assert list(build.make_vars(ARM64).items()) == [
        ("ARCH", "arm64"), ("CROSS_COMPILE", "aarch64-linux-gnu-"), ("CC", "ccache aarch64-linux-gnu-gcc"),
        ("LOCALVERSION", "")]
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.make_vars(ARM64)["CC"] == "aarch64-linux-gnu-gcc"


FAKE_MAKE_ARM64 = """#!/bin/sh
echo "make $*" >> "$CALLS"
for a in "$@"; do case "$a" in O=*) out="${a#O=}";; esac; done
mkdir -p "$out/arch/arm64/boot" "$out/include/config"
echo image > "$out/arch/arm64/boot/Image"
echo vmlinux > "$out/vmlinux"
echo 6.1.192 > "$out/include/config/kernel.release"
"""


@pytest.fixture
def fakebin(tmp_path, monkeypatch) -> Path:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for tool in [*build.REQUIRED_TOOLS, "aarch64-linux-gnu-gcc"]:
        (bindir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bindir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("CALLS", str(tmp_path / "make-calls"))
    return bindir


def test_an_arm64_build_makes_Image_with_the_cross_compiler(tmp_path, fakebin, runner):
    (fakebin / "make").write_text(FAKE_MAKE_ARM64)
    out = tmp_path / "out"
    mvars = {"ARCH": "arm64", "CROSS_COMPILE": "aarch64-linux-gnu-", "CC": "aarch64-linux-gnu-gcc",
             "LOCALVERSION": ""}
    r = build.build(tmp_path / "src", out, "k", runner, tmp_path / "build.log", jobs=2, mvars=mvars, arch=ARM64)
    assert (tmp_path / "make-calls").read_text().splitlines() == [
        f"make -C {tmp_path / 'src'} O={out} -j2 ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- "
        "CC=aarch64-linux-gnu-gcc LOCALVERSION= Image headers modules"]
    assert r.image == out / "arch/arm64/boot/Image" and r.bzimage == r.image and r.rebuilt
    again = build.build(tmp_path / "src", out, "k", runner, tmp_path / "build.log", mvars=mvars, arch=ARM64)
    assert not again.rebuilt  # up to date: the arm64 image is what the stamp's build made


def test_an_arm64_build_without_the_cross_compiler_names_its_package(tmp_path, fakebin, runner, monkeypatch):
    (fakebin / "aarch64-linux-gnu-gcc").unlink()
    monkeypatch.setenv("PATH", str(fakebin))  # not /usr/bin: make setup may have installed the real one
    with pytest.raises(ToolMissing) as ei:
        build.build(tmp_path / "src", tmp_path / "out", "k", runner, tmp_path / "build.log", arch=ARM64)
    assert ei.value.message == ("aarch64-linux-gnu-gcc not found; install the Debian package "
                                "gcc-aarch64-linux-gnu (make setup does)")
    assert ei.value.stage == "build"


def test_kconfig_env(monkeypatch):
    monkeypatch.setattr(kconfig.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, f"{cmd.split()[0]} (Debian) 12.2\n"))
    x86 = kconfig.kconfig_env(Path("/src"), {"CC": "gcc", "LOCALVERSION": ""}, "6.1.192")
    assert x86 == {"srctree": "/src", "ARCH": "x86_64", "SRCARCH": "x86", "KERNELVERSION": "6.1.192", "CC": "gcc",
                   "LD": "ld", "HOSTCC": "gcc", "HOSTCXX": "g++", "CC_VERSION_TEXT": "gcc (Debian) 12.2",
                   "RUSTC": "rustc", "BINDGEN": "bindgen", "PAHOLE": "pahole"}
    arm = kconfig.kconfig_env(Path("/src"), {"CC": "aarch64-linux-gnu-gcc"}, "6.1.192", ARM64)
    assert (arm["ARCH"], arm["SRCARCH"], arm["CC"], arm["LD"], arm["NM"], arm["OBJCOPY"]) == \
        ("arm64", "arm64", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-ld", "aarch64-linux-gnu-nm",
         "aarch64-linux-gnu-objcopy")
    assert arm["CC_VERSION_TEXT"] == "aarch64-linux-gnu-gcc (Debian) 12.2"
    assert arm["HOSTCC"] == "gcc"  # host programs (fixdep, conf) stay the host's


def test_fragment_override_resolution(tmp_path):
    (tmp_path / "arm64").mkdir()
    for path in (tmp_path / "base.config", tmp_path / "livedump.config", tmp_path / "arm64" / "base.config"):
        path.write_text("CONFIG_X=y\n")
    assert ARM64.fragment("base", tmp_path) == tmp_path / "arm64" / "base.config"
    assert ARM64.fragment("livedump", tmp_path) == tmp_path / "livedump.config"
    assert X86_64.fragment("base", tmp_path) == tmp_path / "base.config"
    # A fragment nobody has: the common path, whose absence kconfig reports by name.
    assert ARM64.fragment("debug", tmp_path) == tmp_path / "debug.config"


def test_the_repo_arm64_base_fragment_asks_nothing_x86():
    requests = {r.symbol: r.value for r in kconfig.parse_fragment(FRAGMENTS_DIR / "arm64" / "base.config")}
    assert not [s for s in requests if s.startswith("X86") or s in ("ACPI", "SERIAL_8250", "EARLY_PRINTK")]
    for symbol in ("SERIAL_AMBA_PL011_CONSOLE", "ARM64_PSEUDO_NMI", "ARM_GIC_V3", "VMAP_STACK",
                   "RODATA_FULL_DEFAULT_ENABLED", "KEXEC_CORE", "DEBUG_INFO_DWARF4", "SLUB"):
        assert requests[symbol] == "y", symbol
    # Every line of the common base that is not x86's is asked for the same on arm64.
    x86_only = {"ACPI", "EARLY_PRINTK", "SERIAL_8250", "SERIAL_8250_CONSOLE", "HOTPLUG_PCI", "HOTPLUG_PCI_ACPI",
                "X86_MCE", "KEXEC"}
    common = {r.symbol: r.value for r in kconfig.parse_fragment(FRAGMENTS_DIR / "base.config")}
    assert {s: v for s, v in common.items() if s not in x86_only} == \
        {s: v for s, v in requests.items() if s in common}


# -- the pipeline ----------------------------------------------------------------


def pipeline(tmp_path: Path, **options) -> pipeline_mod.Pipeline:
    p = pipeline_mod.Pipeline(Run(directory=tmp_path / "run", command="t"), pipeline_mod.Options(**options),
                              paths=Paths(cache=tmp_path / "cache", artifacts=tmp_path / "art"), runner=Runner())
    p._tree = tmp_path / "cache" / "tree" / "linux-source-6.1_6.1.192-2"
    return p


def test_build_dir_names(tmp_path):
    builds = tmp_path / "cache" / "build"
    assert pipeline(tmp_path).build_dir() == builds / "linux-source-6.1_6.1.192-2-base+livedump"
    assert pipeline(tmp_path, arch=X86_64, fragments=("base",)).build_dir() == \
        builds / "linux-source-6.1_6.1.192-2-base"
    assert pipeline(tmp_path, arch=ARM64).build_dir() == builds / "linux-source-6.1_6.1.192-2-arm64-base+livedump"
    assert pipeline(tmp_path, arch=ARM64, fragments=("base",)).build_dir() == \
        builds / "linux-source-6.1_6.1.192-2-arm64-base"


def test_pipeline_fragment_paths(tmp_path):
    assert pipeline(tmp_path).fragment_paths() == [FRAGMENTS_DIR / "base.config", FRAGMENTS_DIR / "livedump.config"]
    assert pipeline(tmp_path, arch=ARM64).fragment_paths() == [FRAGMENTS_DIR / "arm64" / "base.config",
                                                               FRAGMENTS_DIR / "livedump.config"]


def test_an_arm64_config_without_the_cross_compiler_stops_before_make(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing, match="gcc-aarch64-linux-gnu"):
        pipeline(tmp_path, arch=ARM64).configure()


def test_an_oracle_boot_on_arm64_is_refused_before_the_build(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu, "require_qemu", lambda arch: "/usr/bin/" + arch.qemu)
    p = pipeline(tmp_path, arch=ARM64)
    monkeypatch.setattr(p, "build", lambda: pytest.fail("built before refusing"))
    with pytest.raises(HarnessError, match="x86 only"):
        p.qemu_config(hold_socket=tmp_path / "hold.sock")


def test_cli_arch_option():
    args = cli.build_parser().parse_args(["run", "--arch", "arm64", "--", "uname -m"])
    assert cli.options_from(args).arch is ARM64
    args = cli.build_parser().parse_args(["run", "--", "uname -m"])
    assert cli.options_from(args).arch is X86_64
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["build", "--arch", "mips"])


# -- rootfs ----------------------------------------------------------------------


def test_device_nodes():
    assert rootfs.device_nodes() == rootfs.DEVICE_NODES
    assert rootfs.device_nodes(ARM64) == (*rootfs.DEVICE_NODES, ("dev/ttyAMA0", 204, 64, 0o600))


class RecordingRunner(Runner):
    def __init__(self, tmp_path: Path, stdout: str = ""):
        super().__init__(log_path=tmp_path / "commands.sh")
        self.argvs: list[list[str]] = []
        self.stdout = stdout

    def run(self, argv, **kw):
        self.argvs.append([str(a) for a in argv])
        return subprocess.CompletedProcess(argv, 0, self.stdout, "")


def test_helpers_are_compiled_with_the_arch_compiler(tmp_path, monkeypatch):
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: f"/usr/bin/{name}")
    for a, cc in ((X86_64, "gcc"), (ARM64, "aarch64-linux-gnu-gcc")):
        runner = RecordingRunner(tmp_path)
        rootfs.compile_helper(Path("/h/ldload.c"), tmp_path / "ldload", (Path("/inc"),), runner, a)
        assert runner.argvs == [[cc, "-static", "-O2", "-Wall", "-Werror", "-I/inc", "-o", str(tmp_path / "ldload"),
                                 "/h/ldload.c"]]
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing, match="aarch64-linux-gnu-gcc not found; install the Debian package "
                                          "gcc-aarch64-linux-gnu"):
        rootfs.compile_helper(Path("/h/ldload.c"), tmp_path / "ldload", (), RecordingRunner(tmp_path), ARM64)


def fake_static_elf(path: Path, machine: int) -> Path:
    """An ELF64 executable header with no program headers (so no PT_INTERP): static, of this machine."""
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 64, 0, 0, 64, 56, 0, 0, 0, 0)
    path.write_bytes(ehdr)
    return path


def test_the_arm64_busybox_is_listed_through_qemu_user(tmp_path, monkeypatch):
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: None)
    monkeypatch.setattr(arch.shutil, "which", lambda name: f"/usr/bin/{name}")
    busybox = fake_static_elf(tmp_path / "busybox", 183)
    runner = RecordingRunner(tmp_path, stdout="bin/busybox\nbin/sh\nsbin/ip\n")
    entries = rootfs.busybox_entries(busybox, runner, ARM64)
    assert runner.argvs == [["qemu-aarch64-static", str(busybox), "--list-full"]]
    assert [e.name for e in entries] == ["bin/busybox", "bin/sh", "sbin/ip"]


def test_a_busybox_of_the_wrong_arch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(arch.shutil, "which", lambda name: f"/usr/bin/{name}")
    x86_busybox = fake_static_elf(tmp_path / "busybox", 62)
    with pytest.raises(rootfs.RootfsError, match="is not an arm64 executable"):
        rootfs.busybox_entries(x86_busybox, RecordingRunner(tmp_path), ARM64)


def test_a_missing_arm64_busybox_says_make_setup_fetches_it(tmp_path):
    with pytest.raises(rootfs.RootfsError, match="make setup .* busybox-static:arm64"):
        rootfs.busybox_entries(tmp_path / "nope", RecordingRunner(tmp_path), ARM64)


def test_qemu_user_missing_names_its_package(tmp_path, monkeypatch):
    monkeypatch.setattr(arch.shutil, "which", lambda name: None)
    busybox = fake_static_elf(tmp_path / "busybox", 183)
    with pytest.raises(ToolMissing, match="qemu-aarch64-static not found; install the Debian package "
                                          "qemu-user-static"):
        rootfs.busybox_entries(busybox, RecordingRunner(tmp_path), ARM64)


def test_kvm_for_a_foreign_guest_is_refused_before_the_build(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu, "require_qemu", lambda arch: "/usr/bin/" + arch.qemu)
    monkeypatch.setattr(qemu.platform, "machine", lambda: "x86_64")
    p = pipeline(tmp_path, arch=ARM64, accel="kvm")
    monkeypatch.setattr(p, "build", lambda: pytest.fail("built before refusing"))
    with pytest.raises(HarnessError, match="KVM cannot run an arm64 guest on this x86_64 host"):
        p.qemu_config()


def test_the_oracle_refuses_arm64_before_building(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from harness import oracle

    p = pipeline(tmp_path, arch=ARM64)
    monkeypatch.setattr(p, "build", lambda: pytest.fail("built before refusing"))
    with pytest.raises(HarnessError, match="x86 only"):
        oracle.command(p, SimpleNamespace(runs=1, reserve=None))
