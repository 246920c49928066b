"""The pure parts of ``harness bench``: meminfo, statistics, histograms, the bench.json row."""

from __future__ import annotations

import json

import pytest

from harness import bench, benchreport
from harness import benchstats as stats
from harness.dump import parse_status

MEMINFO = """MemTotal:         483112 kB
MemFree:          401234 kB
Hugepagesize:       2048 kB
DirectMap4k:       14208 kB
DirectMap2M:      510000 kB
DirectMap1G:           0 kB
"""


def test_directmap_from_meminfo():
    assert stats.parse_directmap(MEMINFO) == {"4k": 14208, "2m": 510000, "1g": 0}


# arch/arm64/mm/ptdump.c's format (6.1): ranges with their size and the level of their leaves; holes have no
# attributes; a read-only block maps the kernel's text alias. Nothing outside the linear map may count.
ARM64_PTDUMP = """---[ Linear Mapping start ]---
0xffff000000000000-0xffff000000200000           2M PTE       RW NX SHD AF            UXN    MEM/NORMAL
0xffff000000200000-0xffff000000a00000           8M PMD       ro NX SHD AF        BLK UXN    MEM/NORMAL
0xffff000000a00000-0xffff00001f800000         494M PTE       RW NX SHD AF            UXN    MEM/NORMAL
0xffff00001f800000-0xffff000020000000        8192K PTE       ro NX SHD AF            UXN    MEM/NORMAL
0xffff000020000000-0xffff000040000000         512M PMD
0xffff000040000000-0xffff008000000000         511G PUD
---[ Linear Mapping end ]---
---[ Modules start ]---
0xffff800000000000-0xffff800000200000           2M PTE       RW NX SHD AF            UXN    MEM/NORMAL
---[ Modules end ]---
"""


def test_arm64_linear_map_granularity_from_the_page_table_dump(tmp_path):
    """The guest command arm64 uses instead of DirectMap, run by busybox's awk as in the guest."""
    import shutil
    import subprocess

    from harness import arch

    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox (busybox-static, from make setup) is needed to run the guest's awk")
    dump = tmp_path / "kernel_page_tables"
    dump.write_text(ARM64_PTDUMP)
    cmd = arch.ARM64.linear_map_cmd.replace("/sys/kernel/debug/kernel_page_tables", str(dump))
    out = subprocess.run([busybox, "sh", "-c", cmd.replace("awk ", f"{busybox} awk ", 1)], capture_output=True,
                         text=True, check=True).stdout
    assert stats.parse_directmap(out) == {"4k": (2 + 494 + 8) * 1024, "2m": 8 * 1024, "1g": 0}
    assert arch.X86_64.linear_map_cmd == "grep DirectMap /proc/meminfo"


def test_controls_only_where_the_architecture_has_the_protection():
    from harness import arch

    kept, notes = bench.controls_for(arch.X86_64)
    assert [c.name for c in kept] == ["no_aliases", "no_user"] and notes == []
    kept, notes = bench.controls_for(arch.ARM64)
    assert kept == [] and len(notes) == 2 and all("arm64 never has" in n for n in notes)


def test_directmap_line_the_kernel_does_not_print_is_none():
    text = "\n".join(line for line in MEMINFO.splitlines() if "1G" not in line)
    assert stats.parse_directmap(text) == {"4k": 14208, "2m": 510000, "1g": None}
    assert stats.parse_directmap("") == {"4k": None, "2m": None, "1g": None}


def test_memory_list():
    assert stats.parse_memory_list("512M,1G, 2g,,1G") == ["512M", "1G", "2G"]


def test_median():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([]) is None
    assert stats.median_int([10, 11]) == 10  # round half to even
    assert stats.median_int([]) is None


def test_int_field_absent_or_not_a_number_is_none():
    status = {"cow_faults": "12", "state": "done", "error": "-5"}
    assert stats.int_field(status, "cow_faults") == 12
    assert stats.int_field(status, "error") == -5
    assert stats.int_field(status, "state") is None
    assert stats.int_field(status, "reserve_pages") is None


