"""``python -m harness``: the command line.

Every subcommand makes a run directory under ``artifacts/`` (or
``--artifacts DIR``) holding the exact command lines, logs and result.json.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

from . import arch as arch_mod
from . import bench as bench_mod
from . import bisect as bisect_mod
from . import consistency, e2e, log
from . import dump as dump_mod
from . import extract as extract_mod
from . import faults as faults_mod
from . import fuzz as fuzz_mod
from . import oracle as oracle_mod
from . import patches as patches_mod
from . import soak as soak_mod
from . import source as source_mod
from .artifacts import Run
from .console import Timeouts
from .errors import HarnessError
from .pipeline import DEFAULT_FRAGMENTS, Options, Pipeline, say
from .runner import Runner, quote
from .settings import LOCK_FILE, SERIES_DIR, Paths


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("-v", "--verbose", action="store_true", help="print every host command as it runs")
    g.add_argument("--dry-run", action="store_true", help="print the commands that would change things, run none")
    g.add_argument("--artifacts", type=Path, metavar="DIR", help="where run directories go (default: artifacts/)")
    g.add_argument("--kernel-src", type=Path, metavar="PATH",
                   help="build this kernel tree as it is instead of the pinned source + series")
    g.add_argument("--fragments", default=",".join(DEFAULT_FRAGMENTS),
                   help="comma-separated config fragments from harness/fragments (default: %(default)s)")
    g.add_argument("--arch", choices=tuple(arch_mod.ARCHES), default=arch_mod.DEFAULT.name,
                   help="guest architecture: kernel, initramfs and QEMU machine (default: %(default)s)")
    g.add_argument("--debug-kernel", action="store_true", help="add the debug fragment (lockdep, KASAN, ...)")
    g.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")
    g.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="QEMU accelerator; auto probes KVM for real and falls back to TCG")
    g.add_argument("--smp", type=int, default=2)
    g.add_argument("--memory", default="512M")
    g.add_argument("--boot-timeout", type=float, default=Timeouts.boot, metavar="S")
    g.add_argument("--command-timeout", type=float, default=Timeouts.command, metavar="S")
    g.add_argument("--run-timeout", type=float, default=Timeouts.run, metavar="S")
    g.add_argument("--append", default="", metavar="ARGS",
                   help="more kernel command line for the guest, after the harness's own (e.g. 'debug_pagealloc=on')")
    g.add_argument("--qemu-opt", action="append", default=[], metavar="OPTS",
                   help="more QEMU arguments, shell-split, after the harness's own; repeatable (e.g. '-d int')")


def program_name(argv0: str) -> str:
    """How the user called us, for usage lines: ``python -m harness`` or the ``livedump-harness`` script."""
    name = Path(argv0).name
    return "python -m harness" if name in ("__main__.py", "") else name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(sys.argv[0]), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _common(p)
        return p

    p = add("source", "obtain, verify and extract the pinned kernel source")
    p.add_argument("--repin", action="store_true",
                   help="pin the newest linux-source-6.1 in the archive (the series must still apply)")
    p = add("patches", "apply the series to the kernel git tree, or export the tree's commits as the series")
    p.add_argument("action", choices=("apply", "export"))
    add("config", "write and verify the kernel .config from the fragments")
    add("build", "build the kernel (bzImage or Image, vmlinux, uapi headers)")
    add("rootfs", "build the guest initramfs")
    add("boot", "boot the guest and attach an interactive console (Ctrl-] to leave)")
    p = add("run", "boot the guest, run one shell command, exit with its status")
    p.add_argument("guest_command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    add("test", "end to end: build, boot, check the guest runs the built kernel")
    p = add("bisect", "find the commit (or patch of the series) that broke livedump, with git bisect")
    bisect_mod.add_arguments(p)
    p = add("bench", "measure livedump (pause, throughput, slowdown, faults) at several guest RAM sizes")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="dumps per size; medians are reported")
    p.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="dumps per boot before the measured ones, reported apart (warmup_*): under TCG the "
                        "first dump pays for translating the code it runs (default: %(default)s)"),
    p.add_argument("--window-ms", type=int, default=1000, metavar="MS",
                   help="workload measurement window, idle and during a sweep (default: %(default)s)")
    p.add_argument("--exclude", default=bench_mod.DEFAULT_EXCLUDE, metavar="CLASSES",
                   help="page classes the dumps leave out (livedump --exclude); the default sweeps every page "
                        "of RAM, comparable across sizes and with the dd control (default: %(default)s)")
    # --memory is a comma list here; one guest boot per size (all four sizes: a few minutes under TCG).
    p.set_defaults(memory=bench_mod.DEFAULT_SIZES, run_timeout=4 * 3600.0)
    p = add("soak", "many dump cycles in one boot under load: no warning, nothing leaked, every dump readable")
    p.add_argument("--cycles", type=int, default=200, metavar="N", help="dumps (default: %(default)s)")
    p.add_argument("--read-every", type=int, default=20, metavar="N",
                   help="drgn reads the first, the last and every Nth dump; 0: only the first and last")
    p.add_argument("--tolerance", type=float, default=0.01, metavar="F",
                   help="MemFree, Slab and VmallocUsed must come back within F x RAM (default: %(default)s)")
    p.add_argument("--nmi-storm", action="store_true",
                   help="the torture load sends an NMI every few microseconds whose handler writes slab memory; "
                        "pages an NMI had to give up are counted, not failed")
    p.set_defaults(run_timeout=8 * 3600.0)
    p = add("fuzz", "random and hostile ioctls from 2 processes x 2 threads; then a dump must still work")
    p.add_argument("--calls", type=int, default=100_000, metavar="N", help="ioctl calls in all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="the fuzzer's random seed (default: %(default)s)")
    p.set_defaults(run_timeout=4 * 3600.0)
    p = add("faults", "targets that fail mid-dump (EIO, hot-unplug, read-only): each dump ends FAILED, host runs on")
    p.add_argument("--eio-at", default=",".join(faults_mod.DEFAULT_EIO_AT), metavar="LIST",
                   help="one target per entry whose writes fail with EIO from this MiB on: a number, 'half' or "
                        "'end' of RAM; empty for none (default: %(default)s)")
    p.add_argument("--mid-sweep", default=",".join(faults_mod.MID_SWEEP_FAULTS), metavar="LIST",
                   help="faults that strike a slow target mid-sweep: unplug (QMP device_del), setro "
                        "(blockdev --setro); empty for none (default: %(default)s)")
    p = add("oracle", "compare livedumps page by page with QEMU's capture of the same instant; explain every "
                      "difference")
    p.add_argument("--runs", type=int, default=3, metavar="N",
                   help="dumps, each with its capture (default: %(default)s)")
    p.add_argument("--test-no-wrprotect", action="store_true",
                   help="the negative control: dumps without write protection must show unexplained pages")
    p.add_argument("--keep", action="store_true", help="keep QEMU's captures (capture-N.elf, as large as RAM)")
    p.add_argument("--exclude", default=dump_mod.EVERY_PAGE, metavar="CLASSES",
                   help="page classes the dumps leave out (livedump dump --exclude); the default compares every "
                        "page of RAM (default: %(default)s)")
    p.add_argument("--reserve", type=int, default=None, metavar="PAGES",
                   help="the dumps' copy-on-write reserve (livedump dump --reserve); 0 for livedump's default "
                        f"(default: 1/{dump_mod.AMPLE_RESERVE_SHARE} of guest RAM, so that a slow host does not "
                        "exhaust it: a full reserve fails pages)")
    p = add("check-consistency", "check the test_livedump torture invariants in a dump: is it one instant?")
    p.add_argument("dump", type=Path, help="the dump: image, device or extracted file")
    p.add_argument("--vmlinux", type=Path, help="vmlinux of the dumped kernel (default: the harness build's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = add("extract", "copy the livedump at the start of a block device or disk image into a file of its own size")
    p.add_argument("source", type=Path, metavar="DEV", help="the dump target (block device or raw image)")
    p.add_argument("out", type=Path, metavar="OUT", help="the file to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    fragments = tuple(f for f in args.fragments.split(",") if f)
    if args.debug_kernel and "debug" not in fragments:
        fragments += ("debug",)
    return Options(arch=arch_mod.by_name(args.arch), fragments=fragments,
                   kernel_src=args.kernel_src.resolve() if args.kernel_src else None,
                   accel=args.accel, jobs=args.jobs, smp=args.smp, memory=args.memory,
                   timeouts=Timeouts(boot=args.boot_timeout, command=args.command_timeout, run=args.run_timeout),
                   append=tuple(shlex.split(args.append)),
                   qemu_opts=tuple(w for opt in args.qemu_opt for w in shlex.split(opt)))


def cmd_source(p: Pipeline, args) -> int:
    if args.repin:
        def check_series(src: Path) -> None:
            tree = patches_mod.make_tree(src, p.paths.trees / src.name, p.runner)
            patches_mod.apply(tree, patches_mod.parse_series(SERIES_DIR), p.runner)

        lock = source_mod.repin(LOCK_FILE, p.paths, p.runner, check_series)
        say(f"pinned {lock.package} {lock.version} (kernel {lock.kernel_release}, sha256 {lock.sha256})")
        return 0
    print(p.source())
    return 0


def cmd_patches(p: Pipeline, args) -> int:
    if args.action == "apply":
        print(p.tree())
        return 0
    tree = p.options.kernel_src or (p.paths.trees / p.source().name)
    written = patches_mod.export(tree, SERIES_DIR, p.runner)
    say(f"exported {len(written)} patches to {SERIES_DIR}")
    return 0


def cmd_config(p: Pipeline, args) -> int:
    print(p.configure().config)
    return 0


def cmd_build(p: Pipeline, args) -> int:
    result = p.build()
    print(result.vmlinux)
    return 0


def cmd_rootfs(p: Pipeline, args) -> int:
    print(p.rootfs())
    return 0


def cmd_boot(p: Pipeline, args) -> int:
    console = p.boot()
    say(f"guest {console.release} is up; serial log in {p.run.path('serial.log')}. Ctrl-] leaves.")
    try:
        console.child.send("stty echo; PS1='livedump-guest# '\n")
        console.interact()
    finally:
        console.close()
    return 0


def cmd_run(p: Pipeline, args) -> int:
    words = args.guest_command[1:] if args.guest_command[:1] == ["--"] else args.guest_command
    if not words:
        raise HarnessError("run", "no command given: python -m harness run -- COMMAND")
    command = " ".join(words)
    with p.boot() as console:
        with p.run.stage("command"):
            result = console.run(command)
    if result.output:
        print(result.output)
    p.run.facts["guest_command"] = {"command": command, "status": result.status}
    return result.status


def cmd_test(p: Pipeline, args) -> int:
    kernel = p.build()
    if not (kernel.headers / "linux" / "livedump.h").is_file():
        # A kernel that lost the series' uapi header is a failure, not a smaller test.
        raise HarnessError("test", "this kernel has no livedump: linux/livedump.h is not among its headers "
                           "(series or fragment missing); for a plain boot check: python -m harness run -- uname -r")
    verdict = e2e.dump_and_validate(p)
    if verdict.failed:
        raise HarnessError("test", f"{len(verdict.failed)} check(s) failed", detail="\n".join(verdict.failed))
    if not verdict.skipped:
        print(f"livedump end to end on {kernel.release}: {len(verdict.checks)} checks passed")
    else:
        # A skipped check is not a pass: counted and named apart.
        print(f"livedump end to end on {kernel.release}: {len(verdict.checks) - len(verdict.skipped)} checks "
              f"passed, {len(verdict.skipped)} skipped:\n  " + "\n  ".join(verdict.skipped))
    return 0


def cmd_bisect(p: Pipeline, args) -> int:
    return bisect_mod.command(p, args)


def cmd_bench(p: Pipeline, args) -> int:
    return bench_mod.command(p, args)


def cmd_soak(p: Pipeline, args) -> int:
    return soak_mod.command(p, args)


def cmd_fuzz(p: Pipeline, args) -> int:
    return fuzz_mod.command(p, args)


def cmd_faults(p: Pipeline, args) -> int:
    return faults_mod.command(p, args)


def cmd_oracle(p: Pipeline, args) -> int:
    return oracle_mod.command(p, args)


def cmd_extract(p: Pipeline, args) -> int:
    size = extract_mod.extract(args.source, args.out, force=args.force)
    say(f"{args.out}: {size} bytes (ELF headers + PT_LOAD data)")
    p.run.facts["extract"] = {"source": str(args.source), "out": str(args.out), "bytes": size}
    return 0


def cmd_check_consistency(p: Pipeline, args) -> int:
    """Exit 0: every invariant holds; 1: violations (a torn dump); 2: cannot check."""
    vmlinux = args.vmlinux or p.build().vmlinux
    report = consistency.read_and_check(args.dump, vmlinux)
    print(report.to_json() if args.json else report.text())
    p.run.facts["consistency"] = {"dump": str(args.dump), "ok": report.ok, "violations": report.violations,
                                  "lines": [f.line() for f in report.findings]}
    return 0 if report.ok else 1


COMMANDS = {"source": cmd_source, "patches": cmd_patches, "config": cmd_config, "build": cmd_build,
            "rootfs": cmd_rootfs, "boot": cmd_boot, "run": cmd_run, "test": cmd_test, "bisect": cmd_bisect,
            "check-consistency": cmd_check_consistency, "extract": cmd_extract, "bench": cmd_bench,
            "soak": cmd_soak, "fuzz": cmd_fuzz, "faults": cmd_faults, "oracle": cmd_oracle}


def report(error: HarnessError) -> None:
    log.error(f"{error.stage}: {error.message}")
    if error.detail:
        # The detail as it is (compiler errors, console lines), under the timestamped line; harness.log too.
        print(textwrap.indent(error.detail.rstrip(), "    "), file=sys.stderr)
        log.debug("detail:\n" + textwrap.indent(error.detail.rstrip(), "    "))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = Paths.from_env()
    run = Run.create(args.artifacts or paths.artifacts, args.command)
    log.console()
    log.to_run_directory(run.directory)
    log.debug(f"{program_name(sys.argv[0])} {shlex.join(sys.argv[1:] if argv is None else argv)}")
    try:
        return _main(args, run, paths)
    finally:
        log.close_run_log()


def _main(args: argparse.Namespace, run: Run, paths: Paths) -> int:
    runner = Runner(log_path=run.commands_log, verbose=args.verbose, dry_run=args.dry_run)
    try:
        pipeline = Pipeline(run, options_from(args), paths=paths, runner=runner)
        status = COMMANDS[args.command](pipeline, args)
    except subprocess.CalledProcessError as e:
        # A host step the harness expected to succeed did not: an infrastructure fault.
        stderr = (e.stderr or "").strip() if isinstance(e.stderr, str) else ""
        error = HarnessError("host", f"`{quote(e.cmd)}` exited {e.returncode}", detail=stderr,
                             exit_code=HarnessError.INFRA)
        report(error)
        run.finish("error", f"host: {error.message}")
        log.info(f"artifacts in {run.directory}")
        return error.exit_code
    except HarnessError as e:
        report(e)
        run.finish("error", f"{e.stage}: {e.message}")
        log.info(f"artifacts in {run.directory}")
        return e.exit_code
    except KeyboardInterrupt:
        run.finish("interrupted")
        log.error("interrupted")
        return 130
    run.finish("pass" if status == 0 else "fail")
    return status
