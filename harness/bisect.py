"""``python -m harness bisect``: find the commit (or our patch) that broke livedump.

The harness drives ``git bisect`` itself, one step at a time, so each step's
verdict is mapped on purpose rather than through an exit status:

=======  ====  ==============================================================
verdict  code  when
=======  ====  ==============================================================
GOOD     0     the guest test passed (every try)
BAD      1     it failed; with ``--type build``: the kernel did not build
SKIP     125   untestable: the series does not apply, the kernel does not
               build (``--type boot``/``test``), no livedump in the guest,
               or a flaky result (some tries passed, some failed)
ABORT    128   an infrastructure fault: QEMU or a host tool missing, disk
               full, a harness bug. The bisect stops; nothing is marked.
=======  ====  ==============================================================

The codes are those of ``git bisect run`` (125 skips, 128 and up abort), so
``--step`` can serve as its script.

Modes:

* ``--tree PATH --good REF --bad REF``: bisect a kernel git tree. At each
  step ``kernel-patches/`` is applied to the checkout with ``git apply
  --index`` (and reset after the step), unless the checkout already carries
  the series (then it is built as it is). One ``O=`` build directory per tree,
  so every step is an incremental build.
* ``--series [DIR]``: bisect the patch series itself on the pinned tree: a
  scratch tree gets the pristine base plus one commit per patch, and the
  culprit is reported as a patch file name.

Every step keeps its artifacts (``steps/NN-<sha>/``: build.log, serial.log,
result.json, verdict.json) in the run directory, next to ``bisect.log`` (the
``git bisect log``, saved after every step, for ``--replay``) and
``bisect.json``. ``git bisect reset`` runs on the way out, Ctrl-C included.

The verdict logic talks to small interfaces (:class:`Git`, :class:`Builder`,
:class:`Tester`), so it is unit-tested with fakes.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import mmap
import re
import shutil
import struct
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import HarnessError

# -- verdicts ------------------------------------------------------------------


class Kind(enum.Enum):
    GOOD = 0
    BAD = 1
    SKIP = 125
    ABORT = 128


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str = ""
    confidence: str = ""  # e.g. "3/3 tries passed"

    @property
    def exit_code(self) -> int:
        return self.kind.value

    def __str__(self) -> str:
        extra = f" ({self.confidence})" if self.confidence else ""
        return f"{self.kind.name.lower()}{extra}{': ' + self.reason if self.reason else ''}"


def good(reason: str = "", confidence: str = "") -> Verdict:
    return Verdict(Kind.GOOD, reason, confidence)


def bad(reason: str = "", confidence: str = "") -> Verdict:
    return Verdict(Kind.BAD, reason, confidence)


def skip(reason: str, confidence: str = "") -> Verdict:
    return Verdict(Kind.SKIP, reason, confidence)


def abort(reason: str) -> Verdict:
    return Verdict(Kind.ABORT, reason)


class Build(enum.Enum):
    OK = "ok"
    FAILED = "failed"  # the tree does not build (or configure): a fact about the commit
    NO_SERIES = "series does not apply"
    INFRA = "infra"  # the host is at fault: tool missing, disk full, harness bug


@dataclass
class BuildOutcome:
    status: Build
    reason: str = ""
    image_digest: str | None = None
    handle: Any = None  # what the Tester needs to boot this kernel (the real one: a Pipeline)


class Test(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    UNTESTABLE = "untestable"  # e.g. the kernel has no livedump: neither good nor bad
    INFRA = "infra"


@dataclass(frozen=True)
class TestOutcome:
    status: Test
    reason: str = ""


@dataclass
class StepResult:
    index: int
    commit: str
    subject: str
    verdict: Verdict
    build: str
    tries: list[dict[str, str]] = field(default_factory=list)
    image_digest: str | None = None
    directory: str = ""


# -- interfaces -----------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What ``git bisect`` said after a start or a mark."""

    culprit: str | None = None  # "<sha> is the first bad commit"
    candidates: tuple[str, ...] = ()  # only skipped commits left: the culprit is one of these
    waiting: bool = False  # good or bad endpoint still unknown
    text: str = ""

    @property
    def done(self) -> bool:
        return self.culprit is not None or bool(self.candidates)


