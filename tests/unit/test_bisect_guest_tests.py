"""The bisect tests a kernel developer brings (--test consistency, --guest-cmd, --dump-check) and the default
drgn test, through the real PipelineTester and Bisector over tiny git histories. No kernel, no QEMU: the
step's "kernel" is a fake pipeline whose guest plays the checkout's ``state`` file (see FakeGuest)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from harness import bisect as b
from harness import cli, consistency, validate
from harness import dump as dump_mod
from harness.artifacts import Run
from harness.console import CommandResult
from harness.errors import HarnessError
from harness.pipeline import Options
from harness.runner import Runner

from .conftest import git
from .test_bisect import FakeBuilder, make_history, not_bisecting, read_state

RELEASE = "6.1.0-fake"


class FakeGuest:
    """A booted step kernel played from the checkout's state: ``guest=N`` the exit status of the developer's
    command, ``dump=TEXT`` what a dump holds (the printk lines written before it follow), ``torture=no`` no
    test_livedump, ``livedump=no`` no livedump uapi (see StepBuilder)."""

    def __init__(self, state: dict[str, str], disks: tuple):
        self.state = state
        self.disks = disks
        self.kmsg: list[str] = []
        self.commands: list[str] = []

    def __enter__(self) -> FakeGuest:
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def run(self, command: str, *, timeout: float | None = None, check: bool = False) -> CommandResult:
        self.commands.append(command)
        status, output = self._answer(command)
        if check and status != 0:
            raise HarnessError("guest", f"`{command}` exited {status}", detail=output)
        return CommandResult(command, status, output)

    def _answer(self, command: str) -> tuple[int, str]:
        if command.startswith("echo ") and command.endswith("> /dev/kmsg"):
            self.kmsg.append(command.split()[1])
            return 0, ""
        if command.startswith(f"test -w {dump_mod.TORTURE_RUN}"):
            return (1 if self.state.get("torture") == "no" else 0), ""
        if command.endswith(f"> {dump_mod.TORTURE_RUN}") or command == dump_mod.LOAD_COMMAND \
                or command.startswith("kill "):
            return 0, ""
        if dump_mod.TORTURE_MODULE in command:  # no module in the fake guest: nothing to load
            return 0, ""
        if dump_mod.USER_TORTURE_OUT in command:  # the user-space torture writer starts, says it is ready
            return 0, "ldtorture ready"
        if command.startswith("pidof "):
            return 0, "3"
        if command == "command -v livedump":
            return 0, "/bin/livedump"
        if command.startswith("livedump dump "):
            dump_mod.dump_image(self.disks).write_text("\n".join([self.state.get("dump", "intact"), *self.kmsg]))
            return 0, "livedump: state=idle\nlivedump: cow_faults=12\nlivedump: failed_pages=0"
        return int(self.state.get("guest", "0")), f"ran {command}"  # the developer's own command


class FakeStepPipeline:
    """What PipelineTester needs of the step's Pipeline: its run, options, runner, build() and boot()."""

    def __init__(self, tree: Path, run: Run, kernel_dir: Path):
        self.tree = tree
        self.run = run
        self.kernel_dir = kernel_dir
        self.options = Options()
        self.runner = Runner(log_path=run.commands_log)
        self.guests: list[FakeGuest] = []

    def build(self):
        return type("Kernel", (), {"release": RELEASE, "headers": self.kernel_dir / "headers",
                                   "vmlinux": self.kernel_dir / "vmlinux"})

    def boot(self, disks: tuple = ()) -> FakeGuest:
        self.guests.append(FakeGuest(read_state(self.tree), disks))
        return self.guests[-1]

    def for_run(self, run: Run) -> FakeStepPipeline:
        return FakeStepPipeline(self.tree, run, self.kernel_dir)


class StepBuilder(FakeBuilder):
    """FakeBuilder whose handle is a FakeStepPipeline; the uapi header exists unless ``livedump=no``."""

    def __init__(self, tree: Path):
        super().__init__(tree)
        self.pipelines: dict[str, FakeStepPipeline] = {}

    def build(self, rev: str, step_dir: Path) -> b.BuildOutcome:
        outcome = super().build(rev, step_dir)
        kernel_dir = step_dir / "kernel"
        (kernel_dir / "headers" / "linux").mkdir(parents=True)
        (kernel_dir / "vmlinux").write_text("not really an ELF file\n")
        if read_state(self.tree).get("livedump") != "no":
            (kernel_dir / "headers" / "linux" / "livedump.h").write_text("/* uapi */\n")
        outcome.handle = self.pipelines[rev] = FakeStepPipeline(self.tree, Run(directory=step_dir, command="t"),
                                                                kernel_dir)
        return outcome


