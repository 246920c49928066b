"""Pipeline's derived pipelines: another tree or another run, one accelerator probe per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import bisect as b
from harness import pipeline as pipeline_mod
from harness import qemu
from harness.artifacts import Run
from harness.errors import BuildError
from harness.runner import Runner


@pytest.fixture
def probes(monkeypatch) -> list[Path]:
    """Every KVM probe the pipelines make (the real one boots a guest)."""
    made: list[Path] = []

    def choose(requested, kernel, *, warn=None, arch=None):
        made.append(kernel)
        return qemu.AccelChoice("kvm", "a guest printed within 2 s")

    monkeypatch.setattr(qemu, "choose_accel", choose)
    return made


def pipeline(tmp_path: Path, name: str, **options) -> pipeline_mod.Pipeline:
    run = Run(directory=tmp_path / name, command=name)
    paths = pipeline_mod.Paths(cache=tmp_path / "cache", artifacts=tmp_path / "art")
    return pipeline_mod.Pipeline(run, pipeline_mod.Options(**options), paths=paths, runner=Runner())


def test_for_tree_shares_the_accelerator_and_the_run(tmp_path, probes):
    first = pipeline(tmp_path, "first", smp=4)
    assert first.accel(Path("bzImage")).accel == "kvm"
    other = first.for_tree(tmp_path / "linux")
    assert other.accel(Path("other-bzImage")).accel == "kvm"
    assert probes == [Path("bzImage")]
    assert other.run is first.run and other.runner is first.runner
    assert other.options.kernel_src == tmp_path / "linux" and other.options.smp == 4
    assert first.run.facts["accel"]["why"] == "a guest printed within 2 s"  # the prober's words stay
    pinned = first.for_tree(None, run=Run(directory=tmp_path / "second", command="second"))
    assert pinned.options.kernel_src is None and pinned.run is not first.run
    assert pinned.runner is not first.runner  # its own commands.sh
    assert pinned.run.facts["accel"] == {"used": "kvm", "why": "a guest printed within 2 s (probed earlier in "
                                         "this session)"}


def test_for_tree_before_any_probe_probes_once_itself(tmp_path, probes):
    other = pipeline(tmp_path, "first").for_tree(tmp_path / "linux")
    other.accel(Path("bzImage"))
    other.accel(Path("bzImage"))
    assert probes == [Path("bzImage")]


def test_for_run_is_the_same_kernel_with_its_own_logs(tmp_path, probes, monkeypatch):
    first = pipeline(tmp_path, "first", kernel_src=tmp_path / "linux")
    built = object()
    first._build = built  # what build() cached: a derived run must not build again
    monkeypatch.setattr(pipeline_mod.Pipeline, "_build_locked", lambda self: pytest.fail("built again"))
    first.accel(Path("bzImage"))
    second = first.for_run(Run(directory=tmp_path / "try-2", command="try-2"))
    assert second.build() is built
    assert second.run.path("serial.log") == tmp_path / "try-2" / "serial.log"
    second.accel(Path("bzImage"))
    assert len(probes) == 1


def test_bisect_builder_probes_kvm_once_per_bisect(tmp_path, probes, monkeypatch):
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / "Makefile").write_text("all:\n")
    (tree / "Kconfig").write_text("")
    seen: list[pipeline_mod.Pipeline] = []

    def build_that_boots(self):
        seen.append(self)
        self.accel(Path("bzImage"))
        raise BuildError("make failed (exit 2)", detail="x.c:1: error")

    monkeypatch.setattr(pipeline_mod.Pipeline, "build", build_that_boots)
    paths = pipeline_mod.Paths(cache=tmp_path / "cache", artifacts=tmp_path / "art")
    builder = b.PipelineBuilder(tree, pipeline_mod.Options(kernel_src=tree), paths, Runner())
    for step in ("one", "two", "three"):
        (tmp_path / step).mkdir()
        assert builder.build("0" * 40, tmp_path / step).status is b.Build.FAILED
    assert len(probes) == 1 and len(seen) == 3
    assert [p.run.directory.name for p in seen] == ["one", "two", "three"]
    assert all(p.options.kernel_src == tree for p in seen)
