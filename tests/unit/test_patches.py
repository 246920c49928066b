from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest

from harness import patches
from harness.errors import PatchError
from harness.patches import APPLIED_REF, BASE_TAG, apply, describe_failure, export, make_tree, parse_series
from harness.runner import Runner

from .conftest import commit_all, edit, git, git_out, two_patch_changes

# -- parse_series ----------------------------------------------------------------


def series_dir(tmp_path: Path, series: str, files: list[str]) -> Path:
    d = tmp_path / "kernel-patches"
    d.mkdir()
    for name in files:
        (d / name).write_text(f"patch {name}\n")
    (d / "series").write_text(series)
    return d


def test_parse_series_comments_and_blank_lines(tmp_path):
    d = series_dir(tmp_path, "# header\n\n0001-a.patch\n   \n0002-b.patch  # trailing comment\n#0003-c.patch\n",
                   ["0001-a.patch", "0002-b.patch"])
    s = parse_series(d)
    assert [p.name for p in s.patches] == ["0001-a.patch", "0002-b.patch"]
    assert s.patches[0] == d / "0001-a.patch"


def test_parse_series_keeps_series_order_not_name_order(tmp_path):
    d = series_dir(tmp_path, "0002-b.patch\n0001-a.patch\n", ["0001-a.patch", "0002-b.patch"])
    assert [p.name for p in parse_series(d).patches] == ["0002-b.patch", "0001-a.patch"]


def test_parse_series_empty_file_means_no_patches(tmp_path):
    assert parse_series(series_dir(tmp_path, "# nothing yet\n", [])).patches == ()


def test_parse_series_missing_series_file(tmp_path):
    d = tmp_path / "kernel-patches"
    d.mkdir()
    with pytest.raises(PatchError) as ei:
        parse_series(d)
    assert str(ei.value) == f"patches: {d / 'series'} is missing (an empty file means no patches)"


def test_parse_series_missing_patch_names_series_line(tmp_path):
    d = series_dir(tmp_path, "# c\n0001-a.patch\n0002-gone.patch\n", ["0001-a.patch"])
    with pytest.raises(PatchError) as ei:
        parse_series(d)
    assert ei.value.message == f"{d / 'series'}:3: 0002-gone.patch does not exist"


def test_parse_series_duplicate(tmp_path):
    d = series_dir(tmp_path, "0001-a.patch\n0002-b.patch\n0001-a.patch\n", ["0001-a.patch", "0002-b.patch"])
    with pytest.raises(PatchError) as ei:
        parse_series(d)
    assert ei.value.message == f"{d / 'series'}:3: 0001-a.patch is listed twice"


def test_parse_series_rejects_paths(tmp_path):
    d = series_dir(tmp_path, "sub/0001-a.patch\n", [])
    (d / "sub").mkdir()
    (d / "sub" / "0001-a.patch").write_text("x")
    with pytest.raises(PatchError) as ei:
        parse_series(d)
    assert ei.value.message.startswith(f"{d / 'series'}:1: 'sub/0001-a.patch' must be a file name")


def test_parse_series_rejects_quilt_options(tmp_path):
    d = series_dir(tmp_path, "0001-a.patch -p1\n", ["0001-a.patch"])
    with pytest.raises(PatchError) as ei:
        parse_series(d)
    assert "series:1: expected one patch file name" in ei.value.message


def test_parse_series_unlisted_patch_files(tmp_path):
    d = series_dir(tmp_path, "0001-a.patch\n", ["0001-a.patch", "0003-c.patch", "0002-b.patch"])
    (d / "notes.txt").write_text("not a patch")
    with pytest.raises(PatchError) as ei:
        parse_series(d)
    assert ei.value.message == (f"{d / 'series'} does not list 0002-b.patch, 0003-c.patch; "
                                "add them or delete them")


def test_repo_series_parses():
    from harness.settings import SERIES_DIR

    s = parse_series(SERIES_DIR)
    assert len(s.patches) >= 1
    assert all(p.is_file() for p in s.patches)


def test_series_digest_tracks_names_and_contents(tmp_path):
    d = series_dir(tmp_path, "0001-a.patch\n", ["0001-a.patch"])
    before = parse_series(d).digest
    assert parse_series(d).digest == before
    (d / "0001-a.patch").write_text("patch 0001-a.patch changed\n")
    changed = parse_series(d).digest
    assert changed != before
    (d / "0001-a.patch").rename(d / "0001-z.patch")
    (d / "series").write_text("0001-z.patch\n")
    assert parse_series(d).digest not in (before, changed)


# -- describe_failure --------------------------------------------------------------


