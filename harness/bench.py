"""``python -m harness bench``: livedump measured at several guest RAM sizes.

A benchmark, never a test: it reports numbers and fails only when it cannot
measure (a guest that does not boot, a dump that fails). One boot per size,
with a scratch disk, a dump target and an identical disk for dd. In that boot:

1. /proc/meminfo's DirectMap lines;
2. ``--warmup`` dumps (default 1) whose numbers are kept apart: under TCG the
   first dump of a boot pays for translating the code the stop and the fault
   path run (2-3 ms of pause and the slowest faults), which hardware does not;
   then ``--repeat`` times: the idle rate of the workload (``ldbench fork``: fork,
   exec a static no-op, reap) for a short window next to the same 50 ms
   status poller that runs during a dump, then a dump (init, start+sweep,
   status, release):
   the pause from ``livedump status``; the sweep time on the guest's
   CLOCK_MONOTONIC from the return of ``livedump sweep`` to the first 50 ms
   poll that shows the state no longer sweeping (throughput = bytes_written /
   that time); DirectMap while sweeping; the workload's rate during the sweep
   (counted only when the sweep outlasted the window); every status key,
   new kernel counters included when the kernel reports them;
3. DirectMap after the last release; ``--repeat`` times ``dd if=/dev/zero
   oflag=direct`` of as many MiB as the dump wrote onto the identical disk
   (median; the first run writes a fresh sparse host file, like the first dump);
   then, as a control, ``--repeat`` times the same dd with the workload and the
   poller running beside it as they do beside a dump: the workload's rate during
   a plain write of the same size (``workload_dd_ratio``, counted only when dd
   outlasted the window) and dd's rate under that load. What the target's
   writes alone cost the workload (on a TCG guest, mostly host CPU the
   emulated disk takes from the vCPUs) is in the dump's ratio too;
4. ``--repeat`` times QEMU's own ``dump-guest-memory`` through QMP, timed on
   the host (median): QEMU stops the VM for the whole dump, so its wall time
   is the guest's pause; it depends on how fast the host takes the file.

Through each idle window, each sweep (from the end of START, so as not to
delay the stop) and each dd control, test_livedump's latency probe (kernel
patch 0039; absent, its fields are null) times a write fault's work on pages
no dump protects, with interrupts off: the floor the machine puts under the
fault latency. Under TCG the slowest faults are the host's, and the probe
shows how slow the host alone makes the same few microseconds.

Results: bench.json (one object per size, units in the field names), a
printed table and bench.png in the run directory.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import benchstats as stats
from . import consistency
from . import dump as dump_mod
from .arch import DEFAULT as DEFAULT_ARCH
from .arch import Arch
from .benchreport import BenchRow, plot, table, write_json
from .console import GuestConsole
from .errors import GuestCrashed, GuestTimeout, HarnessError
from .pipeline import Pipeline, say
from .qmp import QmpClient

DEFAULT_SIZES = "512M,1G,2G,4G"
POLL_MS = 50
DD_TARGET = dump_mod.GUEST_DISK_NAMES[2]  # dump_disks(extra=("dd",)): /dev/vdc, as large as /dev/vdb
STATUS = "livedump-ioctl status"
# lib/test_livedump.c's latency probe: a write fault's work, timed with interrupts off, on pages no dump
# protects. Its histogram beside a dump is the floor the host puts under livedump's fault latency.
PROBE_DIR = "/sys/module/test_livedump/parameters"
PROBE_ON = f"echo 1 > {PROBE_DIR}/probe"
PROBE_READ = (f"echo \"probe: hist=$(cat {PROBE_DIR}/probe_ns_log2) max=$(cat {PROBE_DIR}/probe_ns_max)\"; "
              f"echo 0 > {PROBE_DIR}/probe")


class BenchError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("bench", message, detail=detail)


@dataclass
class ProbeReading:
    """The latency probe's log2 histogram (ns) and slowest time over one window."""
    hist: list[int]
    max_ns: int


def parse_probe(text: str) -> ProbeReading | None:
    """The ``probe: hist=... max=...`` line PROBE_READ prints; None if absent or unreadable."""
    f = fields_after(text, "probe: ")
    try:
        return ProbeReading(hist=stats.parse_histogram(f["hist"]), max_ns=int(f["max"]))
    except (KeyError, ValueError):
        return None


