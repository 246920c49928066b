"""The CLI's error path: one ``harness: <stage>: <message>`` line, a non-zero exit, result.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli, pipeline, qemu
from harness.build import BuildResult
from harness.settings import REPO_ROOT
from harness.source import STAMP, Lock, write_lock

from .conftest import lock_for

TIMESTAMPED = re.compile(r"^harness: \d\d:\d\d:\d\d ")
TEST_PACKAGE = "livedump-test-source"  # not installed anywhere: obtain() takes the .deb from the cache


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Cache and artifacts in tmp_path; nothing lands in the repository or ~/.cache."""
    monkeypatch.setenv("LIVEDUMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIVEDUMP_ARTIFACTS", str(tmp_path / "never-used"))
    return tmp_path


def run_main(capsys, argv: list[str], artifacts: Path) -> tuple[int, list[str], str, dict, Path]:
    # Options go before the command's own arguments: `run` takes everything after it as the guest command.
    code = cli.main([argv[0], "--artifacts", str(artifacts), *argv[1:]])
    captured = capsys.readouterr()
    runs = [p for p in artifacts.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    result = json.loads((runs[0] / "result.json").read_text())
    return code, untimed(captured.err.splitlines()), captured.out, result, runs[0]


def untimed(lines: list[str]) -> list[str]:
    """The harness's stderr lines without their HH:MM:SS, which every line must have."""
    for line in lines:
        assert TIMESTAMPED.match(line), line
    return [TIMESTAMPED.sub("harness: ", line) for line in lines]


def fake_deb(cache: Path, tarball: Path, lock: Lock) -> Path:
    """A real .deb holding usr/src/<tarball>, where download_deb() looks first."""
    root = cache.parent / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {lock.package}\nVersion: {lock.version}\nArchitecture: all\n"
        "Maintainer: test <test@example.invalid>\nDescription: test source\n")
    (root / "usr" / "src").mkdir(parents=True)
    (root / "usr" / "src" / lock.tarball).write_bytes(tarball.read_bytes())
    deb = cache / "downloads" / lock.deb_name
    deb.parent.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_missing_lock_file(env, capsys, monkeypatch):
    missing = env / "no-such.lock.json"
    monkeypatch.setattr(pipeline, "LOCK_FILE", missing)
    code, err, out, result, run_dir = run_main(capsys, ["source"], env / "artifacts")
    assert code == 1
    assert err == [f"harness: source: lock file {missing} is missing", f"harness: artifacts in {run_dir}"]
    assert out == ""
    assert result["verdict"] == "error"
    assert result["error"] == f"source: lock file {missing} is missing"
    assert result["command"] == "source"
    assert "source" in result["stages_s"]
    assert not (env / "never-used").exists()


@pytest.mark.skipif(subprocess.run(["which", "dpkg-deb"], capture_output=True).returncode != 0,
                    reason="needs dpkg-deb")
def test_corrupt_tarball(env, capsys, monkeypatch, tiny_tarball):
    good = lock_for(tiny_tarball, package=TEST_PACKAGE, version="1.0-1")
    bad = Lock(**{**good.__dict__, "sha256": "0" * 64})
    lock_path = env / "kernel.lock.json"
    write_lock(lock_path, bad)
    monkeypatch.setattr(pipeline, "LOCK_FILE", lock_path)
    fake_deb(env / "cache", tiny_tarball, bad)

    code, err, out, result, run_dir = run_main(capsys, ["source"], env / "artifacts")
    assert code == 1
    assert err[0].startswith("harness: source: tarball ")
    assert "is corrupt or not the pinned one" in err[0] and f"lock wants {'0' * 64}" in err[0]
    assert err[1:] == [f"harness: artifacts in {run_dir}"]
    assert result["verdict"] == "error"
    assert result["error"] == err[0].removeprefix("harness: ")
    assert not (env / "cache" / "src" / bad.name).exists()
    # The commands that ran are on record.
    assert "dpkg-deb -x" in (run_dir / "commands.sh").read_text()

    # With the right sha256 the same cache gives the extracted tree.
    write_lock(lock_path, good)
    code, err, out, result, run_dir = run_main(capsys, ["source"], env / "artifacts2")
    dest = env / "cache" / "src" / good.name
    assert (code, out.strip(), result["verdict"]) == (0, str(dest), "pass")
    assert (dest / STAMP).read_text().strip() == good.sha256
    assert result["source"] == {"package": TEST_PACKAGE, "version": "1.0-1", "sha256": good.sha256}