def real_failure_output(tmp_path: Path, *, drift: bool) -> str:
    """git am + git apply --check --verbose output for a patch whose second hunk does not apply."""
    repo = tmp_path / "describe"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "drivers").mkdir()
    src = repo / "drivers" / "x.c"
    src.write_text("".join(f"int v{i} = {i};\n" for i in range(1, 31)))
    commit_all(repo, "base")
    edit(src, "int v5 = 5;\n", "int v5 = 50;\n")
    edit(src, "int v25 = 25;\n", "int v25 = 250;\n")
    commit_all(repo, "change")
    patch = Path(git_out(repo, "format-patch", "-1", "-o", str(tmp_path / "out")))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    if drift:  # hunk 1 now applies with an offset, hunk 2 fails
        src.write_text("int v0 = 0;\n" + src.read_text())
    edit(src, "int v24 = 24;\n", "int v24 = 2400;\n")
    commit_all(repo, "drift")
    am = git(repo, "am", "--quiet", str(patch), check=False)
    assert am.returncode != 0
    check = git(repo, "apply", "--check", "--verbose", str(patch), check=False)
    git(repo, "am", "--abort", check=False)
    return am.stdout + am.stderr + check.stdout + check.stderr


def test_describe_failure_on_real_git_output(tmp_path):
    out = real_failure_output(tmp_path, drift=False)
    f = describe_failure("0002-x.patch", out)
    assert (f.patch, f.file, f.line) == ("0002-x.patch", "drivers/x.c", 22)


def test_describe_failure_does_not_report_a_hunk_that_succeeded(tmp_path):
    """git apply -v prints "Hunk #1 succeeded at ..." for a good hunk; that is not the failure."""
    out = real_failure_output(tmp_path, drift=True)
    assert re.search(r"^Hunk #1 succeeded", out, re.M), out
    f = describe_failure("0002-x.patch", out)
    assert (f.file, f.line) == ("drivers/x.c", 22)
    assert f.hunk is None or "succeeded" not in f.hunk


def test_describe_failure_missing_file():
    out = ("Checking patch drivers/gone.c...\nerror: drivers/gone.c: No such file or directory\n"
           "error: drivers/gone.c: does not exist in index\n")
    f = describe_failure("0001-a.patch", out)
    assert (f.file, f.line, f.hunk) == ("drivers/gone.c", None, "file does not exist")


def test_describe_failure_patch_style_hunk():
    out = "error: patch failed: mm/mem.c:40\nHunk #2 FAILED at 40.\n"
    f = describe_failure("p", out)
    assert (f.file, f.line, f.hunk) == ("mm/mem.c", 40, "Hunk #2 FAILED at 40.")


def test_describe_failure_unknown_output():
    f = describe_failure("p", "fatal: something else entirely\n")
    assert (f.file, f.line, f.hunk) == (None, None, None)


# -- make_tree -----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path, pristine, runner) -> Path:
    return make_tree(pristine, tmp_path / "tree" / pristine.name, runner)


def tree_hash(tree: Path) -> str:
    return git_out(tree, "rev-parse", "HEAD^{tree}")


def head(tree: Path) -> str:
    return git_out(tree, "rev-parse", "HEAD")


def test_make_tree(tmp_path, pristine, tree, runner):
    assert (tree / ".git").is_dir()
    assert git_out(tree, "rev-parse", f"{BASE_TAG}^{{commit}}") == head(tree)
    assert git_out(tree, "status", "--porcelain") == ""
    # Files the tree's own .gitignore names are in the base commit too.
    assert "scripts/prebuilt.o" in git_out(tree, "ls-files").split()
    assert not [p for p in tree.parent.iterdir() if p.name.startswith(".tree-")]
    assert (pristine / "README").is_file() and not (pristine / ".git").exists()

    # Once made, it is reused without running anything that changes it.
    lines = runner.log_path.read_text().count("\n")
    assert make_tree(pristine, tree, runner) == tree
    new = runner.log_path.read_text().splitlines()[lines:]
    assert new and all("rev-parse" in line for line in new)


def test_make_tree_base_commit_is_reproducible(tmp_path, pristine, tree, runner):
    other = make_tree(pristine, tmp_path / "elsewhere" / pristine.name, runner)
    assert head(other) == head(tree)


def test_make_tree_refuses_untagged_git_tree(tmp_path, pristine, runner):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    git(foreign, "init", "-q")
    with pytest.raises(PatchError) as ei:
        make_tree(pristine, foreign, runner)
    assert f"without the {BASE_TAG} tag" in str(ei.value)


# -- apply ---------------------------------------------------------------------------


def am_in_progress(tree: Path) -> bool:
    return (tree / ".git" / "rebase-apply").exists()


