from __future__ import annotations

import io
import os
import subprocess

import pytest

from harness.errors import HarnessError
from harness.runner import Runner, quote

TRICKY = ["plain", "with space", "it's", 'say "hi"', "$HOME", "`id`", "a\\b", "*", "semi;colon", "", "-n",
          "new\nline", "tab\there", "ümlaut", "$(echo nope)"]


def sh(line: str) -> str:
    return subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, check=True).stdout


def test_quote_round_trips_through_sh():
    line = quote(["printf", "%s\\0", *TRICKY])
    assert sh(line).split("\0")[:-1] == TRICKY


def test_quote_plain_words_stay_readable(tmp_path):
    assert quote(["make", "-C", tmp_path / "src", "-j4"]) == f"make -C {tmp_path}/src -j4"


def test_quote_with_cwd_and_env(tmp_path):
    d = tmp_path / "dir with space"
    d.mkdir()
    line = quote(["sh", "-c", 'printf "%s|" "$FOO" "$BAR"; pwd'], cwd=d, env={"FOO": "a b'c", "BAR": "$x"})
    assert line.startswith("(cd ")
    assert sh(line) == f"a b'c|$x|{d}\n"


def test_dry_run_records_but_does_not_mutate(tmp_path):
    log = tmp_path / "run" / "commands.sh"
    echo = io.StringIO()
    r = Runner(log_path=log, dry_run=True, echo=echo)
    target = tmp_path / "should not exist"
    res = r.run(["touch", target])
    assert res.returncode == 0
    assert not target.exists()
    # Read-only commands still run: later steps need their answers.
    out = r.run(["sh", "-c", "echo answer"], capture=True, mutates=False)
    assert out.stdout == "answer\n"
    lines = log.read_text().splitlines()
    assert lines == [quote(["touch", target]), quote(["sh", "-c", "echo answer"])]
    assert echo.getvalue().splitlines()[0] == "would run: " + quote(["touch", target])
    # The recorded line replays the command.
    sh(lines[0])
    assert target.exists()


def test_run_records_once_and_runs(tmp_path):
    log = tmp_path / "commands.sh"
    echo = io.StringIO()
    r = Runner(log_path=log, echo=echo)
    target = tmp_path / "made"
    r.run(["touch", target])
    assert target.exists()
    assert log.read_text() == quote(["touch", target]) + "\n"
    assert echo.getvalue() == ""  # quiet unless verbose

    r.verbose = True
    r.run(["true"])
    assert echo.getvalue() == "+ true\n"
    assert log.read_text().splitlines()[-1] == "true"


def test_run_env_adds_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDUMP_TEST_KEEP", "kept")
    r = Runner(log_path=tmp_path / "c.sh", echo=io.StringIO())
    res = r.run(["sh", "-c", 'echo "$LIVEDUMP_TEST_KEEP $LIVEDUMP_TEST_ADD"'], env={"LIVEDUMP_TEST_ADD": "added"},
                capture=True)
    assert res.stdout == "kept added\n"
    assert "LIVEDUMP_TEST_ADD" not in os.environ
    assert (tmp_path / "c.sh").read_text().startswith("LIVEDUMP_TEST_ADD=added sh -c ")


def test_run_check(tmp_path):
    r = Runner(log_path=tmp_path / "c.sh", echo=io.StringIO())
    with pytest.raises(subprocess.CalledProcessError):
        r.run(["false"])
    assert r.run(["false"], check=False).returncode == 1


def test_missing_program_is_a_harness_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = Runner(log_path=tmp_path / "c.sh", echo=io.StringIO())
    with pytest.raises(HarnessError) as ei:
        r.run(["git", "status"])
    assert ei.value.message.startswith("git not found on PATH")
    assert ei.value.exit_code == HarnessError.INFRA


def test_missing_cwd_is_not_reported_as_missing_program(tmp_path):
    r = Runner(log_path=tmp_path / "c.sh", echo=io.StringIO())
    with pytest.raises(FileNotFoundError):
        r.run(["true"], cwd=tmp_path / "no-such-dir")