def test_histogram_percentiles_are_upper_bucket_bounds():
    # 90 faults in [2^10, 2^11) ns, 9 in [2^12, 2^13), 1 in [2^20, 2^21).
    counts = [0] * 21
    counts[10], counts[12], counts[20] = 90, 9, 1
    assert stats.histogram_percentile(counts, 0.5) == 2048
    assert stats.histogram_percentile(counts, 0.9) == 2048
    assert stats.histogram_percentile(counts, 0.99) == 8192
    assert stats.histogram_percentile(counts, 0.999) == 1 << 21
    assert stats.histogram_percentile(counts, 1.0) == 1 << 21


def test_histogram_edge_cases():
    assert stats.histogram_percentile([], 0.5) is None
    assert stats.histogram_percentile([0, 0], 0.99) is None
    assert stats.histogram_percentile([1], 0.5) == 2  # bucket 0 is [1, 2) ns
    assert stats.parse_histogram("0,1,2") == [0, 1, 2]
    assert stats.parse_histogram("") == []
    assert stats.add_histograms([[1, 2], [0, 0, 5], []]) == [1, 2, 5]


def test_rates():
    assert stats.mib_per_s(100 << 20, 2_000_000_000) == 50.0
    assert stats.mib_per_s(0, 1) is None
    assert stats.rate_per_s(30, 1_500_000_000) == 20.0
    assert stats.ratio(1.0, 4.0) == 0.25
    assert stats.ratio(None, 4.0) is None and stats.ratio(1.0, 0.0) is None


def test_status_keys_may_hold_digits():
    text = "state=done\nfault_ns_log2=0,3,1\nfault_ns_max=900\nnoise line\n"
    assert parse_status(text) == {"state": "done", "fault_ns_log2": "0,3,1", "fault_ns_max": "900"}


def test_fields_after_a_label():
    out = "during: state=sweeping\nDirectMap4k: 1 kB\nsweep: polls=7 elapsed_ns=350\nworkload: ops=5 elapsed_ns=9"
    assert bench.fields_after(out, "sweep: ") == {"polls": "7", "elapsed_ns": "350"}
    assert bench.fields_after(out, "during: ") == {"state": "sweeping"}
    assert bench.fields_after(out, "nothing: ") == {}


def sample(pause: int, cow: int, *, sweep_ns: int = 4_000_000_000, extra: dict[str, str] | None = None,
           workload_ns: int = 2_000_000_000) -> bench.DumpSample:
    status = {"state": "done", "pause_ns": str(pause), "cow_faults": str(cow), "failed_pages": "0",
              "bytes_written": str(512 << 20), **(extra or {})}
    return bench.DumpSample(status=status, sweep_ns=sweep_ns, workload_ops=100, workload_ns=workload_ns,
                            during={"4k": 20000, "2m": 500000, "1g": None}, during_state="sweeping")


def new_row() -> benchreport.BenchRow:
    return benchreport.BenchRow(memory="512M", memory_mib=512, accel="tcg", smp=2, repeat=3, workload_window_ms=2000)


def test_summary_of_an_old_kernel_leaves_new_keys_null():
    row = new_row()
    bench.summarise(row, [sample(3000, 10), sample(1000, 30), sample(2000, 20)],
                    idles=[(220, 2_000_000_000), (180, 2_000_000_000), (200, 2_000_000_000)])
    assert row.pause_ns == 2000 and row.pause_ns_all == [3000, 1000, 2000]
    assert row.cow_faults == 20 and row.failed_pages == 0
    assert row.dump_mib_s == 128.0  # 512 MiB in 4 s
    assert row.workload_idle_per_s == 100.0 and row.workload_dump_per_s == 50.0 and row.workload_ratio == 0.5
    assert row.workload_idle_per_s_all == [110.0, 90.0, 100.0]
    assert row.directmap4k_kb_during == 20000 and row.directmap1g_kb_during is None
    for key in ("reserve_pages", "reserve_used_max", "table_pages", "tables_used", "protected_entries",
                "fault_p50_ns", "fault_p99_ns", "fault_p999_ns", "fault_max_ns"):
        assert getattr(row, key) is None, key
    assert row.notes == []


