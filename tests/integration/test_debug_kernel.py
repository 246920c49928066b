"""The debug kernel's small CI mode: KASAN, lockdep (PROVE_LOCKING, PROVE_RCU) and DEBUG_ATOMIC_SLEEP.

The same checks as `make test-qemu` (the torture dump's consistency included), a short soak and a short
fuzz, on the kernel `--debug-kernel` builds (harness/fragments/debug.config). Any KASAN, lockdep, RCU or
sleep-in-atomic report is a ``BUG:`` or ``WARNING:`` line on the console, which fails the command that
was running. The full modes run by hand: `python -m harness test|soak|fuzz|faults --debug-kernel`.
"""

from __future__ import annotations

import os

import pytest

from harness import dump as dump_mod
from harness import e2e, fuzz, soak
from harness.artifacts import Run
from harness.pipeline import DEFAULT_FRAGMENTS, Options, Pipeline
from harness.settings import Paths

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def debug_pipeline() -> Pipeline:
    paths = Paths.from_env()
    run = Run.create(paths.artifacts, "pytest-debug-kernel")
    p = Pipeline(run, Options(fragments=DEFAULT_FRAGMENTS + ("debug",),
                              accel=os.environ.get("LIVEDUMP_ACCEL", "auto")), paths=paths)
    p.build()
    config = p.run.path("config").read_text()  # the .config the kernel was built with
    for option in ("CONFIG_KASAN=y", "CONFIG_PROVE_LOCKING=y", "CONFIG_PROVE_RCU=y", "CONFIG_DEBUG_ATOMIC_SLEEP=y",
                   "CONFIG_LIVEDUMP=y"):
        assert option in config.splitlines(), f"the debug kernel lacks {option}"
    p.rootfs()
    return p


def test_end_to_end_on_the_debug_kernel(debug_pipeline):
    verdict = e2e.dump_and_validate(debug_pipeline)
    assert verdict.failed == []


# KASAN's quarantine holds freed objects back, up to 1/32 of RAM: MemFree drifts by that much by design.
KASAN_QUARANTINE_TOLERANCE = 0.04


# A KASAN and lockdep kernel writes several times more pages in a dump's first seconds than the plain one
# (4133 COW faults in one cycle, against 600-1300): with the vmalloc and module areas protected too (0047),
# the default reserve (1/64 of RAM plus the stop's copies, 3474 pages at 512 MiB) once filled up and 50 pages
# failed. Failed pages are listed, not torn; what this test looks for is warnings and leaks, so it sizes the
# reserve for a debug kernel (dump_mod.ample_reserve_pages: 1/16 of RAM) rather than count on the default's
# margin.


def test_a_short_soak_on_the_debug_kernel(debug_pipeline, show):
    result = soak.soak(debug_pipeline, 2, read_every=1, tolerance=KASAN_QUARANTINE_TOLERANCE,
                       reserve_pages=dump_mod.ample_reserve_pages(debug_pipeline.options.memory))
    show(f"debug kernel soak: {result.cycles_done} cycles, pauses {result.pause_ns} ns")
    assert result.problems == []
    assert result.cycles_done == 2 and result.torture


def test_a_short_fuzz_on_the_debug_kernel(debug_pipeline, show):
    result = fuzz.fuzz(debug_pipeline, 4000, seed=2)
    show(f"debug kernel fuzz: {result.calls} calls, {result.unexpected} undocumented")
    assert result.problems == [], result.unexpected_lines
