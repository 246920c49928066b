"""``harness bench`` once, on the smallest size: bench.json has every documented field, with real numbers."""

from __future__ import annotations

import json

import pytest

from harness import benchreport, cli

pytestmark = pytest.mark.qemu

# Numbers every run must measure, the series' STATUS costs included (kernel-patches 0009).
POSITIVE = ("memory_mib", "pause_ns", "qemu_dump_pause_ns", "dump_mib_s", "dd_mib_s", "workload_idle_per_s",
            "directmap4k_kb_before", "smp", "reserve_pages", "reserve_used_max", "table_pages",
            "protected_entries", "fault_p50_ns", "fault_p99_ns", "fault_p999_ns", "fault_max_ns",
            # The controls: dd beside the same workload, and test_livedump's latency probe (0039) in each phase.
            "dd_loaded_mib_s", "probe_dump_p999_ns", "probe_dump_max_ns", "probe_idle_p999_ns",
            "probe_idle_max_ns", "probe_dd_p999_ns", "probe_dd_max_ns",
            # The controls without alias protection (0047) and without user protection (0049): their pause,
            # beside each measured dump.
            "pause_no_aliases_ns", "pause_no_user_ns")


def test_bench_at_512m(pipeline, tmp_path, show):
    pipeline.build()  # the session's kernel; the bench's own Pipeline finds it cached
    status = cli.main(["bench", "--memory", "512M", "--repeat", "1", "--warmup", "1", "--artifacts", str(tmp_path),
                       "--accel", pipeline.accel(pipeline.build().bzimage).accel])
    run = (tmp_path / "latest").resolve()
    rows = json.loads((run / "bench.json").read_text())
    show(benchreport.table([benchreport.BenchRow(**row) for row in rows]))
    assert status == 0, (run / "result.json").read_text()
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(benchreport.ROW_FIELDS)
    assert row["error"] is None
    assert row["memory_mib"] == 512 and row["accel"] in ("kvm", "tcg") and row["smp"] == pipeline.options.smp
    for key in POSITIVE:
        assert isinstance(row[key], int | float) and row[key] > 0, (key, row[key])
    assert row["pause_ns_all"] == [row["pause_ns"]]
    assert row["pause_no_aliases_ns_all"] == [row["pause_no_aliases_ns"]]  # one control per measured dump
    assert row["pause_no_user_ns_all"] == [row["pause_no_user_ns"]]
    assert row["qemu_dump_pause_ns_all"] == [row["qemu_dump_pause_ns"]]  # --repeat 1: one QEMU dump
    # The warm-up dump ran in the same boot and is reported apart, not in the median.
    assert row["warmup"] == 1 and len(row["warmup_pause_ns_all"]) == 1 and row["warmup_pause_ns_all"][0] > 0
    assert len(row["dumps"]) == 1
    assert row["cow_faults"] is not None and row["cow_faults"] >= 0
    assert row["failed_pages"] is not None and row["failed_pages"] >= 0
    for size in ("4k", "2m", "1g"):
        for when in ("before", "during", "after"):
            value = row[f"directmap{size}_kb_{when}"]
            assert value is None or value >= 0
    assert row["directmap4k_kb_during"] is not None
    # The ratio needs a sweep longer than the workload window; when it has one it is a real rate.
    if row["workload_dump_per_s"] is not None:
        assert row["workload_dump_per_s"] > 0 and row["workload_ratio"] > 0
    if row["workload_dd_per_s"] is not None:
        assert row["workload_dd_per_s"] > 0 and row["workload_dd_ratio"] > 0
    # The probe ran about 1000 times a second through each window of a second or more.
    for phase in ("dump", "idle", "dd"):
        assert sum(row[f"probe_{phase}_ns_log2"]) >= 100, (phase, row[f"probe_{phase}_ns_log2"])
    assert row["tables_used"] is not None and row["tables_used"] >= 0
    assert row["fault_p50_ns"] <= row["fault_p99_ns"] <= row["fault_p999_ns"]
    # The default reserve, page table pool included, stays within 1/32 of RAM.
    assert (row["reserve_pages"] + row["table_pages"]) * 4096 * 32 <= row["memory_mib"] << 20
    assert not list(run.glob("bench-512M/*.img")) and not list(run.glob("**/qemu-dump.elf"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (run / "bench.png").is_file()
