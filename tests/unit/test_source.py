from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from harness import source
from harness.errors import SourceError
from harness.runner import Runner
from harness.source import STAMP, Lock, extract, load_lock, release_from_makefile, verify_tarball

from .conftest import TINY_MAKEFILE, lock_for, make_tarball

GOOD = {
    "package": "linux-source-6.1",
    "version": "6.1.192-2",
    "kernel_release": "6.1.192",
    "tarball": "linux-source-6.1.tar.xz",
    "sha256": "4d415b3d364834fd818270e88813e90323bbfce4f519a0e6bd4940ddcd7df693",
}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def one_line(e: SourceError) -> str:
    text = str(e)
    assert "\n" not in text, text
    assert e.stage == "source"
    return text


# -- load_lock ---------------------------------------------------------------

def test_load_lock_good(tmp_path):
    lock = load_lock(write_json(tmp_path / "kernel.lock.json", GOOD))
    assert lock == Lock(**GOOD)
    assert lock.name == "linux-source-6.1_6.1.192-2"
    assert lock.deb_name == "linux-source-6.1_6.1.192-2_all.deb"


def test_repo_lock_file_loads():
    from harness.settings import LOCK_FILE

    lock = load_lock(LOCK_FILE)
    assert lock.kernel_release.startswith("6.1.")


def test_deb_name_escapes_epoch():
    lock = Lock(**{**GOOD, "version": "1:6.1.192-2"})
    assert lock.deb_name == "linux-source-6.1_1%3a6.1.192-2_all.deb"


def test_load_lock_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(SourceError) as ei:
        load_lock(path)
    assert one_line(ei.value) == f"source: lock file {path} is missing"


def test_load_lock_bad_json(tmp_path):
    path = write_json(tmp_path / "lock.json", '{"package": "linux-source-6.1",')
    with pytest.raises(SourceError) as ei:
        load_lock(path)
    text = one_line(ei.value)
    assert f"lock file {path} is not valid JSON" in text
    assert "line 1" in text  # the JSON error position is kept


@pytest.mark.parametrize("drop", ["package", "sha256"])
def test_load_lock_missing_key(tmp_path, drop):
    data = {k: v for k, v in GOOD.items() if k != drop}
    with pytest.raises(SourceError) as ei:
        load_lock(write_json(tmp_path / "lock.json", data))
    assert one_line(ei.value).endswith(f"lacks {drop}")


def test_load_lock_empty_and_non_string_values(tmp_path):
    data = {**GOOD, "version": "", "kernel_release": 6}
    with pytest.raises(SourceError) as ei:
        load_lock(write_json(tmp_path / "lock.json", data))
    assert one_line(ei.value).endswith("lacks version, kernel_release")


def test_load_lock_not_an_object(tmp_path):
    """A JSON list or string is not a lock: a SourceError, not an AttributeError."""
    with pytest.raises(SourceError) as ei:
        load_lock(write_json(tmp_path / "lock.json", '["linux-source-6.1"]'))
    assert "lock.json" in one_line(ei.value)


def test_load_lock_unreadable(tmp_path):
    """A directory where the lock file should be: a SourceError, not an IsADirectoryError."""
    path = tmp_path / "kernel.lock.json"
    path.mkdir()
    with pytest.raises(SourceError) as ei:
        load_lock(path)
    assert one_line(ei.value).startswith(f"source: lock file {path} cannot be read")


def test_load_lock_unknown_keys(tmp_path):
    data = {**GOOD, "url": "http://x", "comment": "y"}
    with pytest.raises(SourceError) as ei:
        load_lock(write_json(tmp_path / "lock.json", data))
    assert one_line(ei.value).endswith("has unknown keys comment, url")


@pytest.mark.parametrize("bad", ["abc", GOOD["sha256"].upper(), GOOD["sha256"] + "0", "g" * 64])
def test_load_lock_bad_sha256(tmp_path, bad):
    with pytest.raises(SourceError) as ei:
        load_lock(write_json(tmp_path / "lock.json", {**GOOD, "sha256": bad}))
    text = one_line(ei.value)
    assert repr(bad) in text
    assert "64 lowercase hex digits" in text


def test_write_lock_round_trips(tmp_path):
    path = tmp_path / "kernel.lock.json"
    lock = Lock(**{**GOOD, "version": "6.1.200-1"})
    source.write_lock(path, lock)
    assert load_lock(path) == lock
    assert json.loads(path.read_text()) == asdict(lock)
    assert not path.with_suffix(".tmp").exists()


# -- verify_tarball ------------------------------------------------------------

def test_verify_tarball_good(tiny_tarball):
    verify_tarball(tiny_tarball, lock_for(tiny_tarball))


def test_verify_tarball_corrupted(tiny_tarball):
    lock = lock_for(tiny_tarball)
    data = bytearray(tiny_tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tiny_tarball.write_bytes(bytes(data))
    with pytest.raises(SourceError) as ei:
        verify_tarball(tiny_tarball, lock)
    text = one_line(ei.value)
    assert "corrupt or not the pinned one" in text
    assert f"lock wants {lock.sha256}" in text
    assert source.sha256_file(tiny_tarball) in text


def test_verify_tarball_missing(tmp_path, tiny_tarball):
    lock = lock_for(tiny_tarball)
    missing = tmp_path / "gone.tar.xz"
    with pytest.raises(SourceError) as ei:
        verify_tarball(missing, lock)
    assert one_line(ei.value) == f"source: tarball {missing} does not exist"


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    p = tmp_path / "blob"
    data = bytes(range(256)) * 9000  # more than one 1 MiB chunk
    p.write_bytes(data)
    assert source.sha256_file(p) == hashlib.sha256(data).hexdigest()


# -- extract -------------------------------------------------------------------

def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".extract-"))


