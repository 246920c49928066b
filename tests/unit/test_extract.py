"""harness extract: the dump cut out of a raw disk, byte for byte, and nothing that is not a whole livedump."""

from __future__ import annotations

import io

import pytest

from harness import elfcore, extract

from .test_elfcore import core_file, make_core, note, prstatus  # noqa: F401 - core_file is a fixture


def test_extract_copies_exactly_the_dump(core_file, tmp_path):  # noqa: F811
    disk, dump_size = core_file
    out = tmp_path / "vmcore"
    progress = io.StringIO()
    assert extract.extract(disk, out, progress=progress) == dump_size
    assert out.read_bytes() == disk.read_bytes()[:dump_size]
    assert elfcore.read(out).livedump().reason == "because"
    assert "100%" in progress.getvalue()


def test_existing_output_is_kept_unless_forced(core_file, tmp_path):  # noqa: F811
    disk, dump_size = core_file
    out = tmp_path / "vmcore"
    out.write_bytes(b"precious")
    with pytest.raises(extract.ExtractError, match="exists"):
        extract.extract(disk, out, progress=None)
    assert out.read_bytes() == b"precious"
    assert extract.extract(disk, out, progress=None, force=True) == dump_size


def test_truncated_source_is_refused_and_leaves_nothing(core_file, tmp_path):  # noqa: F811
    disk, dump_size = core_file
    short = tmp_path / "short.img"
    short.write_bytes(disk.read_bytes()[:dump_size - 100])
    out = tmp_path / "vmcore"
    with pytest.raises(extract.ExtractError, match="truncated"):
        extract.extract(short, out, progress=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["disk.img", "short.img"])


def test_not_a_livedump_is_refused(tmp_path):
    qemu = tmp_path / "qemu.core"
    qemu.write_bytes(make_core(note("CORE", elfcore.NT_PRSTATUS, prstatus(1, 0, 0)), []))
    with pytest.raises(extract.ExtractError, match="no LIVEDUMP note"):
        extract.extract(qemu, tmp_path / "out", progress=None)
    zeros = tmp_path / "blank.img"
    zeros.write_bytes(b"\0" * 8192)
    with pytest.raises(extract.ExtractError, match="does not start with an ELF"):
        extract.extract(zeros, tmp_path / "out", progress=None)
    assert not (tmp_path / "out").exists()
