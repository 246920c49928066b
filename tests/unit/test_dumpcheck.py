"""harness.dumpcheck: the one verdict on a dump, judged on made-up drgn views and crash sessions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness import consistency, dumpcheck, validate
from harness.console import CommandResult
from harness.dump import DumpRun, Markers

RELEASE = "6.1.192-livedump"
SAW = dumpcheck.GuestSaw(RELEASE, 2, Markers("livedump-marker-A-1", "livedump-marker-B-1"), "harness test",
                         {"cow_faults": "12", "failed_pages": "0"})
STOP = ["multi_cpu_stop", "cpu_stopper_thread", "smpboot_thread_fn"]


def good_view() -> validate.DrgnView:
    return validate.DrgnView(release=RELEASE, init_comm="swapper/0",
                             tasks=[(1, "init"), (50, "ldload"), (51, "ldload"), (52, "ldload")],
                             log="booting\nlivedump-marker-A-1\n", nr_prstatus=2, prstatus_pids=[0, 0],
                             stop_functions=["multi_cpu_stop"] * 2, stop_traces=[STOP, STOP])


def bt(cpu: int, frames: list[str]) -> str:
    head = f'PID: 0      TASK: ffffffff8260a940  CPU: {cpu}   COMMAND: "swapper/{cpu}"\n'
    return head + "".join(f" #{i} [ffffc90000003e{i}8] {f} at ffffffff8110{i}000\n" for i, f in enumerate(frames))


def good_session() -> validate.CrashSession:
    return validate.CrashSession({
        "extend /x/livedump.so": "livedump: struct pid size fixed, task table rebuilt: 61 tasks\n",
        "sys": "      KERNEL: vmlinux\n     RELEASE: 6.1.192-livedump\n",
        "help -o": "  pid_numbers: 80\n  pid: 112\n",
        "ps": "   PID    PPID  CPU  TASK  ST  %MEM  VSZ  RSS  COMM\n     50      1   0  ffff  RU  0.0  0  0  ldload\n",
        "log": "[    0.0] booting\n[   12.3] livedump-marker-A-1\n",
        "bt -a": bt(0, STOP) + "\n" + bt(1, STOP),
        "kmem -i": "  TOTAL MEM  123456  482 MB\n",
        "kmem -s": "CACHE  OBJSIZE  ALLOCATED  TOTAL  SLABS  SSIZE  NAME\nffff  192  10  20  1  4k  kmalloc-192\n",
        "files 1": "PID: 1  TASK: ffff  CPU: 0  COMMAND: \"init\"\n  0 ffff ffff ffff CHR  /dev/console\n",
        "vm 2": "PID: 2  TASK: ffff  CPU: 1  COMMAND: \"kthreadd\"\n",
        "livedump": "LIVEDUMP note:\n    reason:        harness test\n    COW faults:    12\n",
        "livedump -c": "checked 2 CPUs, 131072 pages\n  result: OK\n",
    })


def failed_names(checks: list[dumpcheck.Check]) -> list[str]:
    return [c.name for c in checks if not c.ok]


def test_a_good_dump_passes_every_check():
    view, session = good_view(), good_session()
    checks = dumpcheck.drgn_checks(view, SAW) + dumpcheck.unwind_checks(view, SAW) + \
        dumpcheck.crash_checks(session, view, SAW)
    assert failed_names(checks) == [], [str(c) for c in checks if not c.ok]
    assert len(checks) == 6 + 1 + 9 + len(dumpcheck.CRASH_COMMANDS) + 1
    assert len({c.name for c in checks}) == len(checks)  # names are unique: they are how callers find a check


@pytest.mark.parametrize("change,failed", [
    (dict(init_comm="init"), ["drgn: init_task.comm is swapper/0"]),
    (dict(release="6.1.0"), ["drgn: release is the built kernel's"]),
    (dict(tasks=[(50, "ldload")]), ["drgn: the load's processes are in the task list"]),
    (dict(log="booting\n"), ["drgn: marker A is in the printk buffer"]),
    (dict(log="livedump-marker-A-1\nlivedump-marker-B-1\n"), ["drgn: marker B is not"]),
    (dict(nr_prstatus=1), ["drgn: one NT_PRSTATUS per CPU"]),
])
def test_drgn_checks_catch_each_wrong_view(change, failed):
    assert failed_names(dumpcheck.drgn_checks(replace(good_view(), **change), SAW)) == failed


def test_unwinding_from_the_last_context_switch_fails():
    view = replace(good_view(), stop_traces=[["__schedule", "schedule"], STOP])
    assert failed_names(dumpcheck.unwind_checks(view, SAW)) == ["drgn: each CPU's task unwinds from the stop instant"]


@pytest.mark.parametrize("command", dumpcheck.CRASH_COMMANDS)
def test_a_crash_command_that_printed_nothing_fails(command):
    """crash died mid-script: the commands after it have no output, and that is never "no errors"."""
    session = good_session()
    del session.outputs[command]
    assert f"crash: `{command}` reads without errors" in failed_names(dumpcheck.crash_checks(session, good_view(),
                                                                                           SAW))


@pytest.mark.parametrize("command,text,failed", [
    ("livedump -c", "checked 2 CPUs\n  result: FAILED (3 pages)\n", "crash: `livedump -c` says result: OK"),
    ("livedump -c", "checked 2 CPUs\n", "crash: `livedump -c` says result: OK"),
    ("help -o", "  pid: 112\n", "crash: struct pid read whole (extension loaded)"),
    ("help -o", "  pid_numbers: 112\n  pid: 112\n", "crash: struct pid read whole (extension loaded)"),
    ("sys", "     RELEASE: 6.1.0\n", "crash: sys shows the built release"),
    ("log", "livedump-marker-A-1\nlivedump-marker-B-1\n", "crash: log has A and not B"),
    ("ps", "   PID  COMM\n     1  init\n", "crash: ps lists the load"),
    ("bt -a", bt(0, STOP), "crash: bt -a unwinds each CPU from its NT_PRSTATUS rip"),
    ("bt -a", bt(0, ["__schedule", "multi_cpu_stop"]) + bt(1, STOP),
     "crash: bt -a unwinds each CPU from its NT_PRSTATUS rip"),
    ("livedump", "    reason:        other\n    COW faults:    12\n",
     "crash: livedump shows the reason and counters the guest saw"),
    ("livedump", "    reason:        harness test\n    COW faults:    11\n",
     "crash: livedump shows the reason and counters the guest saw"),
    ("extend /x/livedump.so", "extend: /x/livedump.so: no such file\n",
     "crash: the extension loaded and rebuilt the task table"),
    ("files 1", "PID: 1  TASK: ffff\n", "crash: files 1 shows init's /dev/console"),
    ("kmem -s", "kmem: invalid structure member offset: kmem_cache_s_num\n", "crash: `kmem -s` reads without errors"),
])
def test_crash_checks_catch_each_wrong_reading(command, text, failed):
    session = good_session()
    session.outputs[command] = text
    assert failed in failed_names(dumpcheck.crash_checks(session, good_view(), SAW))


def test_drgn_only_reads_no_crash_and_makes_only_drgn_checks(tmp_path, monkeypatch):
    stages: list[str] = []
    monkeypatch.setattr(validate, "read_with_drgn", lambda image, vmlinux: good_view())
    monkeypatch.setattr(validate, "run_crash", lambda *a, **kw: pytest.fail("crash was run"))

    class Stage:
        def __init__(self, name):
            stages.append(name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    verdict = dumpcheck.check_dump(tmp_path / "dump.img", tmp_path / "vmlinux", SAW, stage=Stage)
    assert verdict.crash is None and verdict.failed == [] and stages == ["drgn"]
    assert [c.name for c in verdict.checks] == [c.name for c in dumpcheck.drgn_checks(good_view(), SAW)]


def test_with_crash_every_reader_runs_and_every_check_is_made(tmp_path, monkeypatch):
    runs = []
    monkeypatch.setattr(validate, "read_with_drgn", lambda image, vmlinux: good_view())
    monkeypatch.setattr(validate, "build_crash_extension", lambda out: Path("/x/livedump.so"))

    def run_crash(image, vmlinux, commands, *, log, extension):
        runs.append((image, vmlinux, list(commands), log, extension))
        return good_session()

    monkeypatch.setattr(validate, "run_crash", run_crash)
    verdict = dumpcheck.check_dump(tmp_path / "dump.img", tmp_path / "vmlinux", SAW, crash_dir=tmp_path)
    assert runs == [(tmp_path / "dump.img", tmp_path / "vmlinux", dumpcheck.CRASH_COMMANDS, tmp_path / "crash.log",
                     Path("/x/livedump.so"))]
    assert verdict.failed == [] and verdict.crash is not None
    assert verdict.named("crash: ") and verdict.named("drgn: each CPU")


def test_what_the_guest_saw_needs_the_markers():
    taken = DumpRun(CommandResult("livedump dump", 0, ""), {"cow_faults": "3"}, None, "r")
    with pytest.raises(ValueError, match="markers"):
        dumpcheck.GuestSaw.of(taken, RELEASE, 2)
    saw = dumpcheck.GuestSaw.of(replace(taken, markers=SAW.markers), RELEASE, 2)
    assert (saw.reason, saw.counters, saw.cpus) == ("r", {"cow_faults": "3"}, 2)


@pytest.mark.parametrize("protected,bad,counters,ok", [
    (True, [], {"cow_faults": "12", "failed_pages": "0"}, True),
    (True, [(0x1000,)], {"cow_faults": "12", "failed_pages": "0"}, False),
    (False, [], {"cow_faults": "12", "failed_pages": "0"}, False),
    (True, [], {"failed_pages": "0"}, False),  # counters missing: not a proof
    (True, [], {"cow_faults": "12"}, False),
])
def test_a_torture_dump_is_judged_by_protected_dump_problems(monkeypatch, protected, bad, counters, ok):
    monkeypatch.setattr(consistency, "read_and_check", lambda image, vmlinux: consistency.Report(
        str(image), [consistency.Finding("pair under spinlock", checked=64, bad=bad)], protected, []))
    verdict = dumpcheck.check_torture_dump(Path("t.img"), Path("vmlinux"), counters)
    assert verdict.check.ok is ok, verdict.check
    assert verdict.report.findings[0].name == "pair under spinlock"
