"""``python -m harness bisect`` on the real kernel: it names the commit (and the patch) that breaks livedump.

CPU is scarce, so everything reuses the harness cache: one scratch clone of the
harness tree at ``$LIVEDUMP_CACHE/bisect/tree`` (kept between runs, so make sees
only what changed) and its one ``O=`` build directory, shared by both tests.

* ``--tree``: eight small commits on top of the series; the fourth does not
  build (the fifth fixes it), the sixth stops calling the write-protection
  fault hook, so the first write to a protected page during a dump oopses.
  Bisect must skip the fourth and name the sixth.
* ``--series``: a copy of the series with that same change as a patch
  inserted in the middle, one patch after the one that puts the hook where
  it is; bisect must name that patch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import bisect as bisect_mod
from harness.artifacts import Run
from harness.patches import GIT_ENV, parse_series
from harness.pipeline import Options, Pipeline
from harness.runner import Runner
from harness.settings import REPO_ROOT, SERIES_DIR, Paths

pytestmark = pytest.mark.qemu

BREAK_SUBJECT = "x86/mm: do not call the write-protection fault hook"
NOBUILD_SUBJECT = "livedump: writer: add a counter (does not build)"


def _append(path: str, text: str):
    def change(tree: Path) -> None:
        with open(tree / path, "a") as f:
            f.write(text)
    return change


def _replace(path: str, old: str, new: str):
    def change(tree: Path) -> None:
        body = (tree / path).read_text()
        assert old in body, f"{old!r} not in {path}"
        (tree / path).write_text(body.replace(old, new, 1))
    return change


HOOK = "\tif (wrprotect_fault(address, error_code))\n"
BROKEN_C = "\nint livedump_bisect_counter = ;\n"
COMMITS = [
    ("Documentation: livedump: mention bisect",
     _append("Documentation/admin-guide/livedump.rst", "\nRegressions are found with ``python -m harness bisect``.\n")),
    ("livedump: comment the ioctl entry point", _append("kernel/livedump/livedump.c", "\n/* bisect test: 2 */\n")),
    ("x86/mm: comment the write-protection code", _append("arch/x86/mm/wrprotect.c", "\n/* bisect test: 3 */\n")),
    (NOBUILD_SUBJECT, _append("kernel/livedump/writer.c", BROKEN_C)),
    ("livedump: writer: fix the build", _replace("kernel/livedump/writer.c", BROKEN_C, "\n")),
    (BREAK_SUBJECT, _replace("arch/x86/mm/fault.c", HOOK, "\tif (0 && wrprotect_fault(address, error_code))\n")),
    ("livedump: comment the snapshot code", _append("kernel/livedump/snapshot.c", "\n/* bisect test: 7 */\n")),
    ("Documentation: livedump: more words", _append("Documentation/admin-guide/livedump.rst",
                                                     "\nSee also the harness README.\n")),
]


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def scratch():
    """The scratch clone with the series as commits, and the eight commits on top."""
    paths = Paths.from_env()
    run = Run.create(paths.artifacts, "pytest-bisect")
    runner = Runner(log_path=run.commands_log)
    pinned = Pipeline(run, Options(), paths=paths, runner=runner).tree()
    tree = bisect_mod.scratch_tree(pinned, paths.cache / "bisect" / "tree", runner)
    bisect_mod.series_commits(tree, parse_series(SERIES_DIR).patches, runner)
    series_head = git(tree, "rev-parse", "HEAD")
    shas = []
    for subject, change in COMMITS:
        change(tree)
        git(tree, "commit", "-q", "-a", "-m", subject)
        shas.append(git(tree, "rev-parse", "HEAD"))
    return {"tree": tree, "series_head": series_head, "commits": shas}


# A good step's dump takes 3-7 s from boot to verdict under TCG (CI of 2026-12-07); the broken one hangs until
# the command timeout, 120 s by default, which three bad steps waited out: 30 s keeps a wide margin.
STEP_COMMAND_TIMEOUT = "30"


def harness(*args: str, timeout: float = 5400) -> subprocess.CompletedProcess:
    accel = os.environ.get("LIVEDUMP_ACCEL", "auto")
    argv = [sys.executable, "-m", "harness", "bisect", "--accel", accel, "--command-timeout", STEP_COMMAND_TIMEOUT,
            *args]
    r = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(argv)}\n--- stdout\n{r.stdout}--- stderr (tail)\n" + "\n".join(r.stderr.splitlines()[-40:]))
    return r


def run_dir_of(r: subprocess.CompletedProcess) -> Path:
    # harness/log.py: "harness: HH:MM:SS message" on stderr.
    m = re.search(r"^harness: \d\d:\d\d:\d\d bisect log: (\S+)/bisect\.log", r.stderr, re.M)
    assert m, r.stderr[-3000:]
    return Path(m.group(1))


def test_bisect_names_the_commit_that_breaks_livedump(scratch):
    tree, shas = scratch["tree"], scratch["commits"]
    r = harness("--tree", str(tree), "--good", scratch["series_head"], "--bad", shas[-1])
    assert r.returncode == 0
    assert f"first bad commit: {shas[5]} {BREAK_SUBJECT}" in r.stdout
    summary = json.loads((run_dir_of(r) / "bisect.json").read_text())
    steps = {s["commit"]: s for s in summary["steps"]}
    # The commit that does not build was met and skipped, not judged.
    assert steps[shas[3]]["kind"] == "SKIP" and "build failed" in steps[shas[3]]["verdict"]
    # Named first bad only once tested bad (its parent good): a step, not an inference.
    assert steps[shas[5]]["kind"] == "BAD", steps.get(shas[5])
    # A few incremental builds in the one O= directory, not one per commit.
    assert len(summary["steps"]) <= 5
    assert summary["same_image_as_parent"] is False
    # git bisect is over and the tree is back on its branch.
    assert not (tree / ".git" / "BISECT_START").exists()
    assert git(tree, "rev-parse", "HEAD") == shas[-1]


def test_series_mode_names_the_broken_patch(scratch, tmp_path):
    tree, shas = scratch["tree"], scratch["commits"]
    series = parse_series(SERIES_DIR).patches
    broken = tmp_path / "series"
    broken.mkdir()
    for p in series:
        shutil.copy(p, broken / p.name)
    git(tree, "format-patch", "-q", "-1", "--zero-commit", "-o", str(tmp_path / "made"), shas[5])
    made = next((tmp_path / "made").glob("*.patch"))
    # The breaking change applies once the series has put the hook (and what its context holds) where it is
    # at the top: right after the last patch whose text has it. Bisect must find it there, not at either end,
    # so at least one patch must follow.
    last_hook = max(i for i, p in enumerate(series) if HOOK.strip() in p.read_text())
    assert last_hook + 1 < len(series), "the hook moves too late in the series for this test"
    at = last_hook + 1
    bad_name = f"{series[at - 1].name[:4]}a-x86-mm-do-not-call-the-write-protection-fault-hook.patch"
    shutil.copy(made, broken / bad_name)
    order = [p.name for p in series[:at]] + [bad_name] + [p.name for p in series[at:]]
    (broken / "series").write_text("".join(n + "\n" for n in order))
    r = harness("--series", str(broken), "--tree", str(tree))
    assert r.returncode == 0
    assert f"first bad patch: {bad_name}" in r.stdout