def bisect(repo: Path, tmp_path: Path, tester: b.PipelineTester, good: str, bad: str):
    builder = StepBuilder(repo)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outcome = b.Bisector(b.RealGit(repo, Runner()), builder, tester, b.Config(good=(good,), bad=bad), run_dir).run()
    assert not_bisecting(repo)
    return outcome, builder


def one_step(repo: Path, tmp_path: Path, tester: b.PipelineTester) -> tuple[b.StepResult, StepBuilder]:
    """The verdict for the checkout, as ``--step`` gives it."""
    builder = StepBuilder(repo)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    git_ = b.RealGit(repo, Runner())
    return b.Bisector(git_, builder, tester, b.Config(), run_dir).step(git_.head()), builder


def kinds(outcome: b.Outcome) -> dict[str, b.Kind]:
    return {s.commit: s.verdict.kind for s in outcome.steps}


# -- --guest-cmd -----------------------------------------------------------------------------------------


def test_guest_cmd_finds_the_commit_where_the_command_fails(tmp_path):
    repo = tmp_path / "repo"
    # c3's kernel cannot run the test (the command says 125): skipped; c5 breaks it.
    shas = make_history(repo, ["guest=0", "guest=0", "guest=125", "guest=0", "guest=1", "guest=1"])
    outcome, builder = bisect(repo, tmp_path, b.PipelineTester(guest_cmd="my-test --quick"), shas[0], shas[6])
    assert outcome.status == "found" and outcome.culprit == shas[5], b.describe(outcome)
    assert kinds(outcome)[shas[3]] is b.Kind.SKIP  # git's first pick; 125 is a skip, not a bad
    assert "guest command exited 125" in {s.commit: s for s in outcome.steps}[shas[3]].verdict.reason
    for rev in kinds(outcome):  # the command ran, as given, in each tested step's guest
        assert [g.commands for g in builder.pipelines[rev].guests] == [["my-test --quick"]]


@pytest.mark.parametrize("status,kind", [(0, b.Kind.GOOD), (125, b.Kind.SKIP), (1, b.Kind.BAD),
                                         (139, b.Kind.BAD)])
def test_guest_cmd_exit_status_is_the_verdict(tmp_path, status, kind):
    repo = tmp_path / "repo"
    make_history(repo, [f"guest={status}"])
    result, _ = one_step(repo, tmp_path, b.PipelineTester(guest_cmd="exit-like-this"))
    assert result.verdict.kind is kind, result.verdict
    log = (Path(result.directory) / "guest-cmd.log").read_text()
    assert log.startswith("$ exit-like-this\n") and f"exit status {status}" in log


# -- --dump-check ----------------------------------------------------------------------------------------

CHECK_SH = """#!/bin/sh
# Exits 200 (abort) unless the harness passed what it documents.
[ "$1" = "$LIVEDUMP_DUMP" ] && [ "$2" = "$LIVEDUMP_VMLINUX" ] && [ -f "$1" ] && [ -f "$2" ] || exit 200
[ "$LIVEDUMP_RELEASE" = 6.1.0-fake ] && [ "$LIVEDUMP_CPUS" = 2 ] && [ "$PWD" = "$LIVEDUMP_STEP_DIR" ] || exit 201
[ "$LIVEDUMP_REASON" = "harness test" ] || exit 202
grep -q unreadable "$1" && exit 125
grep -q "$LIVEDUMP_MARKER_BEFORE" "$1" || { echo "marker A missing"; exit 1; }
grep -q "$LIVEDUMP_MARKER_AFTER" "$1" && { echo "marker B present"; exit 1; }
grep -q torn "$1" && { echo "the dump is torn"; exit 3; }
grep -q harness-bug "$1" && exit 130
exit 0
"""


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_dump_check_finds_the_commit_that_tears_the_dump(tmp_path):
    repo = tmp_path / "repo"
    shas = make_history(repo, ["dump=intact", "dump=intact", "dump=torn", "dump=torn"], root="dump=intact")
    check = script(tmp_path, "check.sh", CHECK_SH)
    outcome, _ = bisect(repo, tmp_path, b.PipelineTester(dump_check=check), shas[0], shas[4])
    assert outcome.status == "found" and outcome.culprit == shas[3], b.describe(outcome)
    bad = [s for s in outcome.steps if s.verdict.kind is b.Kind.BAD]
    assert bad and all(s.verdict.reason == "check.sh exited 3: the dump is torn" for s in bad)
    assert all((Path(s.directory) / "dump-check.log").is_file() for s in outcome.steps)