def has_probe(console: GuestConsole) -> bool:
    return console.run(f"test -w {PROBE_DIR}/probe").status == 0


def probe_on(console: GuestConsole) -> None:
    console.run(PROBE_ON, check=True)


def probe_read(console: GuestConsole) -> ProbeReading:
    out = console.run(PROBE_READ, check=True).output
    reading = parse_probe(out)
    if reading is None:
        raise BenchError("the latency probe printed no histogram", detail=out)
    return reading


@dataclass
class DumpSample:
    status: dict[str, str]        # `livedump status` once the sweep ended, before release
    sweep_ns: int
    workload_ops: int
    workload_ns: int
    during: dict[str, int | None]  # DirectMap while sweeping
    during_state: str | None = None  # the state read just before that DirectMap
    probe: ProbeReading | None = None  # the latency probe from the end of START to the end of the sweep


def fields_after(text: str, prefix: str) -> dict[str, str]:
    """``key=value`` words of the first output line starting with prefix."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return dict(w.split("=", 1) for w in line[len(prefix):].split() if "=" in w)
    return {}


def meminfo(console: GuestConsole, arch: Arch = DEFAULT_ARCH) -> dict[str, int | None]:
    """How RAM is mapped now: the kB of 4K, 2M and 1G leaves (x86's DirectMap lines, arm64's linear map)."""
    return stats.parse_directmap(console.run(arch.linear_map_cmd, check=True).output)


def idle_workload(console: GuestConsole, window_ms: int) -> tuple[int, int]:
    """(ops, ns) of the workload with the same status poller as during a dump, polling the idle device."""
    out = console.run(f"ldbench poll {POLL_MS} {window_ms} state=idle {STATUS} >/dev/null & "
                      f"ldbench fork {window_ms} | sed 's/^/workload: /'; wait", check=True).output
    w = fields_after(out, "workload: ")
    if "ops" not in w:
        raise BenchError("the idle workload printed no rate", detail=out)
    return int(w["ops"]), int(w["elapsed_ns"])


def sweep_script(window_ms: int, arch: Arch = DEFAULT_ARCH) -> str:
    """Guest shell: sweep, then in parallel the poller timing it and the workload; labelled output lines."""
    return ("livedump sweep || exit $?; "
            f"ldbench poll {POLL_MS} 0 state=sweeping {STATUS} >/tmp/bench-sweep & "
            f"echo \"during: $({STATUS} | grep '^state=')\"; "
            f"{arch.linear_map_cmd}; "
            f"ldbench fork {window_ms} >/tmp/bench-workload & "
            f"wait; sed 's/^/sweep: /' /tmp/bench-sweep; sed 's/^/workload: /' /tmp/bench-workload")


# What a bench dump leaves out, by default: nothing. Every page of RAM is swept, so that the throughput and
# the dd control are of all of RAM at every size, as before page classes; --exclude default measures a dump
# as users take it.
DEFAULT_EXCLUDE = dump_mod.EVERY_PAGE


def one_dump(console: GuestConsole, reason: str, window_ms: int, timeout: float, *,
             probe: bool = False, exclude: str = DEFAULT_EXCLUDE, arch: Arch = DEFAULT_ARCH) -> DumpSample:
    console.run(f"livedump init {dump_mod.DUMP_TARGET} --reason {shlex.quote(reason)} --exclude {exclude}",
                check=True)
    # The probe starts after the stop: its interrupts-off sections must not delay the CPUs entering it.
    probe_cmds = (f"{PROBE_ON}; ", f"; {PROBE_READ}") if probe else ("", "")
    try:
        # start and sweep in one command, as `livedump dump` does: no console round trip in between.
        out = console.run(f"livedump start || exit $?; {probe_cmds[0]}{sweep_script(window_ms, arch)}{probe_cmds[1]}",
                          timeout=timeout, check=True).output
        status = dump_mod.status(console)
    except (GuestTimeout, GuestCrashed):
        raise  # the console no longer answers: a release through it would only time out and hide why
    except BaseException:
        console.run("livedump release")
        raise
    console.run("livedump release", check=True)
    if status.get("state") != "done":
        raise BenchError(f"{reason}: the dump ended in state {status.get('state')!r}: "
                         f"{status.get('error_text', status.get('error', ''))}", detail=out)
    sweep, work = fields_after(out, "sweep: "), fields_after(out, "workload: ")
    if "elapsed_ns" not in sweep or "ops" not in work:
        raise BenchError(f"{reason}: no sweep time or workload rate in the guest's output", detail=out)
    reading = parse_probe(out) if probe else None
    if probe and reading is None:
        raise BenchError(f"{reason}: the latency probe printed no histogram", detail=out)
    return DumpSample(status=status, sweep_ns=int(sweep["elapsed_ns"]), workload_ops=int(work["ops"]),
                      workload_ns=int(work["elapsed_ns"]), during=stats.parse_directmap(out),
                      during_state=fields_after(out, "during: ").get("state"), probe=reading)


def dd_rate(console: GuestConsole, mib: int, timeout: float) -> float | None:
    out = console.run(f"ldbench time dd if=/dev/zero of={DD_TARGET} bs=1M count={mib} oflag=direct 2>/dev/null",
                      timeout=timeout, check=True).output
    line = next((ln for ln in out.splitlines() if ln.startswith("status=")), "")
    timed = dict(w.split("=", 1) for w in line.split() if "=" in w)
    if "elapsed_ns" not in timed:
        raise BenchError("dd printed no time", detail=out)
    return stats.mib_per_s(mib << 20, int(timed["elapsed_ns"]))


@dataclass
class LoadedDd:
    """dd onto the identical disk with the workload and the status poller beside it, as beside a dump."""
    dd_ns: int
    workload_ops: int
    workload_ns: int


def dd_with_workload(console: GuestConsole, mib: int, window_ms: int, timeout: float) -> LoadedDd:
    """The control for a dump's workload ratio: the same load beside a plain write of the same size."""
    out = console.run(f"ldbench time dd if=/dev/zero of={DD_TARGET} bs=1M count={mib} oflag=direct "
                      f"2>/dev/null >/tmp/bench-dd & "
                      f"ldbench poll {POLL_MS} {window_ms} state=idle {STATUS} >/dev/null & "
                      f"ldbench fork {window_ms} >/tmp/bench-workload; "
                      f"wait; sed 's/^/dd: /' /tmp/bench-dd; sed 's/^/workload: /' /tmp/bench-workload",
                      timeout=timeout, check=True).output
    dd, work = fields_after(out, "dd: "), fields_after(out, "workload: ")
    if "elapsed_ns" not in dd or "ops" not in work:
        raise BenchError("dd beside the workload printed no time or no rate", detail=out)
    if dd.get("status") != "0":
        raise BenchError(f"dd beside the workload failed (status {dd.get('status')})", detail=out)
    return LoadedDd(dd_ns=int(dd["elapsed_ns"]), workload_ops=int(work["ops"]),
                    workload_ns=int(work["elapsed_ns"]))


