from __future__ import annotations

import json

import pytest

from harness.artifacts import Run


def result(run: Run) -> dict:
    return json.loads(run.path("result.json").read_text())


def test_run_directories_are_unique_and_latest_follows(tmp_path):
    a = Run.create(tmp_path, "build")
    b = Run.create(tmp_path, "build")
    assert a.directory != b.directory and a.directory.is_dir() and b.directory.is_dir()
    assert (tmp_path / "latest").resolve() == b.directory.resolve()
    assert result(a)["verdict"] == "running" and result(a)["command"] == "build"


def test_stage_timing_and_finish(tmp_path):
    run = Run.create(tmp_path, "test")
    with pytest.raises(RuntimeError):
        with run.stage("build"):
            raise RuntimeError("boom")
    assert "build" in result(run)["stages_s"]  # recorded even when the stage fails
    run.facts["accel"] = {"used": "tcg", "why": "requested"}
    run.finish("error", "build: make failed")
    r = result(run)
    assert (r["verdict"], r["error"], r["accel"]["used"]) == ("error", "build: make failed", "tcg")
    assert not run.path("result.json.tmp").exists()
    assert run.commands_log == run.directory / "commands.sh"
