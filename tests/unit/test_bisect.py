"""harness.bisect with real git on tiny trees and fake builders/testers: no kernel, no QEMU.

Each tiny commit carries a ``state`` file (``build=ok|fail|infra``, ``test=pass|fail|infra|untestable|
flaky:PFP``, ``image=...``) that the fakes read from the checkout, so ``git bisect`` really walks the history.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import bisect as b
from harness import cli
from harness import pipeline as pipeline_mod
from harness.bisect import cli as bisect_cli
from harness.errors import BuildError, GuestCrashed, GuestTimeout, HarnessError, ToolMissing
from harness.runner import Runner

from .conftest import commit_all, git, git_out

# -- fakes ------------------------------------------------------------------------


def read_state(tree: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (tree / "state").read_text().splitlines() if "=" in line)


class FakeBuilder:
    def __init__(self, tree: Path):
        self.tree = tree
        self.built: list[str] = []
        self.cleanups = 0

    def build(self, rev: str, step_dir: Path) -> b.BuildOutcome:
        self.built.append(rev)
        state = read_state(self.tree)
        (step_dir / "build.log").write_text(f"building {rev}\n")
        image = state.get("image", rev)
        if state.get("build") == "fail":
            return b.BuildOutcome(b.Build.FAILED, "kernel/x.c:1: error: expected ';'")
        if state.get("build") == "infra":
            return b.BuildOutcome(b.Build.INFRA, "disk full")
        if state.get("build") == "raise":
            raise RuntimeError("harness bug")
        return b.BuildOutcome(b.Build.OK, "6.1.0", image_digest=image, handle=rev)

    def cleanup(self) -> None:
        self.cleanups += 1


class FakeTester:
    def __init__(self, tree: Path):
        self.tree = tree
        self.tested: list[str] = []

    def test(self, build: b.BuildOutcome, step_dir: Path, attempt: int) -> b.TestOutcome:
        self.tested.append(build.handle)
        result = read_state(self.tree).get("test", "pass")
        if result.startswith("flaky:"):
            pattern = result.split(":", 1)[1]
            result = "pass" if pattern[(attempt - 1) % len(pattern)] == "P" else "fail"
        if result == "interrupt":
            raise KeyboardInterrupt
        return {
            "pass": b.TestOutcome(b.Test.PASSED),
            "fail": b.TestOutcome(b.Test.FAILED, "drgn: marker B is present"),
            "infra": b.TestOutcome(b.Test.INFRA, "qemu-system-x86_64 not found"),
            "untestable": b.TestOutcome(b.Test.UNTESTABLE, "no livedump"),
        }[result]


def make_history(repo: Path, states: list[str], root: str = "build=ok,test=pass,image=root") -> list[str]:
    """A repo with a root commit (good unless told), then one commit per state; returns [root, c1, c2, ...]."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "state").write_text(root.replace(",", "\n") + "\n")
    shas = [commit_all(repo, "root")]
    for i, state in enumerate(states, 1):
        (repo / "state").write_text(state.replace(",", "\n") + "\n")
        (repo / f"file{i}").write_text(f"{i}\n")
        shas.append(commit_all(repo, f"commit {i}"))
    return shas


def run_bisect(repo: Path, tmp_path: Path, config: b.Config, *, builder=None, tester=None):
    builder = builder or FakeBuilder(repo)
    tester = tester or FakeTester(repo)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    bisector = b.Bisector(b.RealGit(repo, Runner()), builder, tester, config, run_dir)
    return bisector.run(), builder, tester, run_dir


def not_bisecting(repo: Path) -> bool:
    return not (repo / ".git" / "BISECT_START").exists() and git_out(repo, "symbolic-ref", "HEAD") == "refs/heads/main"


GOOD = "build=ok,test=pass"
BAD = "build=ok,test=fail"
NOBUILD = "build=fail,test=pass"

# -- pure pieces -------------------------------------------------------------------


def test_verdict_exit_codes_are_git_bisect_run_codes():
    assert [b.good().exit_code, b.bad().exit_code, b.skip("x").exit_code, b.abort("x").exit_code] == [0, 1, 125, 128]
    # 255 would abort `git bisect run` by accident and 1..127 would mark bad: ABORT is 128 exactly.
    assert b.Kind.ABORT.value == 128