def qemu_dump(qmp_socket: Path, out: Path, timeout: float) -> tuple[int, int]:
    """(wall ns, bytes) of QEMU's dump-guest-memory to out; the file is deleted afterwards."""
    try:
        with QmpClient.connect(qmp_socket) as qmp:
            start = time.monotonic_ns()
            qmp.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{out}", "detach": False},
                        timeout=timeout)
            elapsed = time.monotonic_ns() - start
        size = out.stat().st_size if out.exists() else 0
    finally:
        out.unlink(missing_ok=True)
    return elapsed, size


def fault_max_ns(status: dict[str, str]) -> int | None:
    """The slowest write fault of one dump. The key is specified as fault_ns_max; kernels that print it as
    fault_max_ns are read too."""
    return stats.int_field(status, "fault_ns_max" if "fault_ns_max" in status else "fault_max_ns")


def covered_rates(row: BenchRow, runs: list[tuple[int, int, int]], label: str, writer: str) -> list[float | None]:
    """The workload's rate in each (ops, workload ns, writer ns) run, None where the writer (the sweep, dd) ended
    before the workload window: a rate partly measured without it would flatter the ratio. A note for each."""
    rates: list[float | None] = []
    for i, (ops, workload_ns, writer_ns) in enumerate(runs, 1):
        if workload_ns <= writer_ns:
            rates.append(stats.rate_per_s(ops, workload_ns))
            continue
        rates.append(None)
        row.notes.append(f"{label} {i}: {writer} ({writer_ns / 1e6:.0f} ms) ended before the workload window "
                         f"({workload_ns / 1e6:.0f} ms): its rate is not counted")
    return rates