_FIRST = re.compile(r"^([0-9a-f]{40}) is the first (\S+) commit$", re.M)
_ONLY_SKIPPED = re.compile(r"There are only 'skip'ped commits left to test\.")
_SHA_LINE = re.compile(r"^([0-9a-f]{40})$", re.M)


def parse_progress(text: str) -> Progress:
    m = _FIRST.search(text)
    if m:
        return Progress(culprit=m.group(1), text=text)
    if _ONLY_SKIPPED.search(text):
        return Progress(candidates=tuple(_SHA_LINE.findall(text.split("could be any of:", 1)[-1])), text=text)
    return Progress(waiting="waiting for" in text and "Bisecting:" not in text, text=text)


class Git(Protocol):
    def rev_parse(self, ref: str) -> str: ...
    def subject(self, rev: str) -> str: ...
    def parent(self, rev: str) -> str | None: ...
    def head(self) -> str: ...
    def checkout(self, rev: str) -> None: ...
    def preflight(self) -> None: ...
    def start(self, new: str | None, old: Sequence[str], terms: tuple[str, str]) -> Progress: ...
    def mark(self, term: str, rev: str | None = None) -> Progress: ...
    def replay(self, log: Path) -> Progress: ...
    def terms(self) -> tuple[str, str]: ...
    def log(self) -> str: ...
    def reset(self) -> None: ...


class Builder(Protocol):
    def build(self, rev: str, step_dir: Path) -> BuildOutcome: ...
    def cleanup(self) -> None: ...


class Tester(Protocol):
    def test(self, build: BuildOutcome, step_dir: Path, attempt: int) -> TestOutcome: ...


# -- the bisect itself -----------------------------------------------------------

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


def judge(tries: Sequence[TestOutcome], *, flaky_is_bad: bool = False) -> Verdict:
    """One verdict from N tries: all pass good, all fail bad, mixed is flaky (skip unless flaky_is_bad)."""
    for t in tries:
        if t.status is Test.INFRA:
            return abort(t.reason)
    untestable = [t for t in tries if t.status is Test.UNTESTABLE]
    if untestable:
        return skip(f"untestable: {untestable[0].reason}")
    n = len(tries)
    failed = [t for t in tries if t.status is Test.FAILED]
    passed = n - len(failed)
    if not failed:
        return good("test passed", f"{passed}/{n} tries passed")
    first = failed[0].reason
    if passed == 0:
        return bad(first, f"{len(failed)}/{n} tries failed")
    confidence = f"flaky: {passed}/{n} tries passed"
    if flaky_is_bad:
        return bad(first, confidence)
    return skip(f"inconclusive: {first}", confidence)


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
        (step_dir / "verdict.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
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
        summary = _jsonable(outcome)
        summary["terms"] = list(self.terms)
        (self.run_dir / "bisect.json").write_text(json.dumps(summary, indent=2) + "\n")
        return outcome


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, StepResult):
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__} | {
            "verdict": str(obj.verdict), "kind": obj.verdict.kind.name, "reason": obj.verdict.reason,
            "confidence": obj.verdict.confidence}
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
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


# -- real git ---------------------------------------------------------------------