def test_summary_with_the_new_kernel_keys():
    new = {"reserve_pages": "16384", "reserve_used_max": "40", "table_pages": "64", "tables_used": "3",
           "protected_entries": "900", "fault_ns_log2": "0,0,0,0,0,0,0,0,0,0,4",
           "fault_ns_max": "1900"}
    row = new_row()
    bench.summarise(row, [sample(1000, 4, extra=new),
                          sample(1000, 4, extra={**new, "reserve_used_max": "55", "fault_ns_max": "2000"})],
                    idles=[(200, 2_000_000_000)])
    assert (row.reserve_pages, row.reserve_used_max, row.table_pages, row.tables_used) == (16384, 55, 64, 3)
    assert row.protected_entries == 900
    assert row.fault_ns_log2 == [0] * 10 + [8]
    assert row.fault_p50_ns == row.fault_p99_ns == row.fault_p999_ns == 2048
    assert row.fault_max_ns == 2000


def test_fault_max_under_either_name():
    row = new_row()
    bench.summarise(row, [sample(1, 1, extra={"fault_max_ns": "1895478"}), sample(1, 1, extra={"fault_ns_max": "7"})],
                    idles=[(200, 2_000_000_000)])
    assert row.fault_max_ns == 1895478


def test_a_sweep_shorter_than_the_window_is_not_counted():
    row = new_row()
    bench.summarise(row, [sample(1000, 1, sweep_ns=1_000_000_000)], idles=[(200, 2_000_000_000)])
    assert row.workload_dump_per_s_all == [None]
    assert row.workload_dump_per_s is None and row.workload_ratio is None
    assert "not counted" in row.notes[0]


def test_bench_json_shape(tmp_path):
    row = new_row()
    bench.summarise(row, [sample(1000, 1)], idles=[(200, 2_000_000_000)])
    out = tmp_path / "bench.json"
    benchreport.write_json([row, benchreport.BenchRow(memory="4G", memory_mib=4096, accel="tcg", smp=2, repeat=3,
                                                      error="qemu: boot timeout")], out)
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == 2
    documented = {"memory_mib", "pause_ns", "pause_ns_all", "qemu_dump_pause_ns", "dump_mib_s", "dd_mib_s",
                  "workload_ratio", "workload_idle_per_s", "workload_dump_per_s", "cow_faults", "failed_pages",
                  "reserve_pages", "reserve_used_max", "table_pages", "tables_used", "fault_p50_ns", "fault_p99_ns",
                  "fault_p999_ns", "fault_max_ns", "accel", "smp"}
    documented |= {f"directmap{s}_kb_{w}" for s in ("4k", "2m", "1g") for w in ("before", "during", "after")}
    for obj in data:
        assert documented <= set(obj)
        assert set(obj) == set(benchreport.ROW_FIELDS)
    assert data[0]["pause_ns"] == 1000 and data[0]["reserve_pages"] is None
    assert data[1]["error"] == "qemu: boot timeout" and data[1]["pause_ns"] is None


def test_table_has_one_line_per_size():
    row = new_row()
    bench.summarise(row, [sample(1_500_000, 1)], idles=[(200, 2_000_000_000)])
    row.qemu_dump_pause_ns, row.dd_mib_s = 2_000_000_000, 300.0
    text = benchreport.table([row, benchreport.BenchRow(memory="1G", memory_mib=1024, accel="tcg", smp=2,
                                                        repeat=1, error="bench: dump failed")])
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[1].split()[:6] == ["512M", "1.500", "-/-", "2000", "128.0", "300.0"]
    assert "error: bench: dump failed" in lines[2]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = []
    for mib, pause in ((512, 1_000_000), (1024, 2_000_000)):
        row = new_row()
        row.memory_mib, row.pause_ns, row.qemu_dump_pause_ns = mib, pause, pause * 1000
        row.dump_mib_s, row.dd_mib_s = 100.0, 200.0
        rows.append(row)
    out = tmp_path / "bench.png"
    assert benchreport.plot(rows, out) is None
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert benchreport.plot([], tmp_path / "none.png") is not None