def status_ints(statuses: list[dict[str, str]], key: str) -> list[int]:
    """The numbers the dumps' statuses have for key, those without it left out."""
    return [v for v in (stats.int_field(s, key) for s in statuses) if v is not None]


def summarise(row: BenchRow, samples: list[DumpSample], idles: list[tuple[int, int]]) -> None:
    """Fill row's numbers from the dumps of one size and the idle windows before them (pure: no guest)."""
    statuses = [s.status for s in samples]
    row.dumps = statuses
    row.pause_ns_all = status_ints(statuses, "pause_ns")
    row.pause_ns = stats.median_int(row.pause_ns_all)
    row.sweep_ns_all = [s.sweep_ns for s in samples]
    written = [stats.int_field(s.status, "bytes_written") or 0 for s in samples]
    row.bytes_written = max(written) if written else None
    row.dump_mib_s_all = [r for r in (stats.mib_per_s(b, s.sweep_ns) for b, s in zip(written, samples, strict=True))
                          if r is not None]
    row.dump_mib_s = stats.median(row.dump_mib_s_all)
    row.workload_idle_per_s_all = [r for r in (stats.rate_per_s(*idle) for idle in idles) if r is not None]
    row.workload_idle_per_s = stats.median(row.workload_idle_per_s_all)
    row.workload_dump_per_s_all = covered_rates(row, [(s.workload_ops, s.workload_ns, s.sweep_ns) for s in samples],
                                                "dump", "the sweep")
    row.workload_dump_per_s = stats.median(r for r in row.workload_dump_per_s_all if r is not None)
    row.workload_ratio = stats.ratio(row.workload_dump_per_s, row.workload_idle_per_s)
    if samples:
        if samples[0].during_state != "sweeping":
            row.notes.append(f"DirectMap 'during' was read in state {samples[0].during_state!r}, not sweeping")
        for size in ("4k", "2m", "1g"):
            setattr(row, f"directmap{size}_kb_during", samples[0].during[size])

    def each(key: str) -> list[int | None]:
        return [stats.int_field(s, key) for s in statuses]

    def present(key: str) -> list[int]:
        return [v for v in each(key) if v is not None]

    row.cow_faults = stats.median_int(present("cow_faults"))
    row.failed_pages = stats.max_or_none(each("failed_pages"))
    row.reserve_pages = (present("reserve_pages") or [None])[-1]
    row.reserve_used_max = stats.max_or_none(each("reserve_used_max"))
    row.table_pages = (present("table_pages") or [None])[-1]
    row.tables_used = stats.max_or_none(each("tables_used"))
    row.protected_entries = stats.median_int(present("protected_entries"))
    histograms = [stats.parse_histogram(s["fault_ns_log2"]) for s in statuses if "fault_ns_log2" in s]
    if histograms:
        summed = stats.add_histograms(histograms)
        row.fault_ns_log2 = summed
        row.fault_p50_ns = stats.histogram_percentile(summed, 0.50)
        row.fault_p99_ns = stats.histogram_percentile(summed, 0.99)
        row.fault_p999_ns = stats.histogram_percentile(summed, 0.999)
    row.fault_max_ns = stats.max_or_none(fault_max_ns(s) for s in statuses)


@dataclass(frozen=True)
class Control:
    """Control dumps with one of livedump's protections turned off, one right after each measured dump in the
    same boot: what that protection costs. Their numbers are the row's ``*_{name}`` fields."""

    name: str  # field suffix: no_aliases, no_user
    parameter: str  # the module parameter turned off for them
    what: str  # for messages: "alias protection"
    mappings: str  # what it protects (consistency.UNPROTECTED_*): no control where the architecture never does


