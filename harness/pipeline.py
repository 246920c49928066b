"""The stages in order — source, tree, config, build, rootfs, boot — with caching.

The CLI and the integration tests both go through :class:`Pipeline`, so a test
boots exactly what ``make test-qemu`` boots.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import arch as arch_mod
from . import build as build_mod
from . import kconfig, locking, log, patches, qemu, rootfs, source
from .artifacts import Run
from .console import GuestConsole, Timeouts
from .errors import HarnessError
from .runner import Runner
from .settings import LOCK_FILE, SERIES_DIR, Paths

DEFAULT_FRAGMENTS = ("base", "livedump")


@dataclass
class Options:
    arch: arch_mod.Arch = arch_mod.DEFAULT  # the guest's architecture: what is built and booted
    fragments: tuple[str, ...] = DEFAULT_FRAGMENTS
    kernel_src: Path | None = None  # a git tree used as it is, instead of the pinned source
    accel: str = "auto"
    jobs: int | None = None
    smp: int = 2
    memory: str = "512M"
    timeouts: Timeouts = field(default_factory=Timeouts)
    append: tuple[str, ...] = ()     # kernel command line words after the harness's own
    qemu_opts: tuple[str, ...] = ()  # QEMU argv words after the harness's own


def say(msg: str) -> None:
    """Tell the person running the harness (stderr, timestamped) and the run's harness.log."""
    log.info(msg)


