"""The bisect itself: start, step, mark, finish; it talks only to the :class:`Git`, :class:`Builder` and
:class:`Tester` interfaces, so it knows nothing about kernels or QEMU and is unit-tested with fakes.

Modes it serves: ``--good/--bad`` (optionally ``--check-endpoints`` first: both must hold before any
bisection), ``--replay LOG`` (a saved ``git bisect log``, then continue), ``--reverse`` (find the fix).
Every step keeps its artifacts (``steps/NN-<sha>/``: build.log, serial.log, result.json, verdict.json)
in the run directory, next to ``bisect.log`` (saved after every step, for ``--replay``) and
``bisect.json``. ``git bisect reset`` runs on the way out, Ctrl-C included.
"""

from __future__ import annotations

import enum
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .git import Git, Progress
from .verdict import Build, BuildOutcome, Kind, StepResult, Test, TestOutcome, Verdict, abort, bad, good, judge, skip


class Builder(Protocol):
    def build(self, rev: str, step_dir: Path) -> BuildOutcome: ...
    def cleanup(self) -> None: ...


class Tester(Protocol):
    def test(self, build: BuildOutcome, step_dir: Path, attempt: int) -> TestOutcome: ...


TERMS = ("good", "bad")  # (old, new)
REVERSE_TERMS = ("broken", "fixed")  # finding a fix: old commits fail, new ones pass


@dataclass
class Config:
    good: tuple[str, ...] = ()
    bad: str | None = None
    type: str = "test"  # build | boot | test
    tries: int = 1
    reverse: bool = False
    check_endpoints: bool = False
    replay: Path | None = None
    flaky_is_bad: bool = False
    compare_parent: bool = True


@dataclass
class Outcome:
    status: str  # found | inconclusive | aborted | endpoints
    culprit: str | None = None
    subject: str = ""
    candidates: tuple[str, ...] = ()
    reason: str = ""
    same_image_as_parent: bool | None = None
    steps: list[StepResult] = field(default_factory=list)
    log: str = ""

    @property
    def exit_code(self) -> int:
        return {"found": 0, "inconclusive": 1, "endpoints": 1, "aborted": Kind.ABORT.value}[self.status]