CONTROLS = (Control("no_aliases", dump_mod.PROTECT_ALIASES, "alias protection", consistency.UNPROTECTED_ALIASES),
            Control("no_user", dump_mod.PROTECT_USER, "user protection", consistency.UNPROTECTED_USER))


def controls_for(arch: Arch) -> tuple[list[Control], list[str]]:
    """The controls that mean something on ``arch``, and a note for each that does not: a protection the
    architecture never has would make a control dump the same dump as the measured one."""
    kept = [c for c in CONTROLS if c.mappings not in arch.unprotected_mappings]
    notes = [f"{arch.name} never has {c.what}: no control dumps, the *_{c.name} fields are null"
             for c in CONTROLS if c not in kept]
    return kept, notes


def summarise_control(row: BenchRow, control: Control, samples: list[DumpSample]) -> None:
    """The control dumps without ``control``'s protection, beside the measured ones (pure: no guest). Call after
    summarise(), whose idle windows are the reference."""
    statuses = [s.status for s in samples]
    pauses = status_ints(statuses, "pause_ns")
    rates = covered_rates(row, [(s.workload_ops, s.workload_ns, s.sweep_ns) for s in samples],
                          f"dump without {control.what}", "the sweep")
    setattr(row, f"pause_{control.name}_ns_all", pauses)
    setattr(row, f"pause_{control.name}_ns", stats.median_int(pauses))
    setattr(row, f"workload_{control.name}_per_s_all", rates)
    setattr(row, f"workload_{control.name}_ratio",
            stats.ratio(stats.median(r for r in rates if r is not None), row.workload_idle_per_s))
    setattr(row, f"cow_faults_{control.name}", stats.median_int(status_ints(statuses, "cow_faults")))


def summarise_loaded_dd(row: BenchRow, runs: list[LoadedDd], mib: int) -> None:
    """The dd control's numbers; needs row.workload_idle_per_s (pure: no guest)."""
    row.dd_loaded_mib_s_all = [r for r in (stats.mib_per_s(mib << 20, run.dd_ns) for run in runs) if r is not None]
    row.dd_loaded_mib_s = stats.median(row.dd_loaded_mib_s_all)
    row.workload_dd_per_s_all = covered_rates(row, [(r.workload_ops, r.workload_ns, r.dd_ns) for r in runs],
                                              "dd control", "dd")
    row.workload_dd_per_s = stats.median(r for r in row.workload_dd_per_s_all if r is not None)
    row.workload_dd_ratio = stats.ratio(row.workload_dd_per_s, row.workload_idle_per_s)


def summarise_probe(row: BenchRow, dump: list[ProbeReading | None], idle: list[ProbeReading],
                    dd: list[ProbeReading]) -> None:
    """The latency probe's percentiles beside the dumps, in the idle windows and beside dd (pure: no guest)."""
    for phase, readings in (("dump", [r for r in dump if r is not None]), ("idle", idle), ("dd", dd)):
        if not readings:
            continue
        summed = stats.add_histograms(r.hist for r in readings)
        setattr(row, f"probe_{phase}_ns_log2", summed)
        setattr(row, f"probe_{phase}_p99_ns", stats.histogram_percentile(summed, 0.99))
        setattr(row, f"probe_{phase}_p999_ns", stats.histogram_percentile(summed, 0.999))
        setattr(row, f"probe_{phase}_max_ns", max(r.max_ns for r in readings))


def summarise_warmup(row: BenchRow, statuses: list[dict[str, str]]) -> None:
    """The warm-up dumps' pause and slowest fault, kept out of every median (pure: no guest)."""
    row.warmup = len(statuses)
    row.warmup_pause_ns_all = status_ints(statuses, "pause_ns")
    row.warmup_fault_max_ns_all = [fault_max_ns(s) for s in statuses]