def test_parse_progress_from_git_texts():
    sha = "a" * 40
    done = b.parse_progress(f"{sha} is the first bad commit\ncommit {sha}\nAuthor: x\n")
    assert done.culprit == sha and done.done
    fixed = b.parse_progress(f"{sha} is the first fixed commit\n")
    assert fixed.culprit == sha
    only = b.parse_progress("There are only 'skip'ped commits left to test.\nThe first bad commit could be any of:\n"
                            f"{'b' * 40}\n{'c' * 40}\nWe cannot bisect more!\n")
    assert only.candidates == ("b" * 40, "c" * 40) and only.culprit is None and only.done
    step = b.parse_progress(f"Bisecting: 3 revisions left to test after this (roughly 2 steps)\n[{sha}] subject\n")
    assert not step.done and not step.waiting
    assert b.parse_progress("status: waiting for good commit(s), bad commit known\n").waiting


@pytest.mark.parametrize("tries,flaky_is_bad,expected,confidence", [
    (["P", "P", "P"], False, b.Kind.GOOD, "3/3 tries passed"),
    (["F", "F", "F"], False, b.Kind.BAD, "3/3 tries failed"),
    (["P", "F", "P"], False, b.Kind.SKIP, "flaky: 2/3 tries passed"),
    (["P", "F", "P"], True, b.Kind.BAD, "flaky: 2/3 tries passed"),
    (["P", "I"], False, b.Kind.ABORT, ""),
    (["F", "U"], False, b.Kind.SKIP, ""),
])
def test_judge(tries, flaky_is_bad, expected, confidence):
    status = {"P": b.Test.PASSED, "F": b.Test.FAILED, "I": b.Test.INFRA, "U": b.Test.UNTESTABLE}
    verdict = b.judge([b.TestOutcome(status[t], t) for t in tries], flaky_is_bad=flaky_is_bad)
    assert verdict.kind is expected
    assert verdict.confidence == confidence


# -- bisecting tiny histories with the fakes ------------------------------------------


def test_finds_the_culprit_and_skips_the_broken_build(tmp_path):
    repo = tmp_path / "repo"
    # c4 does not build (c5 fixes it), c6 breaks the test.
    shas = make_history(repo, [GOOD, GOOD, GOOD, NOBUILD, GOOD, BAD, BAD, BAD])
    outcome, builder, tester, run_dir = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[8]))
    assert outcome.status == "found" and outcome.exit_code == 0
    assert outcome.culprit == shas[6]
    assert outcome.subject == "commit 6"
    verdicts = {s.commit: s.verdict for s in outcome.steps}
    assert verdicts[shas[4]].kind is b.Kind.SKIP
    assert "build failed" in verdicts[shas[4]].reason
    assert shas[4] not in tester.tested  # a kernel that does not build is never booted
    assert builder.cleanups == len(builder.built)
    assert not_bisecting(repo)
    log = (run_dir / "bisect.log").read_text()
    assert f"git bisect skip {shas[4]}" in log and f"first bad commit: [{shas[6]}]" in log
    step_dirs = sorted((run_dir / "steps").iterdir())
    assert len(step_dirs) == len(outcome.steps)
    saved = json.loads((step_dirs[0] / "verdict.json").read_text())
    assert saved["commit"] == outcome.steps[0].commit and (step_dirs[0] / "build.log").is_file()
    summary = json.loads((run_dir / "bisect.json").read_text())
    assert summary["culprit"] == shas[6] and summary["status"] == "found"
    assert {s["commit"]: s["kind"] for s in summary["steps"]}[shas[4]] == "SKIP"
    assert summary["same_image_as_parent"] is False
    lines = b.describe(outcome)
    assert lines[0] == f"first bad commit: {shas[6]} commit 6"
    assert any(line.startswith(f"skipped {shas[4][:12]}") for line in lines)


def test_build_failure_is_bad_when_bisecting_the_build(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, GOOD, NOBUILD, NOBUILD, NOBUILD])
    outcome, builder, tester, _ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[5], type="build"))
    assert outcome.culprit == shas[3]
    assert tester.tested == []  # --type build never boots
    assert builder.built.count(shas[3]) == 1  # a culprit that does not build is not rebuilt to compare images
    assert outcome.same_image_as_parent is None
    assert all(s.verdict.kind in (b.Kind.GOOD, b.Kind.BAD) for s in outcome.steps)


