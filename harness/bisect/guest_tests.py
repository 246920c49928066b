"""What ``--test`` runs in a booted step kernel: each takes the step's Pipeline and says passed, failed
or untestable. Errors they raise are mapped to outcomes by :class:`~.testers.PipelineTester`."""

from __future__ import annotations

from .. import dump as dump_mod
from .. import e2e, validate
from ..pipeline import Pipeline
from .verdict import Test, TestOutcome

MIN_LOAD_TASKS = 3  # start_load() starts three


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


def drgn(p: Pipeline) -> TestOutcome:
    """``--test drgn``: one dump under load, read back with drgn only."""
    if not has_livedump(p):
        return NO_LIVEDUMP
    kernel = p.build()
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory))
    with p.boot(disks) as console:
        if console.run("command -v livedump").status != 0:
            return TestOutcome(Test.UNTESTABLE, "the guest has no livedump tool")
        dump_mod.start_load(console)
        # A kernel that hangs in the dump is bad; do not wait the tool's 15 minutes for it.
        taken = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET, timeout=p.options.timeouts.command)
        dump_mod.stop_load(console)
    if taken.result.status != 0:
        return TestOutcome(Test.FAILED, f"livedump dump exited {taken.result.status}")
    assert taken.markers is not None
    view = validate.read_with_drgn(dump_mod.dump_image(disks), kernel.vmlinux)
    problems = []
    if view.init_comm != "swapper/0":
        problems.append(f"init_task.comm is {view.init_comm!r}")
    if view.release != kernel.release:
        problems.append(f"release is {view.release!r}, the build is {kernel.release!r}")
    loads = sum(comm == dump_mod.LOAD_TASK for _, comm in view.tasks)
    if loads < MIN_LOAD_TASKS:
        problems.append(f"{loads} {dump_mod.LOAD_TASK} tasks in the task list")
    if taken.markers.before not in view.log:
        problems.append("marker A is missing from the printk buffer")
    if taken.markers.after in view.log:
        problems.append("marker B (written after the dump) is in it")
    if view.nr_prstatus != p.options.smp:
        problems.append(f"{view.nr_prstatus} NT_PRSTATUS notes for {p.options.smp} CPUs")
    return TestOutcome(Test.FAILED, "; ".join(problems)) if problems else TestOutcome(Test.PASSED)
