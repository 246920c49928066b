"""What a person running the harness sees on stderr, and what the run directory's harness.log keeps."""

from __future__ import annotations

import re
import time

import pytest

from harness import cli, log
from harness.pipeline import say
from harness.runner import Runner

CONSOLE_LINE = re.compile(r"^harness: \d\d:\d\d:\d\d (.*)$")
FILE_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) +(.*)$")


@pytest.fixture(autouse=True)
def _no_run_log_left_open():
    yield
    log.close_run_log()


def file_records(path) -> list[tuple[str, str]]:
    """(level, message) of each harness.log line; every line must carry a date, a time and a level."""
    records = []
    for line in path.read_text().splitlines():
        m = FILE_LINE.match(line)
        assert m, f"not a timestamped record: {line!r}"
        records.append((m[1], m[2]))
    return records


def test_stderr_lines_are_harness_time_message(capsys):
    log.console()
    before = time.strftime("%H:%M:%S")
    say("building 6.1.192-livedump")
    after = time.strftime("%H:%M:%S")
    log.debug("+ make -C /tree")  # debug is for harness.log only
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    m = CONSOLE_LINE.match(err[0])
    assert m and m[1] == "building 6.1.192-livedump", err
    assert err[0].split()[1] in (before, after)  # the local time of the call


def test_run_log_keeps_debug_lines_and_command_lines(tmp_path, capsys):
    path = log.to_run_directory(tmp_path)
    assert path == tmp_path / "harness.log"
    say("booting")
    Runner().run(["true", "a b"])
    log.close_run_log()
    records = file_records(path)
    assert ("INFO", "booting") in records
    assert ("DEBUG", "run: true 'a b'") in records  # the exact command line, shell-quoted
    assert "run: true" not in capsys.readouterr().err


def test_each_run_directory_gets_only_its_own_lines(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    log.to_run_directory(first)
    say("one")
    log.to_run_directory(second)
    say("two")
    log.close_run_log()
    assert [m for _, m in file_records(first / "harness.log")] == ["one"]
    assert [m for _, m in file_records(second / "harness.log")] == ["two"]


def test_a_cli_run_leaves_a_timestamped_harness_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    assert cli.main(["run", "--artifacts", str(tmp_path / "arts")]) == 1
    run_dir = next(p for p in (tmp_path / "arts").iterdir() if not p.is_symlink())
    records = file_records(run_dir / "harness.log")
    assert records[0][0] == "DEBUG" and records[0][1].endswith(f"run --artifacts {tmp_path / 'arts'}")
    assert ("ERROR", "run: no command given: python -m harness run -- COMMAND") in records
    assert ("INFO", f"artifacts in {run_dir}") in records
    # stderr has the same lines a person reads, each with its time.
    err = capsys.readouterr().err.splitlines()
    assert [CONSOLE_LINE.match(line)[1] for line in err] == [m for level, m in records if level != "DEBUG"]


def test_progress_reports_while_a_step_runs_and_stops_after(caplog):
    caplog.set_level("INFO", logger="harness")
    details = iter(["10 lines", "20 lines"])

    def detail() -> str:
        try:
            return next(details)
        except StopIteration:
            raise OSError("log gone") from None  # a detail that cannot be read only drops the detail

    with log.progress("building", detail, every=0.05):
        time.sleep(0.28)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) >= 3, messages
    assert messages[0] == "building: 0s, 10 lines" and messages[1] == "building: 0s, 20 lines"
    assert messages[2] == "building: 0s"
    time.sleep(0.15)
    assert len(caplog.records) == len(messages)  # nothing after the step ended


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (42.9, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_elapsed(seconds, shown):
    assert log.elapsed(seconds) == shown
