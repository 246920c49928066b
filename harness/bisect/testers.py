"""The real :class:`Tester`s: a guest test through the harness (:class:`PipelineTester`), or the user
judging each step (:class:`ManualTester`, ktest's manual bisect)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from ..artifacts import Run
from ..errors import GuestCrashed, GuestTimeout, HarnessError, ToolMissing
from ..pipeline import Pipeline
from . import guest_tests
from .verdict import BuildOutcome, Test, TestOutcome

# --test NAME: each takes the step's Pipeline (see guest_tests).
GUEST_TESTS: dict[str, Callable[[Pipeline], TestOutcome]] = {
    "drgn": guest_tests.drgn, "dump": guest_tests.end_to_end, "consistency": guest_tests.torture_consistency,
    "boot": guest_tests.boot}
# The tests a developer brings: --guest-cmd CMD and --dump-check SCRIPT (they replace --test).
GUEST_CMD = "guest-cmd"
DUMP_CHECK = "dump-check"


class PipelineTester:
    """Boots the step's kernel and runs a guest test through the harness."""

    def __init__(self, name: str = "drgn", *, kind: str = "test", guest_cmd: str | None = None,
                 dump_check: Path | None = None, say: Callable[[str], None] = lambda msg: None):
        if name not in GUEST_TESTS:
            raise HarnessError("bisect", f"unknown --test {name!r}; choose from {', '.join(GUEST_TESTS)}")
        if guest_cmd is not None and dump_check is not None:
            raise HarnessError("bisect", "give --guest-cmd or --dump-check, not both")
        own = GUEST_CMD if guest_cmd is not None else DUMP_CHECK if dump_check is not None else None
        if own and kind != "test":
            raise HarnessError("bisect", f"--{own} is a guest test: it needs --type test, not --type {kind}")
        self.name = own or ("boot" if kind == "boot" else name)
        self.guest_cmd = guest_cmd
        self.dump_check = dump_check
        self.say = say

    def test(self, build: BuildOutcome, step_dir: Path, attempt: int) -> TestOutcome:
        base = build.handle
        run_dir = step_dir if attempt == 1 else step_dir / f"try-{attempt}"
        run_dir.mkdir(parents=True, exist_ok=True)
        p = base
        if attempt > 1:  # the same kernel, its own serial log and disks
            p = base.for_run(Run(directory=run_dir, command=f"bisect-test-{attempt}"))
        run = p.run
        try:
            outcome = self._run(p)
        except ToolMissing as e:
            outcome = TestOutcome(Test.INFRA, str(e))
        except (GuestCrashed, GuestTimeout) as e:
            outcome = TestOutcome(Test.FAILED, str(e))
        except HarnessError as e:
            outcome = TestOutcome(Test.INFRA if e.exit_code == HarnessError.INFRA else Test.FAILED, str(e))
        except (OSError, subprocess.CalledProcessError) as e:
            outcome = TestOutcome(Test.INFRA, f"{type(e).__name__}: {e}")
        except Exception as e:
            if type(e).__module__.split(".")[0] in ("drgn", "_drgn"):  # drgn could not read the dump: a torn dump
                outcome = TestOutcome(Test.FAILED, f"drgn: {type(e).__name__}: {e}")
            else:
                raise
        run.facts["bisect_test"] = {"test": self.name, "status": outcome.status.value, "reason": outcome.reason}
        run.finish(outcome.status.value, outcome.reason or None)
        return outcome

    def _run(self, p: Pipeline) -> TestOutcome:
        if self.guest_cmd is not None:
            return guest_tests.guest_command(p, self.guest_cmd)
        if self.dump_check is not None:
            return guest_tests.dump_check(p, self.dump_check)
        return GUEST_TESTS[self.name](p)


class ManualTester:
    """``--manual``: the user judges each step (ktest's manual bisect), optionally on a guest console."""

    def __init__(self, ask: Callable[[str], str] = input, *, console: bool = True,
                 say: Callable[[str], None] = lambda msg: None):
        self.ask = ask
        self.console = console
        self.say = say

    def test(self, build: BuildOutcome, step_dir: Path, attempt: int) -> TestOutcome:
        if self.console and build.handle is not None:
            p = build.handle
            console = p.boot()
            self.say(f"guest {console.release} is up; test it, then Ctrl-] to leave")
            try:
                console.child.send("stty echo; PS1='livedump-guest# '\n")
                console.interact()
            finally:
                console.close()
        while True:
            answer = self.ask("verdict? [g]ood, [b]ad, [s]kip, [a]bort: ").strip().lower()
            if answer in ("g", "good"):
                return TestOutcome(Test.PASSED, "manual: good")
            if answer in ("b", "bad"):
                return TestOutcome(Test.FAILED, "manual: bad")
            if answer in ("s", "skip"):
                return TestOutcome(Test.UNTESTABLE, "manual: skip")
            if answer in ("a", "abort"):
                return TestOutcome(Test.INFRA, "manual: aborted by the user")
