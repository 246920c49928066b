"""What ``--test`` runs in a booted step kernel: each takes the step's Pipeline and says passed, failed
or untestable. Errors they raise are mapped to outcomes by :class:`~.testers.PipelineTester`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .. import dump as dump_mod
from .. import dumpcheck, e2e
from ..pipeline import Pipeline
from ..qemu import Disk
from .verdict import Test, TestOutcome


def has_livedump(p: Pipeline) -> bool:
    return (p.build().headers / "linux" / "livedump.h").is_file()


NO_LIVEDUMP = TestOutcome(Test.UNTESTABLE, "this kernel has no livedump (no linux/livedump.h)")


def boot(p: Pipeline) -> TestOutcome:
    """The step's kernel boots to a shell and is the one just built."""
    kernel = p.build()
    with p.boot() as console:
        uname = console.run("uname -r", check=True).output.strip()
    if uname != kernel.release:
        return TestOutcome(Test.FAILED, f"guest runs {uname!r}, the build is {kernel.release!r}")
    return TestOutcome(Test.PASSED)


def end_to_end(p: Pipeline) -> TestOutcome:
    """``--test dump``: everything make test-qemu checks."""
    if not has_livedump(p):
        return NO_LIVEDUMP
    checks = e2e.dump_and_validate(p)
    if checks.failed:
        return TestOutcome(Test.FAILED, "; ".join(checks.failed[:3]))
    return TestOutcome(Test.PASSED)


def _dump_under_load(p: Pipeline) -> tuple[tuple[Disk, ...], dump_mod.DumpRun | TestOutcome]:
    """One dump under the e2e load, as ``--test drgn`` and ``--dump-check`` take it: the disks, and the dump
    or the outcome that ends the step (no livedump in the kernel or the guest, the dump failed)."""
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory))
    if not has_livedump(p):
        return disks, NO_LIVEDUMP
    with p.boot(disks) as console:
        if console.run("command -v livedump").status != 0:
            return disks, TestOutcome(Test.UNTESTABLE, "the guest has no livedump tool")
        dump_mod.start_load(console)
        # A kernel that hangs in the dump is bad; do not wait the tool's 15 minutes for it.
        taken = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET, timeout=p.options.timeouts.command)
        dump_mod.stop_load(console)
    if taken.result.status != 0:
        return disks, TestOutcome(Test.FAILED, f"livedump dump exited {taken.result.status}")
    return disks, taken


def drgn(p: Pipeline) -> TestOutcome:
    """``--test drgn``: one dump under load, read back with drgn only."""
    disks, taken = _dump_under_load(p)
    if isinstance(taken, TestOutcome):
        return taken
    kernel = p.build()
    saw = dumpcheck.GuestSaw.of(taken, kernel.release, p.options.smp)
    verdict = dumpcheck.check_dump(dump_mod.dump_image(disks), kernel.vmlinux, saw)
    return TestOutcome(Test.FAILED, "; ".join(verdict.failed)) if verdict.failed else TestOutcome(Test.PASSED)


def torture_consistency(p: Pipeline) -> TestOutcome:
    """``--test consistency``: one dump under lib/test_livedump.c's writers and the consistency checker only,
    the verdict make test-qemu gives such a dump: which commit made dumps torn?"""
    if not has_livedump(p):
        return NO_LIVEDUMP
    kernel = p.build()
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory))
    with p.boot(disks) as console:
        if console.run("command -v livedump").status != 0:
            return TestOutcome(Test.UNTESTABLE, "the guest has no livedump tool")
        if not dump_mod.has_torture(console):
            return TestOutcome(Test.UNTESTABLE, "this kernel has no test_livedump (CONFIG_TEST_LIVEDUMP)")
        dump_mod.torture(console, True)
        taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="bisect consistency",
                              timeout=p.options.timeouts.command)
        dump_mod.torture(console, False)
    if taken.result.status != 0:
        return TestOutcome(Test.FAILED, f"livedump dump under test_livedump exited {taken.result.status}")
    torture = dumpcheck.check_torture_dump(dump_mod.dump_image(disks), kernel.vmlinux, taken.status)
    p.run.path("consistency.txt").write_text(torture.report.text() + "\n")
    return TestOutcome(Test.PASSED) if torture.check.ok else TestOutcome(Test.FAILED, torture.check.detail)