class FakeConsole:
    """Answers guest commands from a list of (substring, status, output), in order of first match."""

    def __init__(self, answers: list[tuple[str, int, str]]):
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float | None = None, check: bool = False):
        from harness.console import CommandResult
        from harness.errors import HarnessError

        self.commands.append(command)
        for needle, status, output in self.answers:
            if needle in command:
                if check and status:
                    raise HarnessError("guest", f"`{command}` exited {status}", detail=output)
                return CommandResult(command, status, output)
        raise AssertionError(f"unexpected guest command {command!r}")


SWEEP_OUTPUT = """during: state=sweeping
DirectMap4k:       30000 kB
DirectMap2M:      494000 kB
DirectMap1G:           0 kB
sweep: polls=80 elapsed_ns=4000000000 needle_seen_last=0
workload: ops=150 elapsed_ns=2000000000"""
DONE = "state=done\npages_total=131072\ncow_faults=600\nfailed_pages=0\npause_ns=15000000\nbytes_written=536870912"


def test_one_dump_reads_the_guest_output_and_releases():
    console = FakeConsole([("livedump init", 0, ""), ("livedump start", 0, SWEEP_OUTPUT),
                           ("livedump status", 0, DONE), ("livedump release", 0, "")])
    s = bench.one_dump(console, "harness bench 512M 1/1", 2000, 600)
    assert (s.sweep_ns, s.workload_ops, s.workload_ns, s.during_state) == (4_000_000_000, 150, 2_000_000_000,
                                                                            "sweeping")
    assert s.during == {"4k": 30000, "2m": 494000, "1g": 0}
    assert s.status["pause_ns"] == "15000000"
    assert "'harness bench 512M 1/1'" in console.commands[0]
    assert console.commands[0].endswith("--exclude none")  # every page of RAM, unless told otherwise
    assert console.commands[-1] == "livedump release"


def test_a_failed_dump_is_released_and_reported():
    failed = DONE.replace("state=done", "state=failed") + "\nerror=-28\nerror_text=No space left on device"
    console = FakeConsole([("livedump init", 0, ""), ("livedump start", 0, SWEEP_OUTPUT),
                           ("livedump status", 0, failed), ("livedump release", 0, "")])
    with pytest.raises(bench.BenchError, match="state 'failed': No space left on device"):
        bench.one_dump(console, "d", 2000, 600)
    assert console.commands[-1] == "livedump release"


def test_a_hung_console_is_not_asked_to_release():
    from harness.errors import GuestTimeout

    class Hung(FakeConsole):
        def run(self, command, **kw):
            if "livedump start" in command:
                self.commands.append(command)
                raise GuestTimeout("command", 600, "tail", waiting_for=command)
            return super().run(command, **kw)

    console = Hung([("livedump init", 0, "")])
    with pytest.raises(GuestTimeout):
        bench.one_dump(console, "d", 2000, 600)
    assert not any("release" in c for c in console.commands)


def test_idle_workload_and_dd():
    console = FakeConsole([("ldbench fork", 0, "workload: ops=250 elapsed_ns=2000000000"),
                           ("ldbench time dd", 0, "status=0 elapsed_ns=4000000000")])
    assert bench.idle_workload(console, 2000) == (250, 2_000_000_000)
    assert bench.dd_rate(console, 512, 600) == 128.0
    assert "of=/dev/vdc bs=1M count=512 oflag=direct" in console.commands[-1]