def test_build_failure_is_a_skip_when_bisecting_boot(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, NOBUILD, GOOD, BAD])
    outcome, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[4], type="boot"))
    assert outcome.culprit == shas[4]
    kinds = {s.commit: s.verdict.kind for s in outcome.steps}
    # git bisect's first pick is the middle commit, the one that does not build: met, and skipped.
    assert kinds[shas[2]] is b.Kind.SKIP
    assert b.Kind.BAD not in [kinds.get(shas[i]) for i in (1, 2, 3)]


def test_only_skipped_commits_left_is_inconclusive(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [NOBUILD, NOBUILD, BAD])
    outcome, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[3]))
    assert outcome.status == "inconclusive" and outcome.exit_code == 1
    assert set(outcome.candidates) == {shas[1], shas[2], shas[3]}
    assert "one of" in b.describe(outcome)[0]


@pytest.mark.parametrize("state", ["build=infra", "build=ok,test=infra", "build=raise"])
def test_infrastructure_fault_aborts_without_marking(tmp_path, state):
    repo = tmp_path / "repo"
    shas = make_history(repo, [state, state, state, BAD])
    outcome, _, _, run_dir = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[4]))
    assert outcome.status == "aborted" and outcome.exit_code == 128
    assert len(outcome.steps) == 1 and outcome.steps[0].verdict.kind is b.Kind.ABORT
    log = (run_dir / "bisect.log").read_text()
    marked = [line.split()[-1] for line in log.splitlines() if line.startswith("git bisect")]
    assert outcome.steps[0].commit not in marked
    assert not_bisecting(repo)


def test_ctrl_c_resets_the_bisect_and_keeps_the_log(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, GOOD, GOOD, "build=ok,test=interrupt", BAD])
    with pytest.raises(KeyboardInterrupt):
        run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[5]))
    assert not_bisecting(repo)
    assert "git bisect start" in (tmp_path / "run" / "bisect.log").read_text()


def test_flaky_results_with_tries(tmp_path):
    repo = tmp_path / "repo"
    # c2 fails one try in three: inconclusive, so skipped; c3 really breaks it.
    shas = make_history(repo, [GOOD, "build=ok,test=flaky:PFP", BAD, BAD])
    outcome, _, tester, _ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[4], tries=3))
    by_commit = {s.commit: s for s in outcome.steps}
    flaky = by_commit[shas[2]]
    assert flaky.verdict.kind is b.Kind.SKIP and flaky.verdict.confidence == "flaky: 2/3 tries passed"
    assert [t["status"] for t in flaky.tries] == ["passed", "failed", "passed"]
    assert tester.tested.count(shas[2]) == 3
    assert all(s.verdict.confidence.endswith("3/3 tries passed") or s.verdict.kind is not b.Kind.GOOD
               for s in outcome.steps)
    # c2 is skipped and sits right before c3: git cannot tell which of the two is first
    assert outcome.status == "inconclusive" and set(outcome.candidates) == {shas[2], shas[3]}

    # --flaky-is-bad: the intermittent failure counts, and c2 is the culprit.
    repo2 = tmp_path / "repo2"
    shas = make_history(repo2, [GOOD, "build=ok,test=flaky:PFP", BAD, BAD])
    outcome, *_ = run_bisect(repo2, tmp_path, b.Config(good=(shas[0],), bad=shas[4], tries=3, flaky_is_bad=True))
    assert outcome.culprit == shas[2]


def test_reverse_finds_the_fix(tmp_path):
    repo = tmp_path / "repo"
    # Broken from the root (test fails) until c4 fixes it.
    shas = make_history(repo, [BAD, BAD, BAD, GOOD, GOOD, GOOD], root=BAD)
    # Without --reverse git refuses (good is newer than bad) and says how to look for a fix.
    with pytest.raises(HarnessError, match="--reverse"):
        run_bisect(repo, tmp_path, b.Config(good=(shas[6],), bad=shas[0]))
    assert not_bisecting(repo)
    outcome, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[6],), bad=shas[0], reverse=True))
    assert outcome.status == "found" and outcome.culprit == shas[4]
    assert b.describe(outcome, reverse=True)[0].startswith(f"first fixed commit: {shas[4]}")
    assert "git bisect fixed" in outcome.log and "git bisect broken" in outcome.log


