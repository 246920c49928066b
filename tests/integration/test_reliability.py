"""The reliability suite's small CI modes: soak, NMI storm, a target whose writes fail, the ioctl fuzzer.

The full modes run by hand: `python -m harness soak [--nmi-storm]`, `python -m harness fuzz`,
`python -m harness faults` (README "Reliability suite").
"""

from __future__ import annotations

import pytest

from harness import faults, fuzz, soak

pytestmark = pytest.mark.qemu

SOAK_CYCLES = 4


def test_soak_small(pipeline, show):
    """A few dump cycles under load: no warning, 0 failed pages, memory and DirectMap back, every dump read."""
    result = soak.soak(pipeline, SOAK_CYCLES, read_every=1, tolerance=0.01)
    show(f"soak: {result.cycles_done} cycles, pauses {result.pause_ns} ns, "
         f"before {result.before}, after {result.after}")
    assert result.problems == []
    assert result.cycles_done == SOAK_CYCLES
    assert result.read_cycles == list(range(1, SOAK_CYCLES + 1))
    assert result.torture, "the kernel has no test_livedump torture load"


def test_nmi_storm_small(pipeline, show):
    """Dumps while every CPU takes NMIs that write the printk buffer: none hangs, the NMIs are counted."""
    result = soak.soak(pipeline, 3, read_every=0, tolerance=0.01, nmi_storm=True)
    show(f"NMI storm: {result.cycles_done} dumps, {result.nmis} NMIs, failed pages {result.failed_pages}")
    assert result.problems == []
    assert result.cycles_done == 3
    assert result.nmis >= 3


def test_targets_that_fail_mid_sweep_end_the_dump_cleanly(pipeline, show):
    """A target that returns EIO from halfway on, one hot-unplugged and one made read-only mid-sweep (0034):
    each dump ends FAILED with its errno, memory is writable and the mappings are back, the host runs on, and
    the next dump succeeds."""
    result = faults.faults(pipeline, ("half",), ("unplug", "setro"))
    for outcome in result.outcomes:
        show(f"fault {outcome.fault}: error {outcome.status.get('error')}, "
             f"{outcome.status.get('pages_dumped')}/{outcome.status.get('pages_total')} pages dumped")
    assert [o.fault.split("@")[0] for o in result.outcomes] == ["eio", "unplug", "setro"]
    assert [o.problems for o in result.outcomes] == [[], [], []]
    assert result.outcomes[0].status.get("error") == "-5"  # EIO, what blkdebug returns
    assert result.outcomes[2].status.get("error") == "-30"  # EROFS
    assert result.ok


FUZZ_CALLS = 20000


def test_ioctl_fuzzer_small(pipeline, show):
    """Random and hostile ioctls from 2 processes x 2 threads: only documented errnos, no oops, not wedged."""
    result = fuzz.fuzz(pipeline, FUZZ_CALLS, seed=1)
    show(f"ioctl fuzzer: {result.calls} calls, {result.unexpected} undocumented, "
         f"dump afterwards {'good' if result.final_dump_ok else 'failed'}")
    assert result.problems == [], result.unexpected_lines
    assert result.calls >= FUZZ_CALLS - (fuzz.FUZZ_WORKERS - 1)
