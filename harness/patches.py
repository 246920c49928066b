"""The kernel patch series: parse ``series``, make the git tree, apply, export.

The kernel work happens in a git tree the harness makes from the pristine
source: one commit of the untouched tree tagged ``livedump-base``, then one
commit per patch. ``apply`` brings such a tree to the series; ``export``
turns the tree's commits back into the series with ``git format-patch``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import PatchError
from .runner import Runner

BASE_TAG = "livedump-base"
# Where apply() records the HEAD it made. A tree still at that commit holds
# only what the harness applied, so it may be reset when the series changes;
# any other HEAD may be someone's work and is never rewritten.
APPLIED_REF = "refs/livedump/applied"
# Fixed identity and dates so that every machine makes the same base commit.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "livedump harness",
    "GIT_AUTHOR_EMAIL": "harness@livedump.invalid",
    "GIT_COMMITTER_NAME": "livedump harness",
    "GIT_COMMITTER_EMAIL": "harness@livedump.invalid",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


@dataclass(frozen=True)
class Series:
    directory: Path
    patches: tuple[Path, ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for p in self.patches:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        return h.hexdigest()


def parse_series(directory: Path) -> Series:
    """Read ``directory/series``: one patch file name per line, ``#`` comments."""
    series_file = directory / "series"
    if not series_file.is_file():
        raise PatchError(f"{series_file} is missing (an empty file means no patches)")
    patches: list[Path] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(series_file.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{series_file}:{lineno}"
        if len(line.split()) != 1:
            raise PatchError(f"{where}: expected one patch file name, got {line!r} (options are not supported)")
        if "/" in line:
            raise PatchError(f"{where}: {line!r} must be a file name in {directory}, not a path")
        if line in seen:
            raise PatchError(f"{where}: {line} is listed twice")
        path = directory / line
        if not path.is_file():
            raise PatchError(f"{where}: {line} does not exist")
        seen.add(line)
        patches.append(path)
    unlisted = sorted(p.name for p in directory.glob("*.patch") if p.name not in seen)
    if unlisted:
        raise PatchError(f"{series_file} does not list {', '.join(unlisted)}; add them or delete them")
    return Series(directory, tuple(patches))


def _git(runner: Runner, tree: Path, *args: str, capture: bool = True, check: bool = True, mutates: bool = True,
         input: str | None = None):
    return runner.run(["git", "-C", str(tree), *args], env=GIT_ENV, capture=capture, check=check,
                      mutates=mutates, input=input)


def make_tree(pristine: Path, tree: Path, runner: Runner) -> Path:
    """Make (once) a git tree of the pristine source with the base commit tagged."""
    if (tree / ".git").is_dir():
        r = _git(runner, tree, "rev-parse", "-q", "--verify", f"refs/tags/{BASE_TAG}", check=False, mutates=False)
        if r.returncode == 0:
            return tree
        raise PatchError(f"{tree} is a git tree without the {BASE_TAG} tag; remove it or tag its base")
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tree-", dir=tree.parent))
    try:
        runner.run(["cp", "-a", f"{pristine}/.", str(tmp)])
        _git(runner, tmp, "init", "-q", "-b", "main")
        # -f: the tarball ships files that the tree's own .gitignore names.
        _git(runner, tmp, "add", "-A", "-f", ".")
        _git(runner, tmp, "commit", "-q", "-m", f"Pristine source from {pristine.name}")
        _git(runner, tmp, "tag", BASE_TAG)
        if not runner.dry_run:
            tmp.rename(tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def patch_id(runner: Runner, tree: Path, diff: str) -> str:
    r = _git(runner, tree, "patch-id", "--stable", input=diff, mutates=False)
    return r.stdout.split()[0] if r.stdout.strip() else ""


def applied_commits(runner: Runner, tree: Path) -> list[str]:
    r = _git(runner, tree, "rev-list", "--reverse", f"{BASE_TAG}..HEAD", mutates=False)
    return r.stdout.split()


@dataclass(frozen=True)
class ApplyFailure:
    patch: str
    file: str | None
    line: int | None
    hunk: str | None


_FAILED_AT = re.compile(r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$", re.M)
# Not "Hunk #1 succeeded at 3 (offset 1 line)." that git apply -v prints for the good hunks before the bad one.
_HUNK = re.compile(r"^(?:error: while searching for:\n)?(?P<hunk>Hunk #\d+ (?!succeeded|applied cleanly).*)$", re.M)
_DOES_NOT_EXIST = re.compile(r"^error: (?P<file>\S+): (?:does not exist in index|No such file or directory)$", re.M)


def describe_failure(patch: str, output: str) -> ApplyFailure:
    """Pick the failing file, line and hunk out of git am/apply output."""
    m = _FAILED_AT.search(output)
    if m:
        hunk = _HUNK.search(output)
        return ApplyFailure(patch, m.group("file"), int(m.group("line")), hunk.group("hunk") if hunk else None)
    m = _DOES_NOT_EXIST.search(output)
    if m:
        return ApplyFailure(patch, m.group("file"), None, "file does not exist")
    return ApplyFailure(patch, None, None, None)


def apply(tree: Path, series: Series, runner: Runner) -> str:
    """Bring ``tree`` (at base, or part-way through the series) to the whole series.

    Returns "applied", "already applied", "resumed", or "ahead by N" when the
    tree carries the whole series plus N commits not yet exported (they are
    left alone and built as they are). A tree whose commits diverge from the
    series is refused rather than rewritten: they may be someone's work.
    """
    commits = applied_commits(runner, tree)
    wanted = [patch_id(runner, tree, p.read_text(errors="replace")) for p in series.patches]
    have = [patch_id(runner, tree, _git(runner, tree, "show", "--format=", c, mutates=False).stdout)
            for c in commits]
    if have == wanted:
        return "already applied"
    if have[: len(wanted)] == wanted:
        return f"ahead by {len(have) - len(wanted)}"
    if have != wanted[: len(have)] and _head_is_ours(runner, tree):
        _git(runner, tree, "reset", "-q", "--hard", BASE_TAG)
        commits, have = [], []
    if have != wanted[: len(have)]:
        raise PatchError(
            f"{tree} has {len(commits)} commit(s) since {BASE_TAG} that diverge from the series; "
            "export them (`python -m harness patches export`) or reset the tree "
            f"(`git -C {tree} reset --hard {BASE_TAG}`)"
        )
    status = _git(runner, tree, "status", "--porcelain", "--untracked-files=no", mutates=False).stdout
    if status.strip():
        raise PatchError(f"{tree} has uncommitted changes; commit or stash them first")
    for patch in series.patches[len(have):]:
        r = _git(runner, tree, "am", "--quiet", "--keep-cr", str(patch), check=False)
        if r.returncode != 0:
            detail = (r.stdout or "") + (r.stderr or "")
            check = _git(runner, tree, "apply", "--check", "--verbose", str(patch), check=False)
            detail += (check.stdout or "") + (check.stderr or "")
            _git(runner, tree, "am", "--abort", check=False)
            f = describe_failure(patch.name, detail)
            where = f" at {f.file}:{f.line}" if f.line else (f" ({f.file})" if f.file else "")
            hunk = f", {f.hunk}" if f.hunk else ""
            _git(runner, tree, "update-ref", APPLIED_REF, "HEAD")
            raise PatchError(f"{patch.name} does not apply{where}{hunk}", detail=detail.strip())
    _git(runner, tree, "update-ref", APPLIED_REF, "HEAD")
    return "resumed" if have else "applied"


def _head_is_ours(runner: Runner, tree: Path) -> bool:
    head = _git(runner, tree, "rev-parse", "HEAD", mutates=False).stdout.strip()
    ours = _git(runner, tree, "rev-parse", "-q", "--verify", APPLIED_REF, check=False, mutates=False).stdout.strip()
    dirty = _git(runner, tree, "status", "--porcelain", "--untracked-files=no", mutates=False).stdout.strip()
    return bool(ours) and head == ours and not dirty


def tree_identity(tree: Path, runner: Runner) -> str:
    """HEAD plus a digest of uncommitted changes: what a build of the tree depends on."""
    head = _git(runner, tree, "rev-parse", "HEAD", mutates=False).stdout.strip()
    diff = _git(runner, tree, "diff", "HEAD", mutates=False).stdout
    return f"{head}+{hashlib.sha256(diff.encode()).hexdigest()[:16]}" if diff else head


def export(tree: Path, directory: Path, runner: Runner) -> list[Path]:
    """Rewrite ``directory`` (*.patch + series) from the tree's commits since the base."""
    if not applied_commits(runner, tree):
        raise PatchError(f"{tree} has no commits since {BASE_TAG}; nothing to export")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=directory) as tmp:
        _git(runner, tree, "format-patch", "--quiet", "--zero-commit", "-o", tmp, f"{BASE_TAG}..HEAD")
        new = sorted(Path(tmp).glob("*.patch"))
        for old in directory.glob("*.patch"):
            old.unlink()
        for p in new:
            p.rename(directory / p.name)
    names = [p.name for p in new]
    (directory / "series").write_text("".join(n + "\n" for n in names))
    return [directory / n for n in names]