def measure(p: Pipeline, size: str, repeat: int, window_ms: int, warmup: int = 0,
            exclude: str = DEFAULT_EXCLUDE) -> BenchRow:
    """One boot at this RAM size: everything the module docstring lists; the dumps leave out ``exclude``."""
    nbytes = dump_mod.memory_bytes(size)
    mib = nbytes >> 20
    accel = p.accel(p.build().image).accel
    kernel = p.build()
    row = BenchRow(memory=size, memory_mib=mib, accel=accel, smp=p.options.smp, repeat=repeat,
                   workload_window_ms=window_ms, kernel_release=kernel.release,
                   bzimage_sha256=hashlib.sha256(kernel.bzimage.read_bytes()).hexdigest()[:16], exclude=exclude)
    # TCG writes a few tens of MiB/s at worst: give each long step time in proportion to the RAM.
    long_timeout = max(600.0, mib * 1.0)
    disk_dir = p.run.path(f"bench-{size}")
    disks = dump_mod.dump_disks(disk_dir, nbytes, extra=("dd",))
    say(f"booting {size} guest ({accel}, smp {p.options.smp})...")
    try:
        with p.boot(disks, tag=size) as console:
            if console.run("command -v livedump && command -v ldbench").status != 0:
                raise BenchError("the guest has no livedump tool or ldbench helper: is the series applied?")
            before = meminfo(console, p.arch)
            probe = p.arch.latency_probe and has_probe(console)
            if not p.arch.latency_probe:
                row.notes.append(f"no latency probe on {p.arch.name} (it times with the TSC): probe fields are null")
            elif not probe:
                row.notes.append("no latency probe in this kernel (CONFIG_TEST_LIVEDUMP): probe fields are null")
            idle_probes: list[ProbeReading] = []
            dd_probes: list[ProbeReading] = []
            warm = []
            for i in range(1, warmup + 1):
                say(f"warm-up dump {i}/{warmup} at {size} (not measured)...")
                warm.append(one_dump(console, f"harness bench {size} warm-up {i}/{warmup}", window_ms,
                                     long_timeout, exclude=exclude, arch=p.arch).status)
                say(f"  pause {warm[-1].get('pause_ns')} ns (warm-up)")
            summarise_warmup(row, warm)
            samples, idles = [], []
            controls: dict[Control, list[DumpSample]] = {}
            applicable, skipped = controls_for(p.arch)
            row.notes.extend(skipped)
            for control in applicable:
                if console.run(f"test -w {control.parameter}").status == 0:
                    controls[control] = []
                else:
                    row.notes.append(f"no {control.parameter} in this kernel: the *_{control.name} fields are null")
            for i in range(1, repeat + 1):
                # An idle window right before each dump: the host's own load drifts (other QEMUs, TCG).
                say(f"idle workload {i}/{repeat} at {size} ({window_ms} ms)...")
                if probe:
                    probe_on(console)
                idles.append(idle_workload(console, window_ms))
                if probe:
                    idle_probes.append(probe_read(console))
                say(f"dump {i}/{repeat} at {size}...")
                samples.append(one_dump(console, f"harness bench {size} {i}/{repeat}", window_ms, long_timeout,
                                        probe=probe, exclude=exclude, arch=p.arch))
                s = samples[-1]
                say(f"  pause {s.status.get('pause_ns')} ns, sweep {s.sweep_ns / 1e9:.2f} s, "
                    f"COW faults {s.status.get('cow_faults')}, workload {s.workload_ops} ops in the sweep")
                for control, taken in controls.items():
                    # Right after, in the same conditions: what that protection costs.
                    say(f"control dump {i}/{repeat} at {size} without {control.what}...")
                    dump_mod.set_parameter(console, control.parameter, False)
                    try:
                        taken.append(one_dump(console, f"harness bench {size} {i}/{repeat} {control.name}",
                                              window_ms, long_timeout, exclude=exclude, arch=p.arch))
                    finally:
                        dump_mod.set_parameter(console, control.parameter, True)
                    say(f"  pause {taken[-1].status.get('pause_ns')} ns without {control.what}")
            after = meminfo(console, p.arch)
            summarise(row, samples, idles)
            for control, taken in controls.items():
                summarise_control(row, control, taken)
            for k in ("4k", "2m", "1g"):
                setattr(row, f"directmap{k}_kb_before", before[k])
                setattr(row, f"directmap{k}_kb_after", after[k])
            dd_mib = max(1, math.ceil((row.bytes_written or nbytes) / (1 << 20)))
            # As often as the dumps: the first write to a sparse host file is slower than the next ones,
            # and the dumps' median mixes the first dump with later ones the same way.
            for i in range(1, repeat + 1):
                say(f"dd {i}/{repeat} of {dd_mib} MiB onto {DD_TARGET} at {size}...")
                rate = dd_rate(console, dd_mib, long_timeout)
                if rate is not None:
                    row.dd_mib_s_all.append(rate)
            row.dd_mib_s = stats.median(row.dd_mib_s_all)
            row.dd_bytes = dd_mib << 20
            loaded = []
            for i in range(1, repeat + 1):
                say(f"control {i}/{repeat}: the workload beside dd of {dd_mib} MiB at {size}...")
                if probe:
                    probe_on(console)
                loaded.append(dd_with_workload(console, dd_mib, window_ms, long_timeout))
                if probe:
                    dd_probes.append(probe_read(console))
            summarise_loaded_dd(row, loaded, dd_mib)
            summarise_probe(row, [s.probe for s in samples], idle_probes, dd_probes)
            # As often as the dumps: how fast the host takes QEMU's file varies from run to run (page cache).
            for i in range(1, repeat + 1):
                say(f"QEMU dump-guest-memory {i}/{repeat} at {size}...")
                elapsed, qemu_bytes = qemu_dump(p.run.path("qmp.sock"), disk_dir / "qemu-dump.elf", long_timeout)
                row.qemu_dump_pause_ns_all.append(elapsed)
                row.notes.append(f"QEMU dump-guest-memory {i}/{repeat} wrote {qemu_bytes} bytes (deleted)")
                console.run("true", check=True)  # the guest runs again after QEMU's dump
            row.qemu_dump_pause_ns = stats.median_int(row.qemu_dump_pause_ns_all)
    finally:
        for disk in disks:
            disk.path.unlink(missing_ok=True)
    return row


