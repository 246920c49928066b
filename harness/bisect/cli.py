"""``python -m harness bisect``: its options, and the command that wires the real git, builder and tester
into the :class:`~.engine.Bisector`."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import HarnessError
from ..patches import BASE_TAG, parse_series
from ..pipeline import Pipeline, say
from ..settings import REPO_ROOT, SERIES_DIR
from .builder import PipelineBuilder
from .engine import Bisector, Config, Tester, describe
from .git import Git, RealGit
from .series import resolve_patch_ref, scratch_tree, series_commits
from .testers import GUEST_TESTS, ManualTester, PipelineTester
from .verdict import Kind, StepResult, abort


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
    what = g.add_mutually_exclusive_group()
    what.add_argument("--test", choices=tuple(GUEST_TESTS), default="drgn",
                      help="guest test: drgn (one dump under load read back by drgn), dump (the end-to-end test: "
                      "drgn and crash), consistency (one dump under the test_livedump torture load, judged by "
                      "the consistency checker: which commit made dumps torn?), boot (default: %(default)s)")
    what.add_argument("--guest-cmd", metavar="CMD",
                      help="your own test instead: run CMD in the booted guest's shell; exit 0 good, 125 skip, "
                      "anything else bad (/dev/vdb is a dump target as big as guest RAM)")
    what.add_argument("--dump-check", type=Path, metavar="SCRIPT",
                      help="your own test instead: take one dump under load, then run SCRIPT DUMP VMLINUX on the "
                      "host (a .py under the harness's Python, which has drgn; env: LIVEDUMP_DUMP, "
                      "LIVEDUMP_VMLINUX, LIVEDUMP_RELEASE, LIVEDUMP_CPUS, LIVEDUMP_REASON, "
                      "LIVEDUMP_MARKER_BEFORE/AFTER, LIVEDUMP_STEP_DIR); exit 0 good, 125 skip, 1-127 bad, "
                      "128 and up abort, as for git bisect run")
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


def command(p: Pipeline, args) -> int:
    """``python -m harness bisect``; ``p`` is the run's Pipeline."""
    if p.runner.dry_run:
        raise HarnessError("bisect", "bisect has no --dry-run: every step builds and boots")
    if args.tries < 1:
        raise HarnessError("bisect", "--tries must be at least 1")
    script = dump_check_script(args)
    names: dict[str, str] = {}
    if args.series is not None:
        if args.step or args.replay:
            raise HarnessError("bisect", "--series cannot be combined with --step or --replay")
        directory = args.series if args.series.is_absolute() or args.series.exists() else REPO_ROOT / args.series
        patches = parse_series(directory).patches
        if not patches:
            raise HarnessError("bisect", f"{directory} holds no patches")
        source_tree = p.for_tree(None).tree()  # the pinned tree with the series: what the scratch tree clones
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
    tester = make_tester(args, script)
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


def dump_check_script(args) -> Path | None:
    """--dump-check SCRIPT as an absolute path (it runs in each step's directory), refused before any build
    when it cannot run, or when --manual asks the user instead."""
    if args.manual and (args.guest_cmd is not None or args.dump_check is not None):
        raise HarnessError("bisect", "--manual asks you for each verdict: it takes no --guest-cmd or --dump-check")
    if args.dump_check is None:
        return None
    script = args.dump_check.resolve()
    if not script.is_file() or not os.access(script, os.R_OK if script.suffix == ".py" else os.X_OK):
        raise HarnessError("bisect", f"--dump-check {args.dump_check}: not an executable file (chmod +x it, "
                           "or name a Python script *.py)")
    return script


def make_tester(args, script: Path | None) -> Tester:
    """--manual, or a guest test: --test NAME, --guest-cmd CMD or --dump-check SCRIPT."""
    if args.manual:
        return ManualTester(say=say)
    return PipelineTester(args.test, kind=args.type, guest_cmd=args.guest_cmd, dump_check=script, say=say)


def drop_disk_images(result: StepResult) -> None:
    """A dump image is as big as guest RAM: keep it only where the test failed."""
    if result.verdict.kind is Kind.BAD or not result.directory:
        return
    for image in Path(result.directory).rglob("*.img"):
        image.unlink(missing_ok=True)


def _one_step(bisector: Bisector, git: Git, p: Pipeline) -> int:
    """``--step``: one verdict for the current checkout, exit code for `git bisect run`; never 1 or 125 by accident."""
    try:
        result = bisector.step(git.head())
        verdict = result.verdict
    except BaseException as e:  # noqa: B036 -- Ctrl-C, a harness bug: abort the git bisect run, never judge
        verdict = abort(f"{type(e).__name__}: {e}")
    say(f"verdict: {verdict}")
    p.run.facts["bisect_step"] = {"verdict": verdict.kind.name, "reason": verdict.reason}
    return verdict.exit_code
