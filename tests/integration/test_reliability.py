"""The reliability suite's small CI modes: soak, NMI storm, a target whose writes fail, the ioctl fuzzer.

The full modes run by hand: `python -m harness soak [--nmi-storm]`, `ldfuzz 100000 /dev/vdb SEED` in a guest.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from harness import bench, soak
from harness import dump as dump_mod

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


# 200 MiB into the bad target: the sweep is well under way when its writes start failing.
BAD_SECTOR = (200 << 20) // 512


def test_a_target_that_fails_writes_ends_the_dump_cleanly(pipeline):
    """The target returns EIO mid-sweep: FAILED with the errno, memory writable and mappings back, the host
    runs on, and the next dump to a good target succeeds."""
    disks = dump_mod.dump_disks(pipeline.run.path("faults"), dump_mod.memory_bytes(pipeline.options.memory),
                                extra=("bad",))
    disks = disks[:-1] + (replace(disks[-1], fail_writes_at_sector=BAD_SECTOR),)
    bad_target = dump_mod.GUEST_DISK_NAMES[len(disks) - 1]
    with pipeline.boot(disks, tag="faults") as console:
        dump_mod.start_load(console)
        before = bench.meminfo(console)
        failed = dump_mod.dump(console, bad_target, reason="failing target")
        after_failure = bench.meminfo(console)
        state_after = dump_mod.status(console)["state"]
        good = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="after a failing target")
        dump_mod.stop_load(console)
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    assert failed.result.status == 1, failed.result.output
    assert "dump failed: Input/output error" in failed.result.output
    assert (failed.status.get("state"), failed.status.get("error")) == ("failed", "-5"), failed.status
    assert 0 < int(failed.status["pages_dumped"]) < int(failed.status["pages_total"]), failed.status
    assert state_after == "idle"
    assert after_failure == before
    assert good.result.status == 0, good.result.output
    assert good.status.get("failed_pages") == "0", good.status


FUZZ_CALLS = 20000


def test_ioctl_fuzzer_small(pipeline, show):
    """Random and hostile ioctls from 2 processes x 2 threads: only documented errnos, no oops, not wedged."""
    disks = dump_mod.dump_disks(pipeline.run.path("fuzz"), dump_mod.memory_bytes(pipeline.options.memory))
    with pipeline.boot(disks, tag="fuzz") as console:
        fuzzed = console.run(f"ldfuzz {FUZZ_CALLS} {dump_mod.DUMP_TARGET} 1", timeout=3600)
        # A dump the fuzzer set up with LIVEDUMP_INIT_KEEP may be left: release it, then a dump must work.
        console.run("livedump release 2>/dev/null; true", check=True)
        final = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="after the fuzzer")
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    show(f"ioctl fuzzer: {' '.join(line for line in fuzzed.output.splitlines() if '=' in line)}")
    assert fuzzed.status == 0, fuzzed.output[-3000:]
    calls = sum(int(c) for c in re.findall(r"calls=(\d+)", fuzzed.output))
    assert calls >= FUZZ_CALLS - 4, fuzzed.output[-3000:]
    assert final.result.status == 0, final.result.output