def command(p: Pipeline, args) -> int:
    sizes = stats.parse_memory_list(args.memory)
    if not sizes:
        raise BenchError("--memory names no size")
    for size in sizes:
        dump_mod.memory_bytes(size)  # bad sizes fail before any boot
    if args.repeat < 1:
        raise BenchError("--repeat must be at least 1")
    if args.warmup < 0:
        raise BenchError("--warmup cannot be negative")
    kernel = p.build()
    if not (kernel.headers / "linux" / "livedump.h").is_file():
        raise BenchError("this kernel has no livedump (series or fragment missing)")
    base = p.options
    rows: list[BenchRow] = []
    out = p.run.path("bench.json")
    for size in sizes:
        p.options = replace(base, memory=size)
        try:
            with p.run.stage(f"bench {size}"):
                rows.append(measure(p, size, args.repeat, args.window_ms, args.warmup, args.exclude))
        except HarnessError as e:
            say(f"{size}: {e.stage}: {e.message}")
            if e.detail:
                say(e.detail.rstrip()[-2000:])
            rows.append(BenchRow(memory=size, memory_mib=dump_mod.memory_bytes(size) >> 20,
                                 accel=p.accel(kernel.image).accel, smp=base.smp, repeat=args.repeat,
                                 error=f"{e.stage}: {e.message}"))
        finally:
            p.options = base
        write_json(rows, out)
    print(table(rows))
    for r in rows:
        for note in r.notes:
            say(f"{r.memory}: {note}")
    if len({r.bzimage_sha256 for r in rows if r.bzimage_sha256}) > 1:
        say("WARNING: the kernel was rebuilt during the bench: the sizes ran different bzImages (bzimage_sha256)")
    why_not = plot(rows, p.run.path("bench.png"))
    say(why_not or f"wrote {out} and {p.run.path('bench.png')}")
    p.run.facts["bench"] = {"json": str(out), "sizes": sizes, "repeat": args.repeat, "warmup": args.warmup,
                            "errors": {r.memory: r.error for r in rows if r.error}}
    failed = [r.memory for r in rows if r.error]
    if failed:
        raise BenchError(f"could not measure {', '.join(failed)} (see above); the other sizes are in {out}")
    return 0