class Pipeline:
    def __init__(self, run: Run, options: Options, *, paths: Paths | None = None, runner: Runner | None = None):
        self.run = run
        self.options = options
        self.paths = paths or Paths.from_env()
        self.runner = runner or Runner(log_path=run.commands_log)
        self._tree: Path | None = None
        self._build: build_mod.BuildResult | None = None
        self._accel: qemu.AccelChoice | None = None

    # -- derived pipelines -----------------------------------------------
    # A session that builds or boots several kernels (bisect) probes KVM once: the probe boots a guest.
    def for_tree(self, kernel_src: Path | None, *, run: Run | None = None,
                 runner: Runner | None = None) -> Pipeline:
        """A pipeline for another kernel tree (None: the pinned source with the series), with these options,
        paths and accelerator choice; into this run unless given one (then with its own runner)."""
        if run is None:
            run, runner = self.run, runner or self.runner
        derived = Pipeline(run, replace(self.options, kernel_src=kernel_src), paths=self.paths, runner=runner)
        derived._share_accel(self._accel)
        return derived

    def for_run(self, run: Run) -> Pipeline:
        """The same kernel (tree, build, accelerator) with its own run directory: another boot's logs and
        disks, e.g. a second try of a test."""
        derived = Pipeline(run, self.options, paths=self.paths, runner=self.runner)
        derived._tree, derived._build = self._tree, self._build
        derived._share_accel(self._accel)
        return derived

    def _share_accel(self, choice: qemu.AccelChoice | None) -> None:
        if choice is None or self._accel is not None:
            return
        self._accel = choice
        if "accel" not in self.run.facts:  # a run shared with the pipeline that probed has the probe's own words
            self.run.facts["accel"] = {"used": choice.accel, "why": choice.reason + " (probed earlier in this session)"}

    # -- source and tree -------------------------------------------------
    def lock(self) -> source.Lock:
        return source.load_lock(LOCK_FILE)

    def source(self) -> Path:
        if self.options.kernel_src is not None:
            return self.options.kernel_src
        with self.run.stage("source"):
            lock = self.lock()
            path = source.obtain(lock, self.paths, self.runner)
            self.run.facts["source"] = {"package": lock.package, "version": lock.version, "sha256": lock.sha256}
        return path

    def series(self) -> patches.Series:
        return patches.parse_series(SERIES_DIR)

    def tree(self) -> Path:
        """The git tree to build: the user's (--kernel-src), or the pinned one with the series."""
        if self._tree is not None:
            return self._tree
        if self.options.kernel_src is not None:
            tree = self.options.kernel_src
            if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
                raise HarnessError("source", f"{tree} does not look like a kernel source tree")
        else:
            pristine = self.source()
            tree = self.paths.trees / pristine.name
            with self.run.stage("patches"), locking.exclusive(tree, "kernel tree", self.paths.locks, say=say):
                patches.make_tree(pristine, tree, self.runner)
                series = self.series()
                state = patches.apply(tree, series, self.runner)
                say(f"series ({len(series.patches)} patches): {state} in {tree}")
                self.run.facts["series"] = {"patches": [p.name for p in series.patches], "state": state}
        self._tree = tree
        return tree

    # -- config and build ------------------------------------------------
    @property
    def arch(self) -> arch_mod.Arch:
        return self.options.arch

    def fragment_paths(self) -> list[Path]:
        """The fragments by name, each the architecture's own version where it has one."""
        return [self.arch.fragment(name) for name in self.options.fragments]

    def build_dir(self) -> Path:
        tree = self.tree()
        if self.options.kernel_src is None:
            tag = tree.name
        else:
            tag = "tree-" + hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:12]
        return self.paths.builds / f"{tag}-{self.arch.build_tag()}{'+'.join(self.options.fragments)}"

    def configure(self) -> kconfig.ConfigResult:
        self.arch.require_compiler("config")  # make's own error for a missing cross gcc names no package
        tree = self.tree()
        build_dir = self.build_dir()
        with self.run.stage("config"):
            result = kconfig.configure(tree, build_dir, self.fragment_paths(), build_mod.make_vars(self.arch),
                                       self.runner, log=self.run.path("config.log"), arch=self.arch)
        if result.config.is_file():
            shutil.copyfile(result.config, self.run.path("config"))
        say(f"config {'updated' if result.changed else 'unchanged'}: {result.config}")
        return result

    def build(self) -> build_mod.BuildResult:
        if self._build is not None:
            return self._build
        tree = self.tree()
        # Hold the tree too: another run re-applying a changed series under
        # a running make would mix two versions of the sources.
        with locking.exclusive(tree, "kernel tree", self.paths.locks, say=say), \
                locking.exclusive(self.build_dir(), "build directory", self.paths.locks, say=say):
            return self._build_locked()

    def _build_locked(self) -> build_mod.BuildResult:
        config = self.configure()
        tree = self.tree()
        identity = patches.tree_identity(tree, self.runner) if (tree / ".git").exists() else str(tree)
        series_digest = self.series().digest if self.options.kernel_src is None else ""
        mvars = build_mod.make_vars(self.arch)
        key = build_mod.build_key(identity, series_digest, config.config, mvars) if not self.runner.dry_run else ""
        with self.run.stage("build"):
            result = build_mod.build(tree, config.config.parent, key, self.runner, self.run.path("build.log"),
                                     jobs=self.options.jobs, mvars=mvars, arch=self.arch)
        say(f"kernel {result.release} {'built' if result.rebuilt else 'up to date'}: {result.image}")
        # The image under its own name (bzImage, Image); "arch" only for another than x86_64, whose
        # result.json keeps the words it had.
        self.run.facts["kernel"] = {"release": result.release, result.image.name: str(result.image),
                                    "vmlinux": str(result.vmlinux), "rebuilt": result.rebuilt,
                                    **({} if self.arch is arch_mod.DEFAULT else {"arch": self.arch.name})}
        self._build = result
        return result

    # -- guest -----------------------------------------------------------
    def rootfs(self) -> Path:
        kernel = self.build()
        tool_helpers, tool_scripts = rootfs.livedump_tool(kernel.headers)
        if not tool_scripts:
            say(f"no linux/livedump.h in {kernel.headers}: the guest gets no livedump tool")
        spec = rootfs.RootfsSpec(busybox=self.arch.busybox(self.paths), helpers=rootfs.default_helpers() + tool_helpers,
                                 scripts=tool_scripts | rootfs.kernel_modules(kernel.build_dir),
                                 include_dirs=(kernel.headers,), arch=self.arch)
        out = self.run.path("initramfs.cpio")
        say(f"building the initramfs (busybox, the overlay, {len(spec.helpers)} static helpers with "
            f"{self.arch.helper_cc}): {out}")
        with self.run.stage("rootfs"):
            out = rootfs.build(spec, out, self.runner)
        return out

    def accel(self, kernel: Path) -> qemu.AccelChoice:
        if self._accel is None:
            self._accel = qemu.choose_accel(self.options.accel, kernel, warn=say, arch=self.arch)
            self.run.facts["accel"] = {"used": self._accel.accel, "why": self._accel.reason}
        return self._accel

    def qemu_config(self, disks: tuple[qemu.Disk, ...] = (), append: tuple[str, ...] = (),
                    hold_socket: Path | None = None) -> qemu.QemuConfig:
        # Before the build: do not make the user wait to learn that QEMU is missing, or cannot do this.
        qemu.require_qemu(self.arch)
        qemu.require_accel_possible(self.options.accel, self.arch)
        if hold_socket is not None:
            qemu.require_hold_support(self.arch)
        kernel = self.build()
        initrd = self.rootfs()
        accel = self.accel(kernel.image)
        return qemu.QemuConfig(kernel=kernel.image, initrd=initrd, accel=accel.accel, smp=self.options.smp,
                               memory=self.options.memory, disks=disks, append=self.options.append + append,
                               qmp_socket=self.run.path("qmp.sock"), hold_socket=hold_socket,
                               extra=self.options.qemu_opts, arch=self.arch)

    def boot(self, disks: tuple[qemu.Disk, ...] = (), *, interactive: bool = False,
             tag: str = "", append: tuple[str, ...] = (), hold_socket: Path | None = None) -> GuestConsole:
        """Boot a guest; ``tag`` names its logs (serial-TAG.log) when a run boots several.

        ``append``: kernel command line parameters after the harness's own. ``hold_socket``: COM2 on this
        unix socket, for LIVEDUMP_INIT_TEST_HOLD (see harness/oracle.py).
        """
        config = self.qemu_config(disks, append, hold_socket)
        for disk in disks:
            disk.create()
        argv = config.argv()
        self.runner.record(argv)
        suffix = f"-{tag}" if tag else ""
        console = GuestConsole(argv, serial_log=self.run.path(f"serial{suffix}.log"),
                               stderr_log=self.run.path(f"qemu-stderr{suffix}.log"), timeouts=self.options.timeouts)
        say(f"booting {self.build().release or 'the kernel'} ({config.accel}, {config.smp} CPUs, {config.memory}, "
            f"up to {self.options.timeouts.boot:.0f}s), serial log: {self.run.path(f'serial{suffix}.log')}")
        started = time.monotonic()
        try:
            with self.run.stage("boot"), log.progress("booting"):
                release = console.wait_ready()
            say(f"guest up after {log.elapsed(time.monotonic() - started)}")
        except BaseException:
            console.close()
            raise
        kernel = self.build()
        if kernel.release and release != kernel.release:
            console.close()
            raise HarnessError("boot", f"guest runs {release}, but the build is {kernel.release}")
        return console
