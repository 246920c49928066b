"""Fixtures that build the pinned kernel with the series (cached) and boot it.

The kernel is built once per session through the same Pipeline as
``make test-qemu``; each test module gets its own guest. Set
LIVEDUMP_ACCEL=tcg to skip the KVM probe, and LIVEDUMP_MEMORY (e.g. 4G, the
first size whose direct map has 1G pages) to run the suite at another RAM
size than the default 512M. LIVEDUMP_ARCH=arm64 runs it on an arm64 guest
(harness/arch.py), LIVEDUMP_FRAGMENTS=base with a kernel of those fragments
(until the series has arm64 support, only tests that need no livedump, such
as test_boot.py, can pass there).
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from harness import arch
from harness.artifacts import Run
from harness.pipeline import Options, Pipeline
from harness.settings import Paths


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    paths = Paths.from_env()
    run = Run.create(paths.artifacts, "pytest")
    options = Options(accel=os.environ.get("LIVEDUMP_ACCEL", "auto"))
    if os.environ.get("LIVEDUMP_MEMORY"):
        options = replace(options, memory=os.environ["LIVEDUMP_MEMORY"])
    if os.environ.get("LIVEDUMP_ARCH"):
        options = replace(options, arch=arch.by_name(os.environ["LIVEDUMP_ARCH"]))
    if os.environ.get("LIVEDUMP_FRAGMENTS"):
        options = replace(options, fragments=tuple(f for f in os.environ["LIVEDUMP_FRAGMENTS"].split(",") if f))
    p = Pipeline(run, options, paths=paths)
    p.build()
    p.rootfs()
    return p


@pytest.fixture(scope="module")
def guest(pipeline):
    with pipeline.boot() as console:
        yield console


@pytest.fixture(scope="session")
def show(pytestconfig):
    """Print numbers people want to see (pause, COW faults, violations) even while pytest captures output."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def _show(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n{text}", flush=True)

    return _show