def test_extract_then_reuse(tmp_path, tiny_tarball, runner):
    sha = source.sha256_file(tiny_tarball)
    dest = tmp_path / "src" / "linux-source-6.1_6.1.192-2"
    assert extract(tiny_tarball, dest, sha, runner) == dest
    assert (dest / "Makefile").read_text() == TINY_MAKEFILE
    assert (dest / "kernel" / "main.c").read_text() == "int x;\n"
    assert (dest / STAMP).read_text().strip() == sha
    assert leftovers(dest.parent) == []
    assert runner.log_path.read_text().count("tar -xf") == 1

    # Second time: nothing runs, the tree (and a marker we left in it) is kept.
    (dest / "marker").write_text("kept")
    assert extract(tiny_tarball, dest, sha, runner) == dest
    assert (dest / "marker").read_text() == "kept"
    assert runner.log_path.read_text().count("tar -xf") == 1


def test_extract_refuses_unstamped_dest(tmp_path, tiny_tarball, runner):
    sha = source.sha256_file(tiny_tarball)
    dest = tmp_path / "src" / "tree"
    dest.mkdir(parents=True)
    (dest / "user-file").write_text("mine")
    with pytest.raises(SourceError) as ei:
        extract(tiny_tarball, dest, sha, runner)
    assert "exists but is not an extraction of the pinned tarball" in str(ei.value)
    assert sorted(p.name for p in dest.iterdir()) == ["user-file"]


def test_extract_refuses_dest_stamped_for_another_tarball(tmp_path, tiny_tarball, runner):
    dest = tmp_path / "src" / "tree"
    dest.mkdir(parents=True)
    (dest / STAMP).write_text("0" * 64 + "\n")
    with pytest.raises(SourceError):
        extract(tiny_tarball, dest, source.sha256_file(tiny_tarball), runner)
    assert (dest / STAMP).read_text() == "0" * 64 + "\n"


def test_extract_truncated_tarball_leaves_nothing(tmp_path, tiny_tarball, runner):
    data = tiny_tarball.read_bytes()
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(data[: len(data) // 2])
    dest = tmp_path / "out" / "tree"
    with pytest.raises(SourceError) as ei:
        extract(broken, dest, "f" * 64, runner)
    assert one_line(ei.value).startswith(f"source: cannot extract {broken}: tar exited ")
    assert ei.value.detail  # tar's own complaint
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_extract_refuses_two_top_directories(tmp_path, runner):
    tarball = tmp_path / "two.tar.xz"
    import tarfile

    make_tarball(tarball, {"a": "1"}, top="one")
    with tarfile.open(tarball, "r:xz") as t:
        members = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
    import io

    with tarfile.open(tarball, "w:xz") as t:
        for m, data in members:
            t.addfile(m, io.BytesIO(data) if data is not None else None)
        extra = tarfile.TarInfo("two")
        extra.type = tarfile.DIRTYPE
        t.addfile(extra)
    dest = tmp_path / "out" / "tree"
    with pytest.raises(SourceError) as ei:
        extract(tarball, dest, source.sha256_file(tarball), runner)
    assert "does not hold exactly one top directory" in str(ei.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_extract_dry_run_changes_nothing(tmp_path, tiny_tarball):
    import io

    log = tmp_path / "commands.sh"
    dry = Runner(log_path=log, dry_run=True, echo=io.StringIO())
    dest = tmp_path / "out" / "tree"
    extract(tiny_tarball, dest, source.sha256_file(tiny_tarball), dry)
    assert not dest.exists()
    assert leftovers(dest.parent) == []
    assert "tar -xf" in log.read_text()


# -- release_from_makefile -------------------------------------------------------

def test_release_from_makefile():
    assert release_from_makefile(TINY_MAKEFILE) == "6.1.192"
    text = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION = -rc1\nNAME = Baby Opossum Posse\n"
    assert release_from_makefile(text) == "6.12.0"


def test_release_from_makefile_ignores_non_anchored_and_missing():
    assert release_from_makefile("VERSION = 6\nPATCHLEVEL = 1\n") is None
    # KERNELVERSION-like lines elsewhere must not be picked up.
    text = "XVERSION = 9\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 7\n"
    assert release_from_makefile(text) == "6.1.7"
    assert release_from_makefile("VERSION = six\nPATCHLEVEL = 1\nSUBLEVEL = 7\n") is None


# -- debian version ordering used by repin -----------------------------------------

def test_debian_version_key_orders_numerically():
    versions = ["6.1.76-1~deb12u1", "6.1.192-2", "6.1.99-1", "6.1.192-1"]
    assert max(versions, key=source._debian_version_key) == "6.1.192-2"
    assert sorted(versions, key=source._debian_version_key)[0] == "6.1.76-1~deb12u1"