def test_qemu_dump_times_the_command_and_deletes_the_file(tmp_path):
    import tempfile
    from pathlib import Path

    from tests.unit.test_qmp import FakeQemu

    out = tmp_path / "qemu-dump.elf"

    def handler(message):
        if message["execute"] == "dump-guest-memory":
            assert message["arguments"] == {"paging": False, "protocol": f"file:{out}", "detach": False}
            out.write_bytes(b"\x7fELF" + bytes(1000))
        return [{"return": {}}]

    with tempfile.TemporaryDirectory(prefix="qmp-") as d:
        fake = FakeQemu(Path(d) / "qmp.sock", handler)
        elapsed, size = bench.qemu_dump(Path(d) / "qmp.sock", out, 5)
        fake.close()
    assert elapsed > 0 and size == 1004
    assert not out.exists()


def test_warmup_dumps_are_kept_apart():
    row = new_row()
    bench.summarise_warmup(row, [{"pause_ns": "2500000", "fault_ns_max": "400000"},
                                 {"pause_ns": "900000", "fault_max_ns": "90000"}, {"state": "done"}])
    assert row.warmup == 3
    assert row.warmup_pause_ns_all == [2500000, 900000]
    assert row.warmup_fault_max_ns_all == [400000, 90000, None]
    bench.summarise(row, [sample(1000, 1)], idles=[(200, 2_000_000_000)])
    assert row.pause_ns_all == [1000] and row.pause_ns == 1000


def test_no_warmup_leaves_the_warmup_fields_empty():
    row = new_row()
    bench.summarise_warmup(row, [])
    assert (row.warmup, row.warmup_pause_ns_all, row.warmup_fault_max_ns_all) == (0, [], [])


LOADED_DD = "dd: status=0 elapsed_ns=4000000000\nworkload: ops=120 elapsed_ns=2000000000"


def test_dd_with_the_workload_beside_it():
    console = FakeConsole([("ldbench time dd", 0, LOADED_DD)])
    run = bench.dd_with_workload(console, 512, 2000, 600)
    assert (run.dd_ns, run.workload_ops, run.workload_ns) == (4_000_000_000, 120, 2_000_000_000)
    # The same workload and poller as beside a dump, on the dd disk, in one command.
    command = console.commands[0]
    assert "of=/dev/vdc bs=1M count=512 oflag=direct" in command
    assert "ldbench fork 2000" in command and "ldbench poll 50 2000" in command


def test_dd_control_that_printed_nothing_or_failed_is_an_error():
    with pytest.raises(bench.BenchError, match="no time or no rate"):
        bench.dd_with_workload(FakeConsole([("ldbench time dd", 0, "workload: ops=1 elapsed_ns=1")]), 8, 2000, 60)
    failed = LOADED_DD.replace("status=0", "status=1")
    with pytest.raises(bench.BenchError, match="failed"):
        bench.dd_with_workload(FakeConsole([("ldbench time dd", 0, failed)]), 8, 2000, 60)


def test_dd_control_ratio_against_the_idle_rate():
    row = new_row()
    bench.summarise(row, [sample(1000, 1)], idles=[(200, 2_000_000_000)])
    runs = [bench.LoadedDd(dd_ns=4_000_000_000, workload_ops=80, workload_ns=2_000_000_000),
            bench.LoadedDd(dd_ns=1_000_000_000, workload_ops=190, workload_ns=2_000_000_000),
            bench.LoadedDd(dd_ns=2_000_000_000, workload_ops=60, workload_ns=2_000_000_000)]
    bench.summarise_loaded_dd(row, runs, 512)
    # dd shorter than the window (the second) is not counted: median of 40/s and 30/s against 100/s idle.
    assert row.workload_dd_per_s_all == [40.0, None, 30.0]
    assert row.workload_dd_per_s == 35.0 and row.workload_dd_ratio == 0.35
    assert row.dd_loaded_mib_s_all == [128.0, 512.0, 256.0] and row.dd_loaded_mib_s == 256.0
    assert any("dd control 2" in n and "not counted" in n for n in row.notes)
    assert "0.50x/-/-/0.35x" in benchreport.table([row])