SKIP_STATUS = 125  # `git bisect run`'s "cannot test this commit"
FIRST_ABORT_STATUS = 128  # `git bisect run` stops at 128 and above (and a script killed by a signal)


def guest_command(p: Pipeline, command: str) -> TestOutcome:
    """``--guest-cmd CMD``: the developer's own test, run by the guest's shell. The guest has the usual disks:
    /dev/vda a scratch disk, /dev/vdb a dump target as big as its RAM (``livedump dump /dev/vdb`` works)."""
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory))
    with p.boot(disks) as console:
        result = console.run(command, timeout=p.options.timeouts.run)
    p.run.path("guest-cmd.log").write_text(f"$ {command}\n{result.output}\nexit status {result.status}\n")
    what = f"guest command exited {result.status}"
    if result.status == 0:
        return TestOutcome(Test.PASSED)
    if result.status == SKIP_STATUS:
        return TestOutcome(Test.UNTESTABLE, f"{what} (skip)")
    # In the guest every other status is the kernel's doing, a process killed by a signal (128+N) included.
    return TestOutcome(Test.FAILED, f"{what}: {_last_line(result.output)}")


def dump_check_argv(script: Path, image: Path, vmlinux: Path) -> list[str]:
    """A Python script runs under the harness's interpreter, which has drgn; anything else runs as it is."""
    head = [sys.executable] if script.suffix == ".py" else []
    return [*head, str(script), str(image), str(vmlinux)]


def dump_check_env(image: Path, vmlinux: Path, release: str, cpus: int, taken: dump_mod.DumpRun,
                   step_dir: Path) -> dict[str, str]:
    """What the script gets besides its two arguments (README, Bisect, lists them)."""
    assert taken.markers is not None
    return {"LIVEDUMP_DUMP": str(image), "LIVEDUMP_VMLINUX": str(vmlinux), "LIVEDUMP_RELEASE": release,
            "LIVEDUMP_CPUS": str(cpus), "LIVEDUMP_REASON": taken.reason,
            "LIVEDUMP_MARKER_BEFORE": taken.markers.before, "LIVEDUMP_MARKER_AFTER": taken.markers.after,
            "LIVEDUMP_STEP_DIR": str(step_dir)}


def dump_check(p: Pipeline, script: Path) -> TestOutcome:
    """``--dump-check SCRIPT``: one dump under load (as ``--test drgn`` takes it), judged by the developer's
    script on the host: ``SCRIPT DUMP VMLINUX``; its exit status is the verdict as for ``git bisect run``."""
    disks, taken = _dump_under_load(p)
    if isinstance(taken, TestOutcome):
        return taken
    kernel = p.build()
    image = dump_mod.dump_image(disks)
    argv = dump_check_argv(script, image, kernel.vmlinux)
    env = dump_check_env(image, kernel.vmlinux, kernel.release, p.options.smp, taken, p.run.directory)
    p.runner.record(argv, cwd=p.run.directory, env=env, mutates=False)
    log = p.run.path("dump-check.log")
    try:
        with open(log, "w") as out:
            status = subprocess.run(argv, cwd=p.run.directory, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, timeout=p.options.timeouts.run).returncode
    except subprocess.TimeoutExpired:  # no exit status, so no verdict: stop rather than guess
        return TestOutcome(Test.INFRA, f"{script.name} ran longer than {p.options.timeouts.run:.0f}s (see {log})")
    what = f"{script.name} exited {status}"
    if status == 0:
        return TestOutcome(Test.PASSED)
    if status == SKIP_STATUS:
        return TestOutcome(Test.UNTESTABLE, f"{what} (skip)")
    if status < 0 or status >= FIRST_ABORT_STATUS:
        return TestOutcome(Test.INFRA, f"{what}: 128 and above (or a signal) stop the bisect, as in git bisect run")
    return TestOutcome(Test.FAILED, f"{what}: {_last_line(log.read_text(errors='replace'))}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "(no output)"