def test_apply_then_already_applied(tree, make_series, runner):
    series = parse_series(make_series(tree, two_patch_changes()))
    assert apply(tree, series, runner) == "applied"
    assert "int v5 = 50; /* livedump */" in (tree / "kernel" / "main.c").read_text()
    assert (tree / "mm" / "livedump.c").read_text() == "int livedump;\n"
    subjects = git_out(tree, "log", "--format=%s", f"{BASE_TAG}..HEAD").splitlines()
    assert subjects == ["mm: add livedump.c", "kernel: change v5"]
    assert git_out(tree, "rev-parse", APPLIED_REF) == head(tree)

    before = head(tree)
    assert apply(tree, series, runner) == "already applied"
    assert head(tree) == before


def test_apply_resumes_part_way(tree, make_series, runner):
    series = parse_series(make_series(tree, two_patch_changes()))
    apply(tree, series, runner)
    full = tree_hash(tree)
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    assert apply(tree, series, runner) == "resumed"
    assert tree_hash(tree) == full


def test_apply_leaves_extra_commits_alone(tree, make_series, runner):
    series = parse_series(make_series(tree, two_patch_changes()))
    apply(tree, series, runner)
    (tree / "README").write_text("user work\n")
    mine = commit_all(tree, "user: work in progress")
    assert apply(tree, series, runner) == "ahead by 1"
    assert head(tree) == mine


def broken_series(tree: Path, make_series) -> Path:
    """A good first patch, then one whose context no longer matches kernel/main.c."""
    def third(repo: Path) -> None:
        edit(repo / "kernel/main.c", "int v20 = 20;\n", "int v20 = 200;\n")

    d = make_series(tree, [*two_patch_changes()[:1], ("kernel: change v20", third)])
    bad = sorted(d.glob("0002-*.patch"))[0]
    edit(bad, "\n int v18 = 18;\n", "\n int v18 = 1800;\n")
    return d


def test_apply_failure_names_patch_and_location(tree, make_series, runner):
    d = broken_series(tree, make_series)
    series = parse_series(d)
    with pytest.raises(PatchError) as ei:
        apply(tree, series, runner)
    e = ei.value
    bad = series.patches[1].name
    assert e.stage == "patches"
    assert e.message.startswith(f"{bad} does not apply at kernel/main.c:17"), e.message
    assert "\n" not in e.message
    assert "patch failed: kernel/main.c:17" in e.detail
    assert not am_in_progress(tree)
    # The first patch stays applied and is recorded as the harness's own.
    assert git_out(tree, "log", "--format=%s", f"{BASE_TAG}..HEAD") == "kernel: change v5"
    assert git_out(tree, "rev-parse", APPLIED_REF) == head(tree)
    assert git_out(tree, "status", "--porcelain") == ""


def test_apply_after_failure_with_fixed_series(tree, make_series, runner):
    with pytest.raises(PatchError):
        apply(tree, parse_series(broken_series(tree, make_series)), runner)
    assert apply(tree, parse_series(make_series(tree, two_patch_changes())), runner) == "resumed"
    assert (tree / "mm" / "livedump.c").is_file()


def test_apply_refuses_foreign_commit_and_does_not_touch_tree(tree, make_series, runner):
    series = parse_series(make_series(tree, two_patch_changes()))
    apply(tree, series, runner)
    # The user amends the last patch: HEAD is no longer what the harness made.
    (tree / "mm" / "livedump.c").write_text("int livedump = 1; /* user fix */\n")
    git(tree, "commit", "-q", "-a", "--amend", "--no-edit")
    mine = head(tree)
    (tree / "README").write_text("uncommitted user edit\n")

    with pytest.raises(PatchError) as ei:
        apply(tree, series, runner)
    assert "diverge from the series" in str(ei.value)
    assert "2 commit(s)" in str(ei.value)
    assert head(tree) == mine
    assert (tree / "README").read_text() == "uncommitted user edit\n"
    assert (tree / "mm" / "livedump.c").read_text() == "int livedump = 1; /* user fix */\n"


def test_apply_refuses_uncommitted_changes(tree, make_series, runner):
    series = parse_series(make_series(tree, two_patch_changes()))
    (tree / "README").write_text("dirty\n")
    with pytest.raises(PatchError) as ei:
        apply(tree, series, runner)
    assert "uncommitted changes" in str(ei.value)
    assert head(tree) == git_out(tree, "rev-parse", f"{BASE_TAG}^{{commit}}")
    assert (tree / "README").read_text() == "dirty\n"


