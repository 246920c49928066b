"""One verdict on a dump, shared by ``make test-qemu`` (e2e), the integration tests and bisect's default test.

:func:`check_dump` takes a dump image, its vmlinux and what the guest saw around the dump
(:class:`GuestSaw`: the release, the CPUs, the printk markers written just before and after it, the reason
and counters ``livedump dump`` printed), reads the image with drgn (and crash with the livedump extension,
unless asked for drgn only) and returns named checks. The judging is plain functions on what drgn and
crash read (:func:`drgn_checks`, :func:`unwind_checks`, :func:`crash_checks`), so it is unit-tested on
made-up views and sessions.

A reader that cannot read the dump's architecture (Debian's crash is x86-64 only) gives a skipped check
that says why (:meth:`Check.skip`): neither a pass nor a failure, and never silent.

Every check fails closed: a crash command that printed nothing failed
(:meth:`validate.CrashSession.failures`), ``livedump -c`` must say ``result: OK``
(:meth:`validate.CrashSession.livedump_check_ok`), a crash that cannot tell whether it reads ``struct pid``
whole fails (:func:`validate.crash_pid_problem`). A torture dump is judged by
:func:`consistency.protected_dump_problems` (:func:`check_torture_dump`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from . import consistency, validate
from .arch import DEFAULT as DEFAULT_ARCH
from .arch import Arch
from .dump import LOAD_TASK, DumpRun, Markers

# crash with crash-patches/livedump.so loaded (it repairs what crash 8.0.2 misreads on 6.1).
# `vm` only on a kernel thread (kthreadd, pid 2): crash 8.0.2 cannot walk 6.1's maple tree.
CRASH_COMMANDS = ["sys", "help -o", "ps", "log", "bt -a", "kmem -i", "kmem -s", "files 1", "vm 2", "livedump",
                  "livedump -c"]
MIN_LOAD_TASKS = 3  # dump.start_load() starts three


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    # Not made (detail says why): not ok, and not a failure either.
    skipped: bool = False

    @classmethod
    def skip(cls, name: str, reason: str) -> Check:
        return cls(name, False, reason, skipped=True)

    @property
    def failed(self) -> bool:
        return not self.ok and not self.skipped

    @property
    def verdict(self) -> str:
        """ok, FAIL or skip, four wide: how a check's line starts."""
        return "skip" if self.skipped else "ok  " if self.ok else "FAIL"

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else self.name


@dataclass(frozen=True)
class GuestSaw:
    """What the guest saw around the dump: the truth the dump is checked against."""

    release: str  # the kernel the guest ran (uname -r; the build's release)
    cpus: int
    markers: Markers  # written to /dev/kmsg just before (A) and just after (B) the dump
    reason: str  # livedump dump --reason
    counters: Mapping[str, str] = field(default_factory=dict)  # livedump dump's closing counters

    @classmethod
    def of(cls, taken: DumpRun, release: str, cpus: int) -> GuestSaw:
        if taken.markers is None:
            raise ValueError("a dump checked against what the guest saw needs its markers (dump_with_markers)")
        return cls(release, cpus, taken.markers, taken.reason, dict(taken.status))


@dataclass
class DumpVerdict:
    checks: list[Check]
    view: validate.DrgnView
    crash: validate.CrashSession | None = None  # None: checked with drgn only

    @property
    def failed(self) -> list[str]:
        return [str(c) for c in self.checks if c.failed]

    @property
    def skipped(self) -> list[str]:
        return [str(c) for c in self.checks if c.skipped]

    def named(self, prefix: str) -> list[Check]:
        return [c for c in self.checks if c.name.startswith(prefix)]


def _no_stage(name: str) -> AbstractContextManager:
    return contextlib.nullcontext()


CRASH_SKIPPED = "crash: reads the dump with the livedump extension"


def check_dump(image: Path, vmlinux: Path, saw: GuestSaw, *, crash_dir: Path | None = None,
               stage: Callable[[str], AbstractContextManager] = _no_stage,
               arch: Arch = DEFAULT_ARCH) -> DumpVerdict:
    """Read ``image`` with drgn, and with crash when ``crash_dir`` is given (its extension is built and its
    log written there); ``stage(name)`` wraps each reader (a run's stage timer).

    drgn only is what every livedump kernel must show (bisect's default test: a kernel from early in the
    series is not judged by what later patches add); with crash, every check make test-qemu makes. A dump
    of an ``arch`` crash cannot read gets the skipped check CRASH_SKIPPED with the reason instead.
    """
    with stage("drgn"):
        view = validate.read_with_drgn(image, vmlinux)
    checks = drgn_checks(view, saw)
    if crash_dir is None:
        return DumpVerdict(checks, view)
    if not arch.reads("crash"):
        return DumpVerdict(checks + unwind_checks(view, saw)
                           + [Check.skip(CRASH_SKIPPED, arch.reader_skip_reason("crash"))], view)
    with stage("crash"):
        extension = validate.build_crash_extension(crash_dir / "crash-extension")
        session = validate.run_crash(image, vmlinux, CRASH_COMMANDS, log=crash_dir / "crash.log",
                                     extension=extension)
    return DumpVerdict(checks + unwind_checks(view, saw) + crash_checks(session, view, saw), view, session)


