"""Helpers for the unit tests: tiny tarballs, tiny git trees and patch series.

Nothing here builds a kernel or boots QEMU; everything lives in tmp_path.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from harness.runner import Runner
from harness.source import Lock, sha256_file

# Identity for git commands the tests run themselves (the harness uses its own, in patches.GIT_ENV).
TEST_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Run git in cwd with a fixed identity; return the completed process (text, captured)."""
    return subprocess.run(["git", "-C", str(cwd), *args], env={**os.environ, **TEST_GIT_ENV}, check=check,
                          capture_output=True, text=True, input=input)


def git_out(cwd: Path, *args: str) -> str:
    return git(cwd, *args).stdout.strip()


@pytest.fixture(autouse=True)
def _isolated_git_config(tmp_path_factory, monkeypatch):
    """Keep the user's ~/.gitconfig (hooks, signing, templates) out of the tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GIT_WORK_TREE", raising=False)


@pytest.fixture
def runner(tmp_path) -> Runner:
    """A real Runner that logs to tmp_path/commands.sh and echoes into a buffer."""
    return Runner(log_path=tmp_path / "run" / "commands.sh", echo=io.StringIO())


# -- tarballs ----------------------------------------------------------------

def make_tarball(path: Path, files: Mapping[str, str], *, top: str = "linux-tiny", mode: str = "w:xz") -> Path:
    """Write a tarball at path holding top/<name> for each of files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        dirinfo = tarfile.TarInfo(top)
        dirinfo.type = tarfile.DIRTYPE
        dirinfo.mode = 0o755
        tar.addfile(dirinfo)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


TINY_MAKEFILE = "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n"


@pytest.fixture
def tiny_tarball(tmp_path) -> Path:
    return make_tarball(tmp_path / "dl" / "linux-source-6.1.tar.xz",
                        {"Makefile": TINY_MAKEFILE, "README": "tiny tree\n", "kernel/main.c": "int x;\n"})


def lock_for(tarball: Path, **overrides: str) -> Lock:
    fields = dict(package="linux-source-6.1", version="6.1.192-2", kernel_release="6.1.192",
                  tarball=tarball.name, sha256=sha256_file(tarball))
    fields.update(overrides)
    return Lock(**fields)


# -- git trees and series ----------------------------------------------------

PRISTINE_FILES = {
    "Makefile": TINY_MAKEFILE,
    "README": "".join(f"readme line {i}\n" for i in range(1, 21)),
    "kernel/main.c": "".join(f"int v{i} = {i};\n" for i in range(1, 31)),
    "mm/mem.c": "".join(f"/* mem {i} */\n" for i in range(1, 11)),
    # The tarball ships files that its own .gitignore names; make_tree must add them (-f).
    ".gitignore": "*.o\n",
    "scripts/prebuilt.o": "not really an object\n",
}


@pytest.fixture
def pristine(tmp_path) -> Path:
    """An extracted "pristine source": a few plain files, no .git."""
    root = tmp_path / "src" / "linux-source-6.1_6.1.192-2"
    for name, text in PRISTINE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def scratch_clone(tree: Path, dest: Path) -> Path:
    """A clone of the harness tree at its base tag, to make patches with."""
    subprocess.run(["git", "clone", "-q", str(tree), str(dest)], check=True, capture_output=True)
    git(dest, "checkout", "-q", "-B", "work", "livedump-base")
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A", "-f", ".")
    git(repo, "commit", "-q", "-m", message)
    return git_out(repo, "rev-parse", "HEAD")


def format_series(repo: Path, base: str, directory: Path) -> list[Path]:
    """git format-patch base..HEAD into directory and write its series file."""
    directory.mkdir(parents=True, exist_ok=True)
    git(repo, "format-patch", "-q", "-o", str(directory), f"{base}..HEAD")
    patches = sorted(directory.glob("*.patch"))
    (directory / "series").write_text("# the series\n" + "".join(p.name + "\n" for p in patches))
    return patches


Change = Callable[[Path], None]


def two_patch_changes() -> list[tuple[str, Change]]:
    def first(repo: Path) -> None:
        edit(repo / "kernel/main.c", "int v5 = 5;\n", "int v5 = 50; /* livedump */\n")

    def second(repo: Path) -> None:
        edit(repo / "mm/mem.c", "/* mem 3 */\n", "/* mem 3: write-protected */\n")
        (repo / "mm" / "livedump.c").write_text("int livedump;\n")

    return [("kernel: change v5", first), ("mm: add livedump.c", second)]


@pytest.fixture
def make_series(tmp_path):
    """make_series(tree, changes, name) -> series directory made with git format-patch from a scratch clone."""
    counter = iter(range(1000))

    def _make(tree: Path, changes: list[tuple[str, Change]], name: str | None = None) -> Path:
        n = next(counter)
        clone = scratch_clone(tree, tmp_path / f"scratch-{n}")
        for message, change in changes:
            change(clone)
            commit_all(clone, message)
        directory = tmp_path / (name or f"series-{n}")
        format_series(clone, "livedump-base", directory)
        shutil.rmtree(clone)
        return directory

    return _make


# -- fake guests for GuestConsole -----------------------------------------------


@pytest.fixture
def fake_sh_guest(tmp_path) -> list[str]:
    """argv of a "guest" that prints the ready line, then is an interactive host /bin/sh.

    GuestConsole.close() sends ``poweroff -f`` to the guest shell. On the host
    that must never reach the real poweroff (the tests may run as root), so
    poweroff, reboot and halt are shell functions (via $ENV) that end the shell,
    and a PATH directory ahead of the system's holds stand-ins that do the same.
    """
    fakebin = tmp_path / "fake-guest-bin"
    fakebin.mkdir()
    for name in ("poweroff", "reboot", "halt", "shutdown"):
        script = fakebin / name
        script.write_text('#!/bin/sh\nkill -KILL "$PPID"\nexit 0\n')
        script.chmod(0o755)
    envfile = tmp_path / "fake-guest-env.sh"
    envfile.write_text("poweroff() { exit 0; }\nreboot() { exit 0; }\nhalt() { exit 0; }\n")
    script = (f"PATH={fakebin}:$PATH; export PATH; ENV={envfile}; export ENV; "
              "echo 'livedump-guest: ready'; exec /bin/sh -i")
    return ["/bin/sh", "-c", script]