def test_apply_resets_harness_made_tree_for_new_series(tree, make_series, runner):
    old = parse_series(make_series(tree, two_patch_changes()))
    apply(tree, old, runner)
    assert git_out(tree, "rev-parse", APPLIED_REF) == head(tree)

    def changed_second(repo: Path) -> None:
        edit(repo / "mm/mem.c", "/* mem 7 */\n", "/* mem 7: new approach */\n")

    new = parse_series(make_series(tree, [two_patch_changes()[0], ("mm: new approach", changed_second)]))
    assert apply(tree, new, runner) == "applied"
    mem = (tree / "mm" / "mem.c").read_text()
    assert "/* mem 7: new approach */" in mem
    assert "write-protected" not in mem
    assert not (tree / "mm" / "livedump.c").exists()
    assert git_out(tree, "log", "--format=%s", f"{BASE_TAG}..HEAD").splitlines() == [
        "mm: new approach", "kernel: change v5"]
    assert git_out(tree, "rev-parse", APPLIED_REF) == head(tree)


def test_apply_does_not_reset_harness_made_tree_with_uncommitted_changes(tree, make_series, runner):
    apply(tree, parse_series(make_series(tree, two_patch_changes())), runner)
    before = head(tree)
    (tree / "README").write_text("work in progress\n")
    with pytest.raises(PatchError):
        apply(tree, parse_series(make_series(tree, two_patch_changes()[1:])), runner)
    assert head(tree) == before
    assert (tree / "README").read_text() == "work in progress\n"


# -- export --------------------------------------------------------------------------


def test_export_round_trips(tmp_path, pristine, tree, make_series, runner):
    apply(tree, parse_series(make_series(tree, two_patch_changes())), runner)
    # A commit made by hand on top is exported too.
    (tree / "README").write_text("documented\n")
    commit_all(tree, "docs: document it")
    out = tmp_path / "exported"
    out.mkdir()
    (out / "0009-stale.patch").write_text("old\n")
    written = export(tree, out, runner)

    assert [p.name for p in written] == sorted(p.name for p in out.glob("*.patch"))
    assert len(written) == 3 and not (out / "0009-stale.patch").exists()
    series = parse_series(out)
    assert series.patches == tuple(written)
    assert written[0].read_text().startswith("From 0000000000000000000000000000000000000000 ")
    assert not [p for p in out.iterdir() if p.name.startswith(".export-")]

    fresh = make_tree(pristine, tmp_path / "fresh" / pristine.name, runner)
    assert apply(fresh, series, runner) == "applied"
    assert tree_hash(fresh) == tree_hash(tree)
    # The exported series is what the original tree carries: nothing to do there.
    assert apply(tree, series, runner) == "already applied"


def test_export_without_commits(tmp_path, tree, runner):
    with pytest.raises(PatchError) as ei:
        export(tree, tmp_path / "out", runner)
    assert "nothing to export" in str(ei.value)


# -- tree_identity -------------------------------------------------------------------


def test_tree_identity_tracks_uncommitted_changes(tree, runner):
    clean = patches.tree_identity(tree, runner)
    assert clean == head(tree)
    (tree / "README").write_text("a\n")
    dirty_a = patches.tree_identity(tree, runner)
    (tree / "README").write_text("b\n")
    dirty_b = patches.tree_identity(tree, runner)
    assert dirty_a.startswith(clean + "+") and dirty_b.startswith(clean + "+")
    assert dirty_a != dirty_b


def test_dry_run_make_tree_runs_nothing(tmp_path, pristine):
    log = tmp_path / "dry" / "commands.sh"
    dry = Runner(log_path=log, dry_run=True, echo=io.StringIO())
    dest = tmp_path / "dry-tree" / "t"
    make_tree(pristine, dest, dry)
    assert not dest.exists()
    text = log.read_text()
    assert "git -C" in text and " init " in text and " tag livedump-base" in text
    assert subprocess.run(["git", "-C", str(pristine), "rev-parse"], capture_output=True).returncode != 0


def test_apply_failure_on_a_missing_file(tree, make_series, runner):
    def add(repo: Path) -> None:
        (repo / "mm" / "new.c").write_text("int a;\nint b;\nint c;\n")

    def change(repo: Path) -> None:
        edit(repo / "mm/new.c", "int b;\n", "int b = 2;\n")

    d = make_series(tree, [("mm: add new.c", add), ("mm: change new.c", change)])
    first = sorted(d.glob("0001-*.patch"))[0]
    first.unlink()
    (d / "series").write_text(sorted(d.glob("0002-*.patch"))[0].name + "\n")
    with pytest.raises(PatchError) as ei:
        apply(tree, parse_series(d), runner)
    assert ei.value.message.startswith("0002-mm-change-new.c.patch does not apply (mm/new.c), file does not exist")
    assert not am_in_progress(tree)
    assert head(tree) == git_out(tree, "rev-parse", f"{BASE_TAG}^{{commit}}")
