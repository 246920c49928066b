"""The livedump trace events (kernel patch 0042) follow a dump, read from tracefs as trace-cmd would.

One guest under the e2e load: with events/livedump enabled, one dump. The trace must hold one
livedump_snapshot whose pause is the one STATUS reported, livedump_sweep events (every 4 MiB) up to every
page, livedump_cow events that only grow, and one livedump_done with error 0 and STATUS's counters. Before
the dump (events enabled, nothing dumped yet) the trace holds none of them: they come from the dump.
"""

from __future__ import annotations

import re

import pytest

from harness import dump as dump_mod

pytestmark = pytest.mark.qemu

TRACEFS = "/sys/kernel/tracing"
EVENTS = ("livedump_snapshot", "livedump_cow", "livedump_sweep", "livedump_done")
EVENT_LINE = re.compile(r"\s(livedump_\w+): (.*)$")


def events(trace: str) -> list[tuple[str, dict[str, int]]]:
    """(event, fields) for each livedump event line of a tracefs ``trace`` file."""
    out = []
    for line in trace.splitlines():
        m = EVENT_LINE.search(line)
        if m:
            out.append((m.group(1), {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", m.group(2))}))
    return out


@pytest.fixture(scope="module")
def traced(pipeline):
    disks = dump_mod.dump_disks(pipeline.run.directory / "trace", dump_mod.memory_bytes(pipeline.options.memory))
    disks[0].path.parent.mkdir(parents=True, exist_ok=True)
    with pipeline.boot(disks, tag="trace") as console:
        mounted = console.run(f"mount -t tracefs nodev {TRACEFS} 2>/dev/null; test -d {TRACEFS}/events/livedump")
        if mounted.status != 0:
            pytest.fail(f"no {TRACEFS}/events/livedump: CONFIG_TRACING or patch 0042 missing: {mounted.output}")
        console.run(f"echo 4096 > {TRACEFS}/buffer_size_kb; echo > {TRACEFS}/trace; "
                    f"echo 1 > {TRACEFS}/events/livedump/enable", check=True)
        dump_mod.start_load(console)
        before = console.run(f"cat {TRACEFS}/trace", check=True).output
        taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="traced")
        trace = console.run(f"cat {TRACEFS}/trace", check=True, timeout=300).output
        console.run(f"echo 0 > {TRACEFS}/events/livedump/enable", check=True)
        dump_mod.stop_load(console)
    return {"before": events(before), "taken": taken, "events": events(trace)}


def test_no_event_before_the_dump(traced):
    assert traced["before"] == []


def test_every_event_fires(traced):
    assert traced["taken"].result.status == 0, traced["taken"].result.output
    seen = {name for name, _ in traced["events"]}
    assert seen == set(EVENTS), seen


def test_snapshot_and_done_agree_with_status(traced):
    status = traced["taken"].status
    snapshots = [f for name, f in traced["events"] if name == "livedump_snapshot"]
    dones = [f for name, f in traced["events"] if name == "livedump_done"]
    assert len(snapshots) == 1 and len(dones) == 1, (snapshots, dones)
    assert snapshots[0]["pause_ns"] == int(status["pause_ns"])
    assert snapshots[0]["protected_entries"] == int(status["protected_entries"])
    assert dones[0]["error"] == 0
    assert dones[0]["pages_total"] == int(status["pages_total"])
    assert dones[0]["cow_faults"] == int(status["cow_faults"])
    assert dones[0]["failed"] == int(status["failed_pages"])
    # The snapshot comes first, the end last.
    names = [name for name, _ in traced["events"]]
    assert names[0] == "livedump_snapshot" and names[-1] == "livedump_done"


def test_sweep_and_cow_events_track_progress(traced):
    sweeps = [f for name, f in traced["events"] if name == "livedump_sweep"]
    assert [s["pages_dumped"] for s in sweeps] == sorted(s["pages_dumped"] for s in sweeps)
    assert sweeps[-1]["pages_dumped"] == sweeps[-1]["pages_total"] == int(traced["taken"].status["pages_total"])
    cows = [(f["cow_faults"], f["failed"]) for name, f in traced["events"] if name == "livedump_cow"]
    assert cows == sorted(cows) and len(set(cows)) == len(cows)  # emitted only when a count moved
    assert 0 < cows[-1][0] <= int(traced["taken"].status["cow_faults"])