@pytest.mark.parametrize("dump,kind,reason", [
    ("intact", b.Kind.GOOD, "test passed"),
    ("unreadable", b.Kind.SKIP, "check.sh exited 125 (skip)"),
    ("torn", b.Kind.BAD, "check.sh exited 3: the dump is torn"),
    ("harness-bug", b.Kind.ABORT, "check.sh exited 130"),
])
def test_dump_check_exit_status_is_the_verdict(tmp_path, dump, kind, reason):
    repo = tmp_path / "repo"
    make_history(repo, [f"dump={dump}"])
    result, _ = one_step(repo, tmp_path, b.PipelineTester(dump_check=script(tmp_path, "check.sh", CHECK_SH)))
    assert result.verdict.kind is kind and reason in result.verdict.reason, result.verdict


def test_dump_check_runs_a_python_script_under_the_harness_python(tmp_path):
    repo = tmp_path / "repo"
    make_history(repo, ["dump=intact"])
    check = tmp_path / "check.py"  # not executable: run by the harness's interpreter, which has drgn
    check.write_text("import os, sys\n"
                     f"sys.exit(0 if sys.executable == {sys.executable!r} and sys.argv[1:] == "
                     "[os.environ['LIVEDUMP_DUMP'], os.environ['LIVEDUMP_VMLINUX']] else 1)\n")
    result, _ = one_step(repo, tmp_path, b.PipelineTester(dump_check=check))
    assert result.verdict.kind is b.Kind.GOOD, result.verdict


def test_dump_check_on_a_kernel_without_livedump_is_a_skip(tmp_path):
    repo = tmp_path / "repo"
    make_history(repo, ["livedump=no"])
    result, builder = one_step(repo, tmp_path, b.PipelineTester(dump_check=script(tmp_path, "c.sh", CHECK_SH)))
    assert result.verdict.kind is b.Kind.SKIP and "no livedump" in result.verdict.reason
    assert not (Path(result.directory) / "dump-check.log").exists()


# -- --test consistency ----------------------------------------------------------------------------------


@pytest.fixture
def checker(monkeypatch) -> list[Path]:
    """consistency.read_and_check without drgn: a dump whose text says torn breaks the spinlock pair."""
    read: list[Path] = []

    def read_and_check(image: Path, vmlinux: Path) -> consistency.Report:
        read.append(image)
        torn = "torn" in image.read_text()
        pair = consistency.Finding("pair under spinlock", checked=4096, bad=[(0x1000, 0x2000)] if torn else [])
        return consistency.Report(str(image), [pair], protected=True, failed_pfns=[])

    monkeypatch.setattr(consistency, "read_and_check", read_and_check)
    return read


def test_consistency_finds_the_commit_that_tears_the_dump(tmp_path, checker):
    repo = tmp_path / "repo"
    shas = make_history(repo, ["dump=intact", "dump=intact", "dump=torn", "dump=torn"], root="dump=intact")
    outcome, builder = bisect(repo, tmp_path, b.PipelineTester("consistency"), shas[0], shas[4])
    assert outcome.status == "found" and outcome.culprit == shas[3], b.describe(outcome)
    assert len(checker) == len(outcome.steps)
    bad = [s for s in outcome.steps if s.verdict.kind is b.Kind.BAD]
    assert bad and all("torn: 1 violation(s)" in s.verdict.reason for s in bad)
    for step in outcome.steps:
        assert "pair under spinlock" in (Path(step.directory) / "consistency.txt").read_text()
        commands = builder.pipelines[step.commit].guests[0].commands
        on, off = f"echo 1 > {dump_mod.TORTURE_RUN}", f"echo 0 > {dump_mod.TORTURE_RUN}"
        dumped = next(i for i, c in enumerate(commands) if c.startswith("livedump dump "))
        assert commands.index(on) < dumped < commands.index(off)  # dumped while the writers ran


def test_consistency_without_test_livedump_is_a_skip(tmp_path, checker):
    repo = tmp_path / "repo"
    shas = make_history(repo, ["torture=no", "dump=torn"], root="dump=intact")
    outcome, _ = bisect(repo, tmp_path, b.PipelineTester("consistency"), shas[0], shas[2])
    assert kinds(outcome) == {shas[1]: b.Kind.SKIP}
    assert "no test_livedump" in outcome.steps[0].verdict.reason
    assert outcome.status == "inconclusive" and set(outcome.candidates) == {shas[1], shas[2]}
    assert checker == []