def test_qemu_missing_is_reported_before_the_build(env, capsys, monkeypatch):
    """`run` without QEMU installed: ToolMissing naming the program and the package, exit 2 (infra)."""
    built = []

    def fake_build(self):
        built.append(True)
        return BuildResult(env, env / "bzImage", env / "vmlinux", env / "usr/include", "6.1.192", False)

    monkeypatch.setattr(pipeline.Pipeline, "build", fake_build)
    monkeypatch.setattr(pipeline.Pipeline, "rootfs", lambda self: env / "initramfs.cpio")
    empty = env / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    code, err, out, result, run_dir = run_main(capsys, ["run", "--", "true"], env / "artifacts")
    message = ("qemu: qemu-system-x86_64 not found; install the Debian package qemu-system-x86 "
               "(make setup does)")
    assert code == 2
    assert err == [f"harness: {message}", f"harness: artifacts in {run_dir}"]
    assert result["verdict"] == "error" and result["error"] == message
    # Nobody waits for a kernel build to learn that QEMU is missing.
    assert built == []


def test_cli_subprocess_reports_one_line(tmp_path):
    """`python -m harness run` without a command, as a user would type it."""
    env = {**os.environ, "LIVEDUMP_CACHE": str(tmp_path / "cache"), "LIVEDUMP_ARTIFACTS": str(tmp_path / "a")}
    r = subprocess.run([sys.executable, "-m", "harness", "run", "--artifacts", str(tmp_path / "arts")],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = untimed(r.stderr.splitlines())
    assert lines[0] == "harness: run: no command given: python -m harness run -- COMMAND"
    assert lines[1].startswith(f"harness: artifacts in {tmp_path / 'arts'}/")
    assert len(lines) == 2
    run_dir = Path(lines[1].removeprefix("harness: artifacts in "))
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["verdict"], result["error"]) == ("error", "run: no command given: python -m harness run -- COMMAND")
    assert (tmp_path / "arts" / "latest").resolve() == run_dir.resolve()
    assert not (tmp_path / "a").exists() and not (tmp_path / "cache").exists()


def test_cli_usage_error_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["patches", "frobnicate", "--artifacts", str(tmp_path)])
    assert ei.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_options_from_args():
    args = cli.build_parser().parse_args(["boot", "--fragments", "base,livedump", "--debug-kernel",
                                          "--boot-timeout", "5", "--run-timeout", "9", "--accel", "tcg"])
    opts = cli.options_from(args)
    assert opts.fragments == ("base", "livedump", "debug")
    assert (opts.timeouts.boot, opts.timeouts.command, opts.timeouts.run) == (5.0, 120.0, 9.0)
    assert opts.accel == "tcg"
    assert opts.kernel_src is None


def test_test_command_fails_on_a_kernel_without_livedump(tmp_path):
    """`make test-qemu` on a kernel whose headers lost linux/livedump.h fails; it is not a boot test."""
    from types import SimpleNamespace

    from harness.errors import HarnessError

    (tmp_path / "linux").mkdir()
    booted = []
    fake = SimpleNamespace(build=lambda: SimpleNamespace(headers=tmp_path, release="6.1.192-livedump"),
                           boot=lambda *a, **k: booted.append(True))
    with pytest.raises(HarnessError, match="no livedump"):
        cli.cmd_test(fake, None)
    assert booted == []


def test_append_and_qemu_opts_reach_the_qemu_command_line(tmp_path):
    args = cli.build_parser().parse_args(["run", "--append", "debug_pagealloc=on quiet", "--qemu-opt", "-d int",
                                          "--qemu-opt", "-icount shift=3", "--", "true"])
    options = cli.options_from(args)
    assert options.append == ("debug_pagealloc=on", "quiet")
    assert options.qemu_opts == ("-d", "int", "-icount", "shift=3")
    argv = qemu.QemuConfig(kernel=tmp_path / "bzImage", append=options.append, extra=options.qemu_opts).argv()
    assert argv[argv.index("-append") + 1].endswith(" debug_pagealloc=on quiet")
    assert argv[-4:] == ["-d", "int", "-icount", "shift=3"]