class Bisector:
    """Runs a bisect through the interfaces; knows nothing about kernels or QEMU."""

    def __init__(self, git: Git, builder: Builder, tester: Tester, config: Config, run_dir: Path, *,
                 say: Callable[[str], None] = lambda msg: None,
                 on_step: Callable[[StepResult], None] | None = None):
        self.on_step = on_step
        self.git = git
        self.builder = builder
        self.tester = tester
        self.config = config
        self.run_dir = run_dir
        self.say = say
        self.steps: list[StepResult] = []
        self.digests: dict[str, str] = {}

    # -- one step
    def step(self, rev: str) -> StepResult:
        index = len(self.steps) + 1
        subject = self.git.subject(rev)
        step_dir = self.run_dir / "steps" / f"{index:02d}-{rev[:12]}"
        step_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"step {index}: {rev[:12]} {subject}")
        tries: list[TestOutcome] = []
        build_status = "not run"
        digest = None
        try:
            try:
                outcome = self.builder.build(rev, step_dir)
            except Exception as e:  # a harness bug in the builder is an infrastructure fault, never a verdict
                outcome = BuildOutcome(Build.INFRA, f"builder raised {type(e).__name__}: {e}")
                (step_dir / "traceback.txt").write_text(traceback.format_exc())
            build_status = outcome.status.value
            digest = outcome.image_digest
            if digest:
                self.digests[rev] = digest
            verdict = self._verdict(outcome, step_dir, tries)
        finally:
            try:
                self.builder.cleanup()
            except Exception as e:
                verdict = abort(f"cannot clean the tree after the step: {e}")
        result = StepResult(index, rev, subject, verdict, build_status,
                            [{"status": t.status.value, "reason": t.reason} for t in tries], digest, str(step_dir))
        (step_dir / "verdict.json").write_text(json.dumps(jsonable(result), indent=2) + "\n")
        self.steps.append(result)
        if self.on_step is not None:
            self.on_step(result)
        self.say(f"step {index}: {rev[:12]} is {verdict}")
        return result

    def _verdict(self, outcome: BuildOutcome, step_dir: Path, tries: list[TestOutcome]) -> Verdict:
        cfg = self.config
        if outcome.status is Build.INFRA:
            return abort(f"build: {outcome.reason}")
        if outcome.status is Build.NO_SERIES:
            return skip(f"series does not apply: {outcome.reason}")
        if outcome.status is Build.FAILED:
            if cfg.type == "build":
                return bad(f"build failed: {outcome.reason}")
            return skip(f"build failed: {outcome.reason}")
        if cfg.type == "build":
            return good("builds")
        for attempt in range(1, cfg.tries + 1):
            try:
                t = self.tester.test(outcome, step_dir, attempt)
            except Exception as e:
                (step_dir / f"traceback-{attempt}.txt").write_text(traceback.format_exc())
                t = TestOutcome(Test.INFRA, f"tester raised {type(e).__name__}: {e}")
            tries.append(t)
            if cfg.tries > 1:
                self.say(f"  try {attempt}/{cfg.tries}: {t.status.value}{': ' + t.reason if t.reason else ''}")
            if t.status in (Test.INFRA, Test.UNTESTABLE):
                break
        return judge(tries, flaky_is_bad=cfg.flaky_is_bad)

    # -- terms
    @property
    def terms(self) -> tuple[str, str]:
        return REVERSE_TERMS if self.config.reverse else TERMS

    def term_for(self, verdict: Verdict) -> str:
        old, new = self.terms
        if verdict.kind is Kind.SKIP:
            return "skip"
        passed = verdict.kind is Kind.GOOD
        if self.config.reverse:  # old commits fail (broken), new ones pass (fixed)
            return new if passed else old
        return old if passed else new

    def save_log(self) -> str:
        try:
            text = self.git.log()
        except Exception:
            return ""
        (self.run_dir / "bisect.log").write_text(text)
        return text

    # -- the whole run
    def run(self) -> Outcome:
        cfg = self.config
        self.git.preflight()
        try:
            if cfg.replay is not None:
                progress = self.git.replay(cfg.replay)
                self.config.reverse = self.git.terms() == REVERSE_TERMS
                self.say(f"replayed {cfg.replay}")
            elif cfg.check_endpoints:
                progress = self._start_with_endpoint_checks()
                if isinstance(progress, Outcome):
                    return progress
            else:
                progress = self._start()
            self.save_log()
            while not progress.done:
                if progress.waiting:
                    return self._finish(Outcome("inconclusive", reason="git bisect is still waiting for "
                                                "a good or a bad commit: " + progress.text.strip()))
                rev = self.git.head()
                result = self.step(rev)
                if result.verdict.kind is Kind.ABORT:
                    return self._finish(Outcome("aborted", reason=result.verdict.reason))
                progress = self.git.mark(self.term_for(result.verdict))
                self.save_log()
            if progress.candidates:
                return self._finish(Outcome("inconclusive", candidates=progress.candidates,
                                            reason="only skipped commits are left"))
            assert progress.culprit is not None
            outcome = Outcome("found", culprit=progress.culprit, subject=self.git.subject(progress.culprit))
            outcome.same_image_as_parent = self._compare_with_parent(progress.culprit)
            return self._finish(outcome)
        finally:
            try:
                self.save_log()
            finally:
                self.git.reset()

    def _start(self) -> Progress:
        cfg = self.config
        if cfg.reverse:  # old = broken (--bad), new = fixed (--good)
            return self.git.start(cfg.good[0] if cfg.good else None, [cfg.bad] if cfg.bad else [], self.terms)
        return self.git.start(cfg.bad, list(cfg.good), self.terms)

    def _start_with_endpoint_checks(self) -> Progress | Outcome:
        """Start empty, then test and mark bad, then each good: both must hold before any bisection."""
        cfg = self.config
        self.git.start(None, [], self.terms)
        progress = Progress(waiting=True)
        endpoints = [(cfg.bad, Kind.BAD)] + [(g, Kind.GOOD) for g in cfg.good]
        for ref, want in endpoints:
            if ref is None:
                continue
            rev = self.git.rev_parse(ref)
            self.git.checkout(rev)
            result = self.step(rev)
            if result.verdict.kind is Kind.ABORT:
                return self._finish(Outcome("aborted", reason=result.verdict.reason))
            if result.verdict.kind is not want:
                return self._finish(Outcome("endpoints", reason=f"--{want.name.lower()} {ref} ({rev[:12]}) is not "
                                            f"{want.name.lower()}: {result.verdict}"))
            progress = self.git.mark(self.term_for(result.verdict), rev)
            self.save_log()
        return progress

    def _compare_with_parent(self, culprit: str) -> bool | None:
        parent = self.git.parent(culprit)
        if parent is None:
            return None
        stepped = {s.commit for s in self.steps}  # built once already: no image means it did not build
        for rev in (culprit, parent):
            if rev not in self.digests and rev not in stepped and self.config.compare_parent:
                self.say(f"building {rev[:12]} to compare the culprit's kernel image with its parent's")
                self.git.checkout(rev)
                compare_dir = self.run_dir / "compare" / rev[:12]
                compare_dir.mkdir(parents=True, exist_ok=True)
                try:
                    outcome = self.builder.build(rev, compare_dir)
                    if outcome.image_digest:
                        self.digests[rev] = outcome.image_digest
                except Exception as e:
                    self.say(f"cannot build {rev[:12]} to compare images: {e}")
                finally:
                    self.builder.cleanup()
        if culprit in self.digests and parent in self.digests:
            return self.digests[culprit] == self.digests[parent]
        return None

    def _finish(self, outcome: Outcome) -> Outcome:
        outcome.steps = self.steps
        outcome.log = self.save_log()
        summary = jsonable(outcome)
        summary["terms"] = list(self.terms)
        (self.run_dir / "bisect.json").write_text(json.dumps(summary, indent=2) + "\n")
        return outcome