def drgn_checks(view: validate.DrgnView, saw: GuestSaw) -> list[Check]:
    """The dump is the guest's kernel at one instant between the two markers."""
    loads = sum(comm == LOAD_TASK for _, comm in view.tasks)
    return [
        Check("drgn: init_task.comm is swapper/0", view.init_comm == "swapper/0", view.init_comm),
        Check("drgn: release is the built kernel's", view.release == saw.release,
              f"{view.release}, the build is {saw.release}"),
        Check("drgn: the load's processes are in the task list", loads >= MIN_LOAD_TASKS, f"{loads} {LOAD_TASK} tasks"),
        Check("drgn: marker A is in the printk buffer", saw.markers.before in view.log),
        Check("drgn: marker B is not", saw.markers.after not in view.log),
        Check("drgn: one NT_PRSTATUS per CPU", view.nr_prstatus == saw.cpus,
              f"{view.nr_prstatus} notes for {saw.cpus} CPUs"),
    ]


def unwind_checks(view: validate.DrgnView, saw: GuestSaw) -> list[Check]:
    unwound = validate.stop_trace_problems(view, saw.cpus)
    return [Check("drgn: each CPU's task unwinds from the stop instant", not unwound,
                  "; ".join(unwound or [" < ".join(t[:3]) for t in view.stop_traces]))]


def crash_checks(session: validate.CrashSession, view: validate.DrgnView, saw: GuestSaw) -> list[Check]:
    """Debian's crash with the livedump extension reads what drgn read, and every command reads cleanly."""
    out = session.outputs
    log = out.get("log", "")
    pid_problem = validate.crash_pid_problem(session)
    extend = next((text for cmd, text in out.items() if cmd.startswith("extend ")), "")
    checks = [
        Check("crash: sys shows the built release", validate.crash_release(session) == saw.release,
              str(validate.crash_release(session))),
        Check("crash: log has A and not B", saw.markers.before in log and saw.markers.after not in log),
        Check("crash: the extension loaded and rebuilt the task table", "task table rebuilt" in extend,
              next((ln.strip() for ln in extend.splitlines() if "task table rebuilt" in ln),
                   extend.strip()[:200] or "(no extend output)")),
        Check("crash: struct pid read whole (extension loaded)", pid_problem is None, pid_problem or ""),
        Check("crash: ps lists the load", LOAD_TASK in out.get("ps", "")),
        _backtrace_check(out.get("bt -a", ""), view, saw.cpus),
        Check("crash: files 1 shows init's /dev/console", "/dev/console" in out.get("files 1", "")),
        Check("crash: vm 2 is kthreadd's", "kthreadd" in out.get("vm 2", "")),
        _livedump_note_check(out.get("livedump", ""), saw),
    ]
    for cmd in CRASH_COMMANDS:
        bad = session.failures(cmd)
        checks.append(Check(f"crash: `{cmd}` reads without errors", not bad, "; ".join(bad[:3])))
    checks.append(Check("crash: `livedump -c` says result: OK", session.livedump_check_ok(),
                        out.get("livedump -c", "(no output)").strip()[-300:]))
    return checks


def _backtrace_check(bt: str, view: validate.DrgnView, cpus: int) -> Check:
    """``bt -a`` unwinds each CPU's running task from its NT_PRSTATUS rip, not from its last context switch.
    crash 8.0.2's stack-scanning unwinder may show a stale text address found at the saved rsp first."""
    traces = validate.crash_backtraces(bt)
    heads = [traces.get(cpu, [])[:2] for cpu in range(cpus)]
    ok = (sorted(traces) == list(range(cpus)) and len(view.stop_functions) == cpus
          and all(f in h for f, h in zip(view.stop_functions, heads, strict=True))
          and not any("__schedule" in frames for frames in traces.values()))
    return Check("crash: bt -a unwinds each CPU from its NT_PRSTATUS rip", ok,
                 f"first frames per CPU {heads}, rip symbols {view.stop_functions}")


def _livedump_note_check(text: str, saw: GuestSaw) -> Check:
    reason = re.search(r"^\s+reason:\s+(.*)$", text, re.M)
    cow = re.search(r"^\s+COW faults:\s+(\d+)", text, re.M)
    ok = bool(reason and cow) and reason.group(1) == saw.reason \
        and int(cow.group(1)) == int(saw.counters.get("cow_faults", -1))
    return Check("crash: livedump shows the reason and counters the guest saw", ok,
                 f"reason {reason.group(1) if reason else None!r}, COW faults {cow.group(1) if cow else None}, "
                 f"the guest saw {saw.reason!r} and {saw.counters.get('cow_faults')}")


@dataclass
class TortureVerdict:
    check: Check
    report: consistency.Report


def check_torture_dump(image: Path, vmlinux: Path, counters: Mapping[str, str], *,
                       arch: Arch = DEFAULT_ARCH) -> TortureVerdict:
    """A dump taken under lib/test_livedump.c's writers: one instant, by the consistency checker's verdict
    (protected, untorn, every invariant exercised, COW faults, no failed page), but for what ``arch``'s
    write protection does not cover (its known gaps, named in the report)."""
    report = consistency.read_and_check(image, vmlinux)
    problems = consistency.protected_dump_problems(report, dict(counters),
                                                   not_protected_here=arch.unprotected_mappings)
    return TortureVerdict(Check("consistency: the dump under test_livedump holds every invariant", not problems,
                                "; ".join(problems) or f"0 violations, COW faults {counters.get('cow_faults')}"),
                          report)
