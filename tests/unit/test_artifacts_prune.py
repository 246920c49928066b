"""Old runs and their disk images are pruned when a run starts; live runs and foreign files never are."""

from __future__ import annotations

import json
import os

from harness import artifacts
from harness.artifacts import Retention, Run, prune

NOW = 2_000_000_000.0


def make_run(root, name: str, *, verdict: str = "pass", image: bool = True, age_s: float = 3600):
    d = root / name
    (d / "sub").mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"verdict": verdict}))
    (d / "serial.log").write_text("log")
    if image:
        (d / "dump0.img").write_bytes(b"x")
        (d / "sub" / "capture-1.elf").write_bytes(b"x")
    os.utime(d, (NOW - age_s, NOW - age_s))
    return d


def test_runs_beyond_the_limit_go_and_older_images_go_first(tmp_path):
    names = [f"20261203T1000{i:02d}-pytest" for i in range(6)]  # oldest first
    for n in names:
        make_run(tmp_path, n)
    (tmp_path / "latest").symlink_to(names[-1])
    (tmp_path / "notes.txt").write_text("mine")
    removed = prune(tmp_path, Retention(runs=4, images=2), now=NOW)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(names[2:] + ["latest", "notes.txt"])
    for n in names[4:]:  # the two newest keep everything
        assert (tmp_path / n / "dump0.img").exists() and (tmp_path / n / "sub" / "capture-1.elf").exists()
    for n in names[2:4]:  # kept, but without their images; logs stay
        assert not (tmp_path / n / "dump0.img").exists() and not (tmp_path / n / "sub" / "capture-1.elf").exists()
        assert (tmp_path / n / "serial.log").exists()
    assert f"{names[0]}/" in removed and f"{names[3]}/dump0.img" in removed


def test_a_live_run_is_never_touched_but_a_day_old_one_is(tmp_path):
    live = make_run(tmp_path, "20261203T100000-bench", verdict="running", age_s=60)
    stale = make_run(tmp_path, "20261203T100001-bench", verdict="running", age_s=2 * artifacts.RUNNING_GRACE_S)
    for i in range(3):
        make_run(tmp_path, f"20261203T11000{i}-pytest")
    prune(tmp_path, Retention(runs=2, images=1), now=NOW)
    assert (live / "dump0.img").exists()
    assert not stale.exists()


def test_the_new_run_counts_as_the_newest_and_is_kept(tmp_path, monkeypatch):
    for i in range(3):
        make_run(tmp_path, f"20200101T00000{i}-pytest")
    monkeypatch.setenv("LIVEDUMP_KEEP_RUNS", "2")
    monkeypatch.setenv("LIVEDUMP_KEEP_IMAGES", "1")
    run = Run.create(tmp_path, "test")
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    assert runs == ["20200101T000002-pytest", run.directory.name]
    assert not (tmp_path / "20200101T000002-pytest" / "dump0.img").exists()
    assert run.facts["pruned"] >= 3