def test_replay_continues_where_a_run_stopped(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, GOOD, GOOD, GOOD, GOOD, BAD, BAD, BAD])
    # First run: the tester's host breaks at the third step.
    builder, tester = FakeBuilder(repo), FakeTester(repo)
    calls = {"n": 0}
    real_test = tester.test

    def flaky_host(build, step_dir, attempt):
        calls["n"] += 1
        if calls["n"] == 3:
            return b.TestOutcome(b.Test.INFRA, "QEMU vanished")
        return real_test(build, step_dir, attempt)

    tester.test = flaky_host
    (tmp_path / "one").mkdir()
    first, *_ = run_bisect(repo, tmp_path / "one", b.Config(good=(shas[0],), bad=shas[8]), builder=builder,
                           tester=tester)
    assert first.status == "aborted"
    log = tmp_path / "one" / "run" / "bisect.log"
    decided = {s.commit for s in first.steps if s.verdict.kind is not b.Kind.ABORT}
    assert len(decided) == 2 and all(c in log.read_text() for c in decided)
    # Second run: replay the log, test only what is left.
    (tmp_path / "two").mkdir()
    second, builder2, _, _ = run_bisect(repo, tmp_path / "two", b.Config(replay=log))
    assert second.culprit == shas[6]
    assert not decided & set(builder2.built[:len(second.steps)])
    assert not_bisecting(repo)


def test_check_endpoints_refuses_a_bad_good(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [BAD, BAD, BAD])
    outcome, builder, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[1],), bad=shas[3], check_endpoints=True))
    assert outcome.status == "endpoints" and outcome.exit_code == 1
    assert "--good" in outcome.reason and "is not good" in outcome.reason
    assert builder.built == [shas[3], shas[1]]  # bad first, then good; nothing else
    assert not_bisecting(repo)


def test_check_endpoints_then_bisect(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, BAD, BAD])
    outcome, builder, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[3], check_endpoints=True))
    assert outcome.culprit == shas[2]
    assert builder.built[:2] == [shas[3], shas[0]]


def test_warns_when_the_culprit_image_equals_its_parent(tmp_path):
    repo = tmp_path / "repo"
    # c2 "breaks" the test but builds the very same image as c1: probably flaky, or not a kernel change.
    shas = make_history(repo, ["build=ok,test=pass,image=same", "build=ok,test=fail,image=same",
                               "build=ok,test=fail,image=other"])
    outcome, builder, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[3]))
    assert outcome.culprit == shas[2]
    assert outcome.same_image_as_parent is True
    assert any(line.startswith("warning: the culprit's kernel image is identical") for line in b.describe(outcome))
    # A real change: no warning.
    repo2 = tmp_path / "repo2"
    shas = make_history(repo2, ["build=ok,test=pass,image=a", "build=ok,test=fail,image=b"])
    outcome, *_ = run_bisect(repo2, tmp_path, b.Config(good=(shas[0],), bad=shas[2]))
    assert outcome.same_image_as_parent is False
    assert not any("warning" in line for line in b.describe(outcome))


def test_dirty_tree_is_refused_and_left_alone(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, BAD])
    (repo / "file1").write_text("local change\n")
    with pytest.raises(HarnessError, match="uncommitted changes"):
        run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[2]))
    assert (repo / "file1").read_text() == "local change\n"


# -- the series on a checkout ---------------------------------------------------------


def tiny_series(tmp_path: Path) -> tuple[Path, list[Path], str]:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.c").write_text("".join(f"int a{i};\n" for i in range(10)))
    base = commit_all(repo, "base")
    (repo / "a.c").write_text((repo / "a.c").read_text().replace("int a3;", "int a3 = 3; /* livedump */"))
    commit_all(repo, "patch one")
    (repo / "new.c").write_text("int livedump;\n")
    commit_all(repo, "patch two")
    out = tmp_path / "series"
    git(repo, "format-patch", "-q", "-o", str(out), f"{base}..HEAD")
    patches = sorted(out.glob("*.patch"))
    git(repo, "checkout", "-q", base)
    return repo, patches, base


