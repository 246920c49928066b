"""The patch series at a bisect step: applied to a checkout (``--tree``), or bisected itself (``--series``).

``--tree``: at each step ``kernel-patches/`` is applied with ``git apply --index`` (and reset after the
step), unless the checkout already carries the series (then it is built as it is).
``--series``: a scratch tree gets the pristine base plus one commit per patch, and the culprit is
reported as a patch file name.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import HarnessError


def apply_series(tree: Path, patches: Sequence[Path], runner) -> str | None:
    """``git apply --index`` each patch; on failure reset and return where it failed."""
    from .. import patches as patches_mod

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


SCRATCH_MARK = "livedump-bisect-scratch"


def scratch_tree(source_tree: Path, work: Path, runner) -> Path:
    """A clone of the harness tree that bisect may reset at will (marked as such); made once, then reused.

    Reusing one path keeps make's view of the sources (and the O= directory) so builds stay incremental.
    """
    from ..patches import BASE_TAG

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
    from ..patches import BASE_TAG, GIT_ENV

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