class RealGit:
    def __init__(self, tree: Path, runner):
        self.tree = tree
        self.runner = runner

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = self.runner.run(["git", "-C", str(self.tree), *args], capture=True, check=False)
        if check and r.returncode != 0:
            raise HarnessError("git", f"`git {' '.join(args)}` exited {r.returncode}",
                               detail=((r.stdout or "") + (r.stderr or "")).strip(), exit_code=HarnessError.INFRA)
        return r

    def rev_parse(self, ref: str) -> str:
        r = self._git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
        if r.returncode != 0:
            raise HarnessError("bisect", f"{ref!r} is not a commit in {self.tree}")
        return r.stdout.strip()

    def subject(self, rev: str) -> str:
        return self._git("log", "-1", "--format=%s", rev).stdout.strip()

    def parent(self, rev: str) -> str | None:
        r = self._git("rev-parse", "-q", "--verify", f"{rev}^", check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def head(self) -> str:
        return self._git("rev-parse", "HEAD").stdout.strip()

    def checkout(self, rev: str) -> None:
        self._git("checkout", "-q", "--detach", rev)

    def preflight(self) -> None:
        if not (self.tree / ".git").exists():
            raise HarnessError("bisect", f"{self.tree} is not a git tree")
        gitdir = Path(self._git("rev-parse", "--absolute-git-dir").stdout.strip())
        if (gitdir / "BISECT_START").exists():
            raise HarnessError("bisect", f"a bisect is already running in {self.tree}; end it with "
                               f"`git -C {self.tree} bisect reset`")
        dirty = self._git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise HarnessError("bisect", f"{self.tree} has uncommitted changes; commit or stash them first "
                               "(each step resets the tree)", detail=dirty)

    def _progress(self, r: subprocess.CompletedProcess) -> Progress:
        return parse_progress((r.stdout or "") + (r.stderr or ""))

    def start(self, new: str | None, old: Sequence[str], terms: tuple[str, str]) -> Progress:
        args = ["bisect", "start", f"--term-old={terms[0]}", f"--term-new={terms[1]}"]
        if new is not None:
            args += [self.rev_parse(new), *(self.rev_parse(o) for o in old)]
        r = self._git(*args, check=False)
        if r.returncode != 0:
            text = ((r.stdout or "") + (r.stderr or "")).strip()
            self._git("bisect", "reset", check=False)
            hint = " (looking for a fix? add --reverse)" if "not ancestors" in text or "mistook" in text else ""
            raise HarnessError("bisect", f"git bisect start refused{hint}", detail=text)
        return self._progress(r)

    def mark(self, term: str, rev: str | None = None) -> Progress:
        r = self._git("bisect", term, *([rev] if rev else []), check=False)
        progress = self._progress(r)
        if r.returncode != 0 and not progress.done:
            raise HarnessError("git", f"`git bisect {term}` exited {r.returncode}",
                               detail=((r.stdout or "") + (r.stderr or "")).strip(), exit_code=HarnessError.INFRA)
        return progress

    def replay(self, log: Path) -> Progress:
        r = self._git("bisect", "replay", str(Path(log).resolve()), check=False)
        if r.returncode != 0 and not self._progress(r).done:
            raise HarnessError("bisect", f"git bisect replay {log} failed", detail=(r.stdout or "") + (r.stderr or ""))
        return self._progress(r)

    def terms(self) -> tuple[str, str]:
        old = self._git("bisect", "terms", "--term-old").stdout.strip()
        new = self._git("bisect", "terms", "--term-new").stdout.strip()
        return old, new

    def log(self) -> str:
        return self._git("bisect", "log").stdout

    def reset(self) -> None:
        self._git("reset", "-q", "--hard", check=False)
        self._git("bisect", "reset", check=False)


# -- the series on a checkout -------------------------------------------------------


def apply_series(tree: Path, patches: Sequence[Path], runner) -> str | None:
    """``git apply --index`` each patch; on failure reset and return where it failed."""
    from . import patches as patches_mod

    for patch in patches:
        r = runner.run(["git", "-C", str(tree), "apply", "--index", "--whitespace=nowarn", str(patch)],
                       capture=True, check=False)
        if r.returncode != 0:
            runner.run(["git", "-C", str(tree), "reset", "-q", "--hard"], capture=True, check=False)
            f = patches_mod.describe_failure(patch.name, (r.stdout or "") + (r.stderr or ""))
            where = f" at {f.file}:{f.line}" if f.line else (f" ({f.file})" if f.file else "")
            return f"{patch.name} does not apply{where}{', ' + f.hunk if f.hunk else ''}"
    return None


_NEW_OR_DELETED = re.compile(r"^diff --git a/(\S+) b/(\S+)\n(new|deleted) file mode", re.M)


def created_files(patches: Sequence[Path]) -> list[str]:
    """Files the series creates and leaves in place: one that a later patch deletes is not among them."""
    files: dict[str, None] = {}
    for p in patches:
        for m in _NEW_OR_DELETED.finditer(p.read_text(errors="replace")):
            if m.group(3) == "new":
                files[m.group(2)] = None
            else:
                files.pop(m.group(1), None)
    return list(files)


def carries_series(tree: Path, patches: Sequence[Path], runner) -> bool:
    """True when the checkout already holds the series (maybe with more work on top).

    Either every file the series creates is there, or (a series that creates
    none) it reverse-applies, last patch first, in a scratch index.
    """
    created = created_files(patches)
    if created:
        return all((tree / name).exists() for name in created)
    with tempfile.TemporaryDirectory(prefix="livedump-bisect-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        r = runner.run(["git", "-C", str(tree), "read-tree", "HEAD"], env=env, capture=True, check=False)
        if r.returncode != 0:
            return False
        for patch in reversed(patches):
            r = runner.run(["git", "-C", str(tree), "apply", "--cached", "-R", str(patch)], env=env, capture=True,
                           check=False)
            if r.returncode != 0:
                return False
    return True


# -- image digests --------------------------------------------------------------------

_SHF_ALLOC = 0x2
_SHT_NOBITS = 8
_SKIP_SECTIONS = {".notes"}  # the build id hashes the whole link, build number included


def image_digest(vmlinux: Path, build_dir: Path | None = None) -> str:
    """sha256 of vmlinux's loaded sections, ignoring what differs between two builds of the same code.

    Every link bumps the build number (``#N`` in UTS_VERSION) and with it the
    build id; both are masked so an unchanged tree gives the same digest.
    """
    with open(vmlinux, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _section_digest(data, build_dir)


def _section_digest(data, build_dir: Path | None) -> str:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return hashlib.sha256(data[:]).hexdigest()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = sections[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    version = b""
    if build_dir is not None:
        for name in ("utsversion.h", "compile.h"):  # 6.1 has it in utsversion.h, older kernels in compile.h
            header = build_dir / "include" / "generated" / name
            m = re.search(r'UTS_VERSION "([^"]*)"', header.read_text(errors="replace")) if header.is_file() else None
            if m:
                version = m.group(1).encode()
                break
    h = hashlib.sha256()
    for name_off, sh_type, flags, _addr, offset, size, *_ in sections:
        name = names[name_off:names.index(b"\0", name_off)].decode(errors="replace")
        if not flags & _SHF_ALLOC or sh_type == _SHT_NOBITS or name in _SKIP_SECTIONS:
            continue
        body = data[offset:offset + size]
        if version:
            body = body.replace(version, b"\0" * len(version))
        h.update(name.encode() + b"\0" + body)
    return h.hexdigest()


# -- real builder and tester ------------------------------------------------------------

_INFRA_LOG = re.compile(r"No space left on device|Killed signal terminated program|virtual memory exhausted|"
                        r"Cannot allocate memory|Input/output error")
MIN_FREE_BYTES = 2 << 30


class PipelineBuilder:
    """Each step: (series) + configure + incremental build in the tree's fixed O= directory."""

    def __init__(self, tree: Path, options, paths, runner, *, series: Sequence[Path] = (),
                 apply: str = "auto", say: Callable[[str], None] = lambda msg: None):
        self.tree = tree
        self.options = options
        self.paths = paths
        self.runner = runner
        self.series = list(series)
        self.apply = apply  # auto | always | never
        self.say = say
        self._dirty = False
        self._last = None

    @property
    def _accel(self):
        return getattr(self._last, "_accel", None)

    def build(self, rev: str, step_dir: Path) -> BuildOutcome:
        from .artifacts import Run
        from .errors import BuildError, ConfigError, SourceError, ToolMissing
        from .pipeline import Pipeline

        if self.series and self.apply != "never":
            if self.apply == "auto" and carries_series(self.tree, self.series, self.runner):
                self.say("  the checkout carries the series: built as it is")
            else:
                self._dirty = True
                failure = apply_series(self.tree, self.series, self.runner)
                if failure:
                    self.say(f"  series: {failure}")
                    return BuildOutcome(Build.NO_SERIES, failure)
        run = Run(directory=step_dir, command="bisect-step")
        run.write_result()
        from .runner import Runner
        runner = Runner(log_path=run.commands_log, verbose=self.runner.verbose)
        p = Pipeline(run, self.options, paths=self.paths, runner=runner)
        if self._accel is not None:  # probe KVM once per bisect, not once per step
            p._accel = self._accel
            run.facts["accel"] = {"used": self._accel.accel, "why": self._accel.reason + " (probed at an earlier step)"}
        self._last = p
        try:
            build_dir = p.build_dir()
            build_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(build_dir).free
            if free < MIN_FREE_BYTES:
                return BuildOutcome(Build.INFRA, f"disk full: {free >> 20} MiB free under {build_dir}")
            kernel = p.build()
        except ToolMissing as e:
            return self._finish(run, BuildOutcome(Build.INFRA, str(e)))
        except (BuildError, ConfigError, SourceError) as e:
            log = run.path("build.log")
            text = log.read_text(errors="replace") if log.is_file() else ""
            if _INFRA_LOG.search(text):
                return self._finish(run, BuildOutcome(Build.INFRA, f"{e} ({_INFRA_LOG.search(text).group(0)})"))
            first = e.detail.strip().splitlines()[:1]
            return self._finish(run, BuildOutcome(Build.FAILED, f"{e}" + (f": {first[0].strip()}" if first else "")))
        except HarnessError as e:
            kind = Build.INFRA if e.exit_code == HarnessError.INFRA else Build.FAILED
            return self._finish(run, BuildOutcome(kind, str(e)))
        except (OSError, subprocess.CalledProcessError) as e:
            return self._finish(run, BuildOutcome(Build.INFRA, f"{type(e).__name__}: {e}"))
        digest = image_digest(kernel.vmlinux, kernel.build_dir)
        return self._finish(run, BuildOutcome(Build.OK, kernel.release, digest, handle=p))

    def _finish(self, run, outcome: BuildOutcome) -> BuildOutcome:
        run.facts["bisect_build"] = {"status": outcome.status.value, "reason": outcome.reason,
                                     "image_digest": outcome.image_digest}
        run.finish(outcome.status.value, None if outcome.status is Build.OK else outcome.reason or None)
        return outcome

    def cleanup(self) -> None:
        if self._dirty:
            self._dirty = False
            self.runner.run(["git", "-C", str(self.tree), "reset", "-q", "--hard"], capture=True, check=True)


GUEST_TESTS = ("drgn", "dump", "boot")


class PipelineTester:
    """Boots the step's kernel and runs a guest test through the harness."""

    def __init__(self, name: str = "drgn", *, kind: str = "test", say: Callable[[str], None] = lambda msg: None):
        if name not in GUEST_TESTS:
            raise HarnessError("bisect", f"unknown --test {name!r}; choose from {', '.join(GUEST_TESTS)}")
        self.name = "boot" if kind == "boot" else name
        self.say = say

    def test(self, build: BuildOutcome, step_dir: Path, attempt: int) -> TestOutcome:
        from .artifacts import Run
        from .errors import GuestCrashed, GuestTimeout, ToolMissing

        base = build.handle
        run_dir = step_dir if attempt == 1 else step_dir / f"try-{attempt}"
        run_dir.mkdir(parents=True, exist_ok=True)
        p = base
        if attempt > 1:  # the same kernel, its own serial log and disks
            p = copy.copy(base)
            p.run = Run(directory=run_dir, command=f"bisect-test-{attempt}")
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

    def _run(self, p) -> TestOutcome:
        from . import dump as dump_mod
        from . import e2e, validate

        kernel = p.build()
        if self.name == "boot":
            with p.boot() as console:
                uname = console.run("uname -r", check=True).output.strip()
            if uname != kernel.release:
                return TestOutcome(Test.FAILED, f"guest runs {uname!r}, the build is {kernel.release!r}")
            return TestOutcome(Test.PASSED)
        if not (kernel.headers / "linux" / "livedump.h").is_file():
            return TestOutcome(Test.UNTESTABLE, "this kernel has no livedump (no linux/livedump.h)")
        if self.name == "dump":
            verdict = e2e.dump_and_validate(p)
            if verdict.failed:
                return TestOutcome(Test.FAILED, "; ".join(verdict.failed[:3]))
            return TestOutcome(Test.PASSED)
        # drgn: one dump under load, read back with drgn only
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
        view = validate.read_with_drgn(dump_mod.dump_image(disks), kernel.vmlinux)
        problems = []
        if view.init_comm != "swapper/0":
            problems.append(f"init_task.comm is {view.init_comm!r}")
        if view.release != kernel.release:
            problems.append(f"release is {view.release!r}, the build is {kernel.release!r}")
        loads = sum(comm == dump_mod.LOAD_TASK for _, comm in view.tasks)
        if loads < 3:
            problems.append(f"{loads} {dump_mod.LOAD_TASK} tasks in the task list")
        if taken.markers.before not in view.log:
            problems.append("marker A is missing from the printk buffer")
        if taken.markers.after in view.log:
            problems.append("marker B (written after the dump) is in it")
        if view.nr_prstatus != p.options.smp:
            problems.append(f"{view.nr_prstatus} NT_PRSTATUS notes for {p.options.smp} CPUs")
        return TestOutcome(Test.FAILED, "; ".join(problems)) if problems else TestOutcome(Test.PASSED)


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


# -- series mode ----------------------------------------------------------------------

SCRATCH_MARK = "livedump-bisect-scratch"


def scratch_tree(source_tree: Path, work: Path, runner) -> Path:
    """A clone of the harness tree that bisect may reset at will (marked as such); made once, then reused.

    Reusing one path keeps make's view of the sources (and the O= directory) so builds stay incremental.
    """
    from .patches import BASE_TAG

    if (work / ".git").is_dir():
        if not (work / ".git" / SCRATCH_MARK).is_file():
            raise HarnessError("bisect", f"{work} is a git tree that bisect did not make; it will not reset it "
                               "(give another --tree, or remove it)")
        runner.run(["git", "-C", str(work), "bisect", "reset"], capture=True, check=False)
        runner.run(["git", "-C", str(work), "am", "--abort"], capture=True, check=False)
        runner.run(["git", "-C", str(work), "fetch", "-q", "--force", "--tags", str(source_tree),
                    "HEAD:refs/livedump/source"], capture=True)
    else:
        work.parent.mkdir(parents=True, exist_ok=True)
        runner.run(["git", "clone", "-q", "--no-checkout", str(source_tree), str(work)], capture=True)
        (work / ".git" / SCRATCH_MARK).write_text(f"made by python -m harness bisect from {source_tree}\n")
    runner.run(["git", "-C", str(work), "rev-parse", "-q", "--verify", f"refs/tags/{BASE_TAG}"], capture=True)
    return work


def series_commits(work: Path, patches: Sequence[Path], runner) -> dict[str, str]:
    """Reset the scratch tree to the base and commit each patch with ``git am``; {commit: patch name}."""
    from .patches import BASE_TAG, GIT_ENV

    runner.run(["git", "-C", str(work), "checkout", "-q", "-f", "-B", "livedump-series-bisect", BASE_TAG],
               capture=True)
    runner.run(["git", "-C", str(work), "clean", "-q", "-fdx"], capture=True)
    names: dict[str, str] = {}
    for patch in patches:
        r = runner.run(["git", "-C", str(work), "am", "-q", "--keep-cr", str(patch)], env=GIT_ENV, capture=True,
                       check=False)
        if r.returncode != 0:
            runner.run(["git", "-C", str(work), "am", "--abort"], capture=True, check=False)
            raise HarnessError("bisect", f"{patch.name} does not apply on the pinned tree: a series that does not "
                               "apply cannot be bisected", detail=(r.stdout or "") + (r.stderr or ""))
        head = runner.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture=True).stdout.strip()
        names[head] = patch.name
    return names


def resolve_patch_ref(ref: str, names: dict[str, str], base: str) -> str:
    """--good/--bad in series mode: a patch file name, its number (1-based), "base", or a commit."""
    ordered = list(names)
    if ref == "base" or ref == "0":
        return base
    if ref.isdigit() and 1 <= int(ref) <= len(ordered):
        return ordered[int(ref) - 1]
    for commit, name in names.items():
        if ref == name or name.startswith(ref):
            return commit
    return ref


# -- the command ----------------------------------------------------------------------


def add_arguments(p) -> None:
    """The ``bisect`` subcommand's own options (cli.py adds the common ones)."""
    g = p.add_argument_group("bisect")
    g.add_argument("--tree", type=Path, metavar="PATH",
                   help="kernel git tree to bisect (series mode: the scratch tree, default $CACHE/bisect/series)")
    g.add_argument("--good", action="append", default=[], metavar="REF",
                   help="a commit where the test passes (repeatable); series mode: a patch name or number")
    g.add_argument("--bad", metavar="REF", help="a commit where the test fails; series mode: default the last patch")
    g.add_argument("--type", choices=("build", "boot", "test"), default="test",
                   help="which stage's failure is 'bad'; earlier stages' failures are skips (default: %(default)s)")
    g.add_argument("--test", choices=GUEST_TESTS, default="drgn",
                   help="guest test: drgn (one dump under load read back by drgn), dump (the end-to-end test: "
                   "drgn and crash), boot (default: %(default)s)")
    g.add_argument("--tries", type=int, default=1, metavar="N", help="run the test N times per step")
    g.add_argument("--flaky-is-bad", action="store_true",
                   help="with --tries: a step that fails some tries is bad (default: skipped as inconclusive)")
    g.add_argument("--reverse", action="store_true", help="find the commit that fixed it (good is newer than bad)")
    g.add_argument("--check-endpoints", action="store_true", help="first prove that good is good and bad is bad")
    g.add_argument("--replay", type=Path, metavar="LOG", help="replay a saved bisect.log, then continue")
    g.add_argument("--manual", action="store_true", help="boot each step's kernel and ask for the verdict")
    g.add_argument("--series", nargs="?", type=Path, const=Path("kernel-patches"), metavar="DIR",
                   help="bisect the patch series DIR (default kernel-patches/) on the pinned tree")
    g.add_argument("--apply-series", choices=("auto", "always", "never"), default="auto",
                   help="apply kernel-patches/ at each step: auto = unless the checkout already carries it "
                   "(the files the series creates exist)")
    g.add_argument("--no-compare-parent", action="store_true",
                   help="do not build the culprit's parent to compare kernel images")
    g.add_argument("--keep-images", action="store_true",
                   help="keep every step's guest disk images (default: only a bad step's, as evidence)")
    g.add_argument("--step", action="store_true",
                   help="test the tree's current checkout once and exit 0/1/125/128 (a `git bisect run` script)")


def command(p, args) -> int:
    """``python -m harness bisect``; ``p`` is the run's Pipeline."""
    import dataclasses
    import signal
    import sys

    from .patches import BASE_TAG, parse_series
    from .pipeline import say
    from .settings import REPO_ROOT, SERIES_DIR

    if p.runner.dry_run:
        raise HarnessError("bisect", "bisect has no --dry-run: every step builds and boots")
    if args.tries < 1:
        raise HarnessError("bisect", "--tries must be at least 1")
    names: dict[str, str] = {}
    if args.series is not None:
        if args.step or args.replay:
            raise HarnessError("bisect", "--series cannot be combined with --step or --replay")
        directory = args.series if args.series.is_absolute() or args.series.exists() else REPO_ROOT / args.series
        patches = parse_series(directory).patches
        if not patches:
            raise HarnessError("bisect", f"{directory} holds no patches")
        pinned = dataclasses.replace(p.options, kernel_src=None)
        source_tree = type(p)(p.run, pinned, paths=p.paths, runner=p.runner).tree()
        tree = (args.tree or p.paths.cache / "bisect" / "series").resolve()
        scratch_tree(source_tree, tree, p.runner)
        names = series_commits(tree, patches, p.runner)
        base = RealGit(tree, p.runner).rev_parse(BASE_TAG)
        good = tuple(resolve_patch_ref(g, names, base) for g in args.good) or (base,)
        bad_ref = resolve_patch_ref(args.bad, names, base) if args.bad else list(names)[-1]
        series: Sequence[Path] = ()
        apply = "never"
        say(f"series mode: {len(patches)} patches from {directory} committed in {tree}")
    else:
        if args.tree is None:
            raise HarnessError("bisect", "give --tree PATH (a kernel git tree) or --series")
        tree = args.tree.resolve()
        if not args.step and not args.replay and (not args.good or not args.bad):
            raise HarnessError("bisect", "give both --good REF and --bad REF (or --replay LOG)")
        good, bad_ref = tuple(args.good), args.bad
        series = parse_series(SERIES_DIR).patches
        apply = args.apply_series
    options = dataclasses.replace(p.options, kernel_src=tree)
    builder = PipelineBuilder(tree, options, p.paths, p.runner, series=series, apply=apply, say=say)
    tester: Tester = (ManualTester(say=say) if args.manual else PipelineTester(args.test, kind=args.type, say=say))
    config = Config(good=good, bad=bad_ref, type=args.type, tries=args.tries, reverse=args.reverse,
                    check_endpoints=args.check_endpoints, replay=args.replay, flaky_is_bad=args.flaky_is_bad,
                    compare_parent=not args.no_compare_parent)
    git = RealGit(tree, p.runner)
    on_step = None if args.keep_images else drop_disk_images
    bisector = Bisector(git, builder, tester, config, p.run.directory, say=say, on_step=on_step)
    if args.step:
        return _one_step(bisector, git, p)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        outcome = bisector.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = describe(outcome, reverse=bisector.config.reverse, patch_names=names)
    for line in lines:
        print(line)
    sys.stdout.flush()
    say(f"bisect log: {p.run.path('bisect.log')}; steps in {p.run.path('steps')}")
    p.run.facts["bisect"] = {"status": outcome.status, "culprit": outcome.culprit, "subject": outcome.subject,
                             "patch": names.get(outcome.culprit or ""), "candidates": list(outcome.candidates),
                             "steps": len(outcome.steps), "same_image_as_parent": outcome.same_image_as_parent,
                             "reason": outcome.reason}
    if outcome.status == "aborted":
        raise HarnessError("bisect", f"aborted: {outcome.reason}", exit_code=Kind.ABORT.value)
    return outcome.exit_code


def drop_disk_images(result: StepResult) -> None:
    """A dump image is as big as guest RAM: keep it only where the test failed."""
    if result.verdict.kind is Kind.BAD or not result.directory:
        return
    for image in Path(result.directory).rglob("*.img"):
        image.unlink(missing_ok=True)


def _one_step(bisector: Bisector, git: Git, p) -> int:
    """``--step``: one verdict for the current checkout, exit code for `git bisect run`; never 1 or 125 by accident."""
    from .pipeline import say

    try:
        result = bisector.step(git.head())
        verdict = result.verdict
    except BaseException as e:  # noqa: B036 -- Ctrl-C, a harness bug: abort the git bisect run, never judge
        verdict = abort(f"{type(e).__name__}: {e}")
    say(f"verdict: {verdict}")
    p.run.facts["bisect_step"] = {"verdict": verdict.kind.name, "reason": verdict.reason}
    return verdict.exit_code