def test_a_file_the_series_deletes_again_is_not_required(tmp_path):
    repo, patches, base = tiny_series(tmp_path)
    git(repo, "checkout", "-q", "main")
    (repo / "gone.c").write_text("int gone;\n")
    commit_all(repo, "patch three: a file")
    git(repo, "rm", "-q", "gone.c")
    commit_all(repo, "patch four: gone again")
    out = tmp_path / "series4"
    git(repo, "format-patch", "-q", "-o", str(out), f"{base}..HEAD")
    patches4 = sorted(out.glob("*.patch"))
    assert b.created_files(patches4) == ["new.c"]
    assert b.carries_series(repo, patches4, Runner())
    git(repo, "checkout", "-q", base)
    assert not b.carries_series(repo, patches4, Runner())


def test_apply_series_and_reset(tmp_path):
    repo, patches, base = tiny_series(tmp_path)
    runner = Runner()
    assert not b.carries_series(repo, patches, runner)
    assert b.apply_series(repo, patches, runner) is None
    assert (repo / "new.c").is_file()
    git(repo, "reset", "-q", "--hard")
    assert not (repo / "new.c").exists() and git_out(repo, "status", "--porcelain") == ""
    git(repo, "checkout", "-q", "main")
    assert b.carries_series(repo, patches, runner)
    (repo / "new.c").write_text("int livedump;\nint more_work_on_top;\n")
    commit_all(repo, "more work on top of the series")
    assert b.carries_series(repo, patches, runner)
    # Upstream moved the line the first patch touches: reported, tree left clean.
    git(repo, "checkout", "-q", base)
    (repo / "a.c").write_text("int other;\n")
    commit_all(repo, "upstream rewrote a.c")
    failure = b.apply_series(repo, patches, runner)
    assert failure is not None and failure.startswith(patches[0].name + " does not apply")
    assert git_out(repo, "status", "--porcelain") == ""


def test_pipeline_builder_applies_the_series_for_the_step_only(tmp_path, monkeypatch):
    repo, patches, base = tiny_series(tmp_path)
    (repo / "Makefile").write_text("all:\n")
    (repo / "Kconfig").write_text("")
    commit_all(repo, "upstream: a kernel at last")
    seen = []

    def fake_build(self):
        seen.append((repo / "new.c").is_file())
        raise BuildError("make failed (exit 2)", detail="new.c:1: error: boom")

    monkeypatch.setattr(pipeline_mod.Pipeline, "build", fake_build)
    paths = pipeline_mod.Paths(cache=tmp_path / "cache", artifacts=tmp_path / "art")
    builder = b.PipelineBuilder(repo, pipeline_mod.Options(kernel_src=repo), paths, Runner(), series=patches)
    (tmp_path / "step").mkdir()
    outcome = builder.build(git_out(repo, "rev-parse", "HEAD"), tmp_path / "step")
    assert outcome.status is b.Build.FAILED and "new.c:1: error: boom" in outcome.reason
    assert seen == [True]
    builder.cleanup()
    assert not (repo / "new.c").exists() and git_out(repo, "status", "--porcelain") == ""


# -- the real builder's and tester's error mapping ---------------------------------------


@pytest.fixture
def kernelish(tmp_path) -> Path:
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / "Makefile").write_text("all:\n")
    (tree / "Kconfig").write_text("")
    return tree


@pytest.mark.parametrize("error,log,status", [
    (BuildError("make failed (exit 2)", detail="kernel/x.c:1:1: error: expected ';'"), "", b.Build.FAILED),
    (BuildError("make failed (exit 2)"), "kernel/x.o: No space left on device\n", b.Build.INFRA),
    (ToolMissing("build", "gcc", "gcc"), "", b.Build.INFRA),
    (OSError(28, "No space left on device"), "", b.Build.INFRA),
    (subprocess.CalledProcessError(1, ["git"]), "", b.Build.INFRA),
    (HarnessError("host", "make not found on PATH", exit_code=HarnessError.INFRA), "", b.Build.INFRA),
])
def test_pipeline_builder_maps_errors(tmp_path, kernelish, monkeypatch, error, log, status):
    def fake_build(self):
        if log:
            self.run.path("build.log").write_text(log)
        raise error

    monkeypatch.setattr(pipeline_mod.Pipeline, "build", fake_build)
    paths = pipeline_mod.Paths(cache=tmp_path / "cache", artifacts=tmp_path / "art")
    builder = b.PipelineBuilder(kernelish, pipeline_mod.Options(kernel_src=kernelish), paths, Runner())
    step_dir = tmp_path / "step"
    step_dir.mkdir()
    outcome = builder.build("0" * 40, step_dir)
    assert outcome.status is status, outcome.reason
    assert json.loads((step_dir / "result.json").read_text())["bisect_build"]["status"] == status.value