def jsonable(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, StepResult):
        return {k: jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__} | {
            "verdict": str(obj.verdict), "kind": obj.verdict.kind.name, "reason": obj.verdict.reason,
            "confidence": obj.verdict.confidence}
    if hasattr(obj, "__dataclass_fields__"):
        return {k: jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def describe(outcome: Outcome, *, reverse: bool = False, patch_names: dict[str, str] | None = None) -> list[str]:
    """The closing lines: the culprit, its subject, the warnings."""
    what = "fixed" if reverse else "bad"
    lines = []
    if outcome.status == "found":
        assert outcome.culprit is not None
        name = (patch_names or {}).get(outcome.culprit)
        if name:
            lines.append(f"first {what} patch: {name} ({outcome.culprit[:12]} {outcome.subject})")
        else:
            lines.append(f"first {what} commit: {outcome.culprit} {outcome.subject}")
        if outcome.same_image_as_parent:
            lines.append("warning: the culprit's kernel image is identical to its parent's: the change is not in "
                         "the kernel, or the test is flaky (try --tries N)")
    elif outcome.status == "inconclusive" and outcome.candidates:
        lines.append(f"inconclusive: only skipped commits are left; the first {what} commit is one of:")
        for c in outcome.candidates:
            name = (patch_names or {}).get(c)
            lines.append(f"  {c}" + (f" ({name})" if name else ""))
    else:
        lines.append(f"{outcome.status}: {outcome.reason}")
    skipped = [s for s in outcome.steps if s.verdict.kind is Kind.SKIP]
    for s in skipped:
        lines.append(f"skipped {s.commit[:12]} {s.subject}: {s.verdict.reason}")
    return lines