def test_consistency_requires_what_make_test_qemu_requires(tmp_path, monkeypatch):
    """An unprotected dump with no torn pair is still bad: protected_dump_problems is the verdict."""
    monkeypatch.setattr(consistency, "read_and_check", lambda image, vmlinux: consistency.Report(
        str(image), [consistency.Finding("pair under spinlock", checked=4096)], protected=False, failed_pfns=[]))
    repo = tmp_path / "repo"
    make_history(repo, ["dump=intact"])
    result, _ = one_step(repo, tmp_path, b.PipelineTester("consistency"))
    assert result.verdict.kind is b.Kind.BAD and "nothing was write-protected" in result.verdict.reason


# -- the command line ------------------------------------------------------------------------------------


def bisect_argv(tmp_path: Path, *more: str) -> list[str]:
    return ["bisect", "--artifacts", str(tmp_path / "art"), "--tree", str(tmp_path / "repo"), "--good", "x",
            "--bad", "y", *more]


def test_cli_refuses_own_tests_that_cannot_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    not_executable = tmp_path / "check.sh"
    not_executable.write_text("exit 0\n")
    cases = [(["--dump-check", str(tmp_path / "missing.sh")], "not an executable file"),
             (["--dump-check", str(not_executable)], "not an executable file"),
             (["--guest-cmd", "true", "--type", "boot"], "needs --type test"),
             (["--guest-cmd", "true", "--manual"], "--manual asks you")]
    for more, message in cases:
        assert cli.main(bisect_argv(tmp_path, *more)) == 1, more
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(bisect_argv(tmp_path, "--test", "consistency", "--guest-cmd", "true"))
    assert "not allowed with" in capsys.readouterr().err


def test_cli_passes_the_own_tests_to_the_tester(tmp_path, capsys, monkeypatch):
    from harness.bisect import cli as bisect_cli

    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    made: list[b.PipelineTester] = []

    def tester(*args, **kw):
        made.append(b.PipelineTester(*args, **kw))
        return made[-1]

    monkeypatch.setattr(bisect_cli, "PipelineTester", tester)
    monkeypatch.setattr(bisect_cli, "PipelineBuilder", lambda tree, *a, **kw: StepBuilder(tree))
    repo = tmp_path / "repo"
    shas = make_history(repo, ["guest=0", "guest=3"])
    assert cli.main(["bisect", "--artifacts", str(tmp_path / "art"), "--tree", str(repo), "--good", shas[0],
                     "--bad", shas[2], "--guest-cmd", "run-my-test"]) == 0
    assert f"first bad commit: {shas[2]}" in capsys.readouterr().out
    assert made[-1].name == "guest-cmd" and made[-1].guest_cmd == "run-my-test"
    check = script(tmp_path, "check.sh", CHECK_SH)
    git(repo, "checkout", "-q", shas[1])
    os.chdir(tmp_path)
    assert cli.main(["bisect", "--artifacts", str(tmp_path / "art"), "--tree", str(repo), "--step",
                     "--dump-check", "check.sh"]) == 0
    assert made[-1].name == "dump-check" and made[-1].dump_check == check  # absolute: steps run elsewhere
    run_dir = max((p for p in (tmp_path / "art").iterdir() if not p.is_symlink()), key=lambda p: p.stat().st_mtime)
    assert json.loads((run_dir / "result.json").read_text())["bisect_step"]["verdict"] == "GOOD"


def test_help_names_the_new_tests(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bisect", "--help"])
    out = capsys.readouterr().out
    for word in ("consistency", "--guest-cmd", "--dump-check", "LIVEDUMP_DUMP", "125"):
        assert word in out


# -- the default --test drgn ----------------------------------------------------------------------------


def test_drgn_test_reads_what_the_guest_saw(tmp_path, monkeypatch):
    """drgn's view comes from the dump's text here: the markers the guest wrote before the dump are in it."""
    def read_with_drgn(image: Path, vmlinux: Path) -> validate.DrgnView:
        log = image.read_text()
        return validate.DrgnView(release=RELEASE, init_comm="swapper/0", tasks=[(9, "ldload")] * 3, log=log,
                                 nr_prstatus=0 if "torn" in log else 2, prstatus_pids=[])

    monkeypatch.setattr(validate, "read_with_drgn", read_with_drgn)
    repo = tmp_path / "repo"
    shas = make_history(repo, ["dump=intact", "dump=torn", "dump=torn"], root="dump=intact")
    outcome, _ = bisect(repo, tmp_path, b.PipelineTester(), shas[0], shas[3])
    assert outcome.culprit == shas[2], b.describe(outcome)
    bad = [s for s in outcome.steps if s.verdict.kind is b.Kind.BAD]
    assert bad and all("NT_PRSTATUS" in s.verdict.reason for s in bad)