class Handle:
    def __init__(self, run):
        self.run = run


@pytest.mark.parametrize("error,status", [
    (GuestCrashed("BUG:", "tail"), b.Test.FAILED),
    (GuestTimeout("command", 120.0, "tail"), b.Test.FAILED),
    (HarnessError("test", "2 check(s) failed"), b.Test.FAILED),
    (ToolMissing("qemu", "qemu-system-x86_64", "qemu-system-x86"), b.Test.INFRA),
    (OSError(28, "No space left on device"), b.Test.INFRA),
])
def test_pipeline_tester_maps_errors(tmp_path, monkeypatch, error, status):
    from harness.artifacts import Run

    def fake_run(self, p):
        raise error

    monkeypatch.setattr(b.PipelineTester, "_run", fake_run)
    run = Run(directory=tmp_path, command="t")
    outcome = b.PipelineTester("dump").test(b.BuildOutcome(b.Build.OK, handle=Handle(run)), tmp_path, 1)
    assert outcome.status is status


def test_pipeline_tester_lets_harness_bugs_through_and_the_bisector_aborts(tmp_path, monkeypatch):
    def fake_run(self, p):
        raise KeyError("oops")

    monkeypatch.setattr(b.PipelineTester, "_run", fake_run)
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, BAD])
    from harness.artifacts import Run

    class HandleBuilder(FakeBuilder):
        def build(self, rev, step_dir):
            outcome = super().build(rev, step_dir)
            outcome.handle = Handle(Run(directory=step_dir, command="t"))
            return outcome

    outcome, *_ = run_bisect(repo, tmp_path, b.Config(good=(shas[0],), bad=shas[2]), builder=HandleBuilder(repo),
                             tester=b.PipelineTester("dump"))
    assert outcome.status == "aborted" and "KeyError" in outcome.reason


def test_manual_tester_asks():
    answers = iter(["what", "b"])
    tester = b.ManualTester(lambda prompt: next(answers), console=False)
    assert tester.test(b.BuildOutcome(b.Build.OK), Path("."), 1).status is b.Test.FAILED
    assert b.ManualTester(lambda prompt: "s", console=False).test(b.BuildOutcome(b.Build.OK), Path("."),
                                                                  1).status is b.Test.UNTESTABLE


# -- image digests ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_image_digest_ignores_the_build_number(tmp_path):
    def obj(name: str, version: str, code: str) -> tuple[Path, Path]:
        d = tmp_path / name
        (d / "include" / "generated").mkdir(parents=True)
        (d / "include" / "generated" / "compile.h").write_text(f'#define UTS_VERSION "{version}"\n')
        (d / "v.c").write_text(f'const char banner[] = "Linux {version}";\n{code}\n')
        subprocess.run(["gcc", "-c", "-o", str(d / "v.o"), str(d / "v.c")], check=True)
        return d / "v.o", d

    one = b.image_digest(*obj("one", "#1 SMP PREEMPT", "int f(void) { return 1; }"))
    two = b.image_digest(*obj("two", "#2 SMP PREEMPT", "int f(void) { return 1; }"))
    other = b.image_digest(*obj("three", "#3 SMP PREEMPT", "int f(void) { return 2; }"))
    assert one == two
    assert one != other


# -- through the command line, with the fakes in place of the real builder and tester --------


@pytest.fixture
def fakes(monkeypatch):
    made = {}

    def builder(tree, options, paths, runner, **kw):
        made["builder"] = FakeBuilder(tree)
        made["builder_kw"] = kw
        return made["builder"]

    def tester(name="drgn", **kw):
        made["tester"] = FakeTester(made["builder"].tree)
        made["tester_args"] = {"name": name, **kw}
        return made["tester"]

    monkeypatch.setattr(bisect_cli, "PipelineBuilder", builder)
    monkeypatch.setattr(bisect_cli, "PipelineTester", tester)
    return made