def test_the_control_dumps_are_summarised_apart():
    row = new_row()
    no_aliases, no_user = bench.CONTROLS
    bench.summarise(row, [sample(1_500_000, 10), sample(1_700_000, 12)], idles=[(200, 2_000_000_000)])
    bench.summarise_control(row, no_aliases, [sample(1_100_000, 4), sample(1_300_000, 6), sample(900_000, 5)])
    bench.summarise_control(row, no_user, [sample(1_400_000, 7)])
    # Their own medians; the measured dumps' numbers are untouched.
    assert row.pause_no_aliases_ns_all == [1_100_000, 1_300_000, 900_000] and row.pause_no_aliases_ns == 1_100_000
    assert row.pause_no_user_ns_all == [1_400_000] and row.pause_no_user_ns == 1_400_000
    assert row.pause_ns == 1_600_000 and row.cow_faults_no_aliases == 5 and row.cow_faults_no_user == 7
    assert row.workload_no_aliases_ratio == row.workload_no_user_ratio == row.workload_ratio == 0.5
    line = benchreport.table([row]).splitlines()[1].split()
    assert line[1:3] == ["1.600", "1.100/1.400"] and "0.50x/0.50x/0.50x/-" in line
    # No control dumps (a kernel without the parameter): nulls, not zeros.
    empty = new_row()
    bench.summarise_control(empty, no_user, [])
    assert empty.pause_no_user_ns is None and empty.workload_no_user_ratio is None
    assert "-/-" in benchreport.table([empty]).splitlines()[1].split()[2]


def test_probe_line_parsed_and_missing_one_is_none():
    out = "noise\nprobe: hist=0,0,3,5 max=7000\n"
    assert bench.parse_probe(out) == bench.ProbeReading(hist=[0, 0, 3, 5], max_ns=7000)
    assert bench.parse_probe("probe: hist= max=") is None
    assert bench.parse_probe("nothing") is None


def test_a_dump_with_the_probe_starts_it_after_the_stop_and_reads_it():
    out = SWEEP_OUTPUT + "\nprobe: hist=0,0,0,0,0,0,0,0,0,0,0,0,0,9,1 max=20000"
    console = FakeConsole([("livedump init", 0, ""), ("livedump start", 0, out),
                           ("livedump status", 0, DONE), ("livedump release", 0, "")])
    s = bench.one_dump(console, "d", 2000, 600, probe=True)
    assert s.probe == bench.ProbeReading(hist=[0] * 13 + [9, 1], max_ns=20000)
    command = console.commands[1]
    assert command.index("livedump start") < command.index(bench.PROBE_ON) < command.index("livedump sweep")
    assert command.rstrip().endswith(bench.PROBE_READ)


def test_a_dump_whose_probe_printed_nothing_is_an_error():
    console = FakeConsole([("livedump init", 0, ""), ("livedump start", 0, SWEEP_OUTPUT),
                           ("livedump status", 0, DONE), ("livedump release", 0, "")])
    with pytest.raises(bench.BenchError, match="probe printed no histogram"):
        bench.one_dump(console, "d", 2000, 600, probe=True)
    assert console.commands[-1] == "livedump release"


def test_probe_percentiles_per_phase():
    row = new_row()
    slow = bench.ProbeReading(hist=[0] * 13 + [998] + [0] * 3 + [2], max_ns=200_000)
    fast = bench.ProbeReading(hist=[0] * 13 + [1000], max_ns=15_000)
    bench.summarise_probe(row, [slow, None], idle=[fast], dd=[])
    assert row.probe_dump_ns_log2 == slow.hist
    assert row.probe_dump_p99_ns == 16384 and row.probe_dump_p999_ns == 262144
    assert row.probe_dump_max_ns == 200_000
    assert row.probe_idle_p999_ns == 16384 and row.probe_idle_max_ns == 15_000
    # No dd readings: nothing is made up.
    assert row.probe_dd_ns_log2 is None and row.probe_dd_p999_ns is None and row.probe_dd_max_ns is None