def test_cli_bisect_prints_the_culprit(tmp_path, fakes, capsys, monkeypatch):
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    shas = make_history(repo, [GOOD, NOBUILD, GOOD, BAD])
    code = cli.main(["bisect", "--artifacts", str(tmp_path / "art"), "--tree", str(repo), "--good", shas[0],
                     "--bad", "main"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"first bad commit: {shas[4]} commit 4" in out
    run_dir = next(p for p in (tmp_path / "art").iterdir() if not p.is_symlink())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] == "pass" and result["bisect"]["culprit"] == shas[4]
    assert (run_dir / "bisect.log").is_file()
    assert fakes["builder_kw"]["apply"] == "auto"
    assert not_bisecting(repo)


def test_cli_bisect_step_mode_exit_codes(tmp_path, fakes, capsys, monkeypatch):
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    shas = make_history(repo, [NOBUILD, BAD, "build=raise"])
    codes = []
    for sha in shas:
        git(repo, "checkout", "-q", sha)
        codes.append(cli.main(["bisect", "--artifacts", str(tmp_path / "art"), "--tree", str(repo), "--step"]))
    assert codes == [0, 125, 1, 128]


def test_cli_bisect_needs_a_tree(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    assert cli.main(["bisect", "--artifacts", str(tmp_path / "art"), "--good", "x", "--bad", "y"]) == 1
    assert "give --tree PATH" in capsys.readouterr().err


def test_cli_series_mode_names_the_patch(tmp_path, fakes, capsys, monkeypatch):
    """--series: the pinned tree (here a tiny one) + the series as commits; the culprit is a patch name."""
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    git(pinned, "init", "-q", "-b", "main")
    (pinned / "state").write_text("build=ok\ntest=untestable\n")
    commit_all(pinned, "Pristine source")
    git(pinned, "tag", "livedump-base")
    monkeypatch.setattr(pipeline_mod.Pipeline, "tree", lambda self: pinned)
    # Four patches: 1 adds the feature (testable from then on), 2 fine, 3 breaks it, 4 docs.
    work = tmp_path / "author"
    subprocess.run(["git", "clone", "-q", str(pinned), str(work)], check=True)
    for i, state in enumerate(["build=ok,test=pass", "build=ok,test=pass", BAD, BAD], 1):
        (work / "state").write_text(state.replace(",", "\n") + "\n")
        (work / f"patch{i}.c").write_text(f"int p{i};\n")
        commit_all(work, f"livedump: patch {i}")
    series = tmp_path / "series"
    git(work, "format-patch", "-q", "-o", str(series), "livedump-base..HEAD")
    (series / "series").write_text("".join(p.name + "\n" for p in sorted(series.glob("*.patch"))))
    scratch = tmp_path / "cache" / "bisect" / "series"
    argv = ["bisect", "--artifacts", str(tmp_path / "art"), "--series", str(series)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "first bad patch: 0003-livedump-patch-3.patch" in out, out
    assert fakes["builder"].tree == scratch and fakes["builder_kw"]["apply"] == "never"
    # Run again: the scratch tree is reused (and reset), same answer.
    assert cli.main(argv) == 0
    assert "first bad patch: 0003-livedump-patch-3.patch" in capsys.readouterr().out
    # A tree bisect did not make is never reset.
    assert cli.main([*argv, "--tree", str(work)]) == 1
    assert "did not make" in capsys.readouterr().err


def test_cli_defaults():
    args = cli.build_parser().parse_args(["bisect", "--tree", "t", "--good", "a", "--bad", "b"])
    assert (args.type, args.test, args.tries, args.reverse, args.apply_series) == ("test", "drgn", 1, False, "auto")
    assert b.PipelineTester().name == "drgn" and b.PipelineTester("dump", kind="boot").name == "boot"
    with pytest.raises(HarnessError, match="unknown --test"):
        b.PipelineTester("nope")


def test_disk_images_are_dropped_except_for_bad_steps(tmp_path):
    for kind in ("good", "bad", "skip"):
        d = tmp_path / kind
        (d / "try-2").mkdir(parents=True)
        for name in ("dump0.img", "try-2/scratch.img", "serial.log"):
            (d / name).write_text("x")
        verdict = {"good": b.good(), "bad": b.bad("x"), "skip": b.skip("x")}[kind]
        b.drop_disk_images(b.StepResult(1, "0" * 40, "s", verdict, "ok", directory=str(d)))
    assert sorted(p.name for p in tmp_path.rglob("*.img")) == ["dump0.img", "scratch.img"]
    assert all(p.parent.name in ("bad", "try-2") and "bad" in str(p) for p in tmp_path.rglob("*.img"))
    assert len(list(tmp_path.rglob("serial.log"))) == 3
