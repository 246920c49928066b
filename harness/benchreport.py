"""The results of ``python -m harness bench``: one row per guest RAM size, as JSON, a table and a plot.

Field names carry their units. A number the kernel or the guest did not
report is None (JSON null), never a guess.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class BenchRow:
    memory: str                     # as given on the command line, e.g. "512M"
    memory_mib: int
    accel: str
    smp: int
    repeat: int
    warmup: int = 0                 # dumps before the measured ones in the same boot, not in any median
    kernel_release: str | None = None
    bzimage_sha256: str | None = None  # of the bzImage this size booted (the build can change between sizes)
    exclude: str | None = None       # page classes the dumps left out (livedump --exclude); None: before classes
    pause_ns: int | None = None     # median over the dumps
    pause_ns_all: list[int] = field(default_factory=list)
    qemu_dump_pause_ns: int | None = None  # median over --repeat runs
    qemu_dump_pause_ns_all: list[int] = field(default_factory=list)
    dump_mib_s: float | None = None  # median; bytes_written / sweep time (SWEEP ioctl returned -> state done)
    dump_mib_s_all: list[float] = field(default_factory=list)
    sweep_ns_all: list[int] = field(default_factory=list)
    bytes_written: int | None = None
    dd_mib_s: float | None = None    # median over --repeat runs
    dd_mib_s_all: list[float] = field(default_factory=list)
    dd_bytes: int | None = None
    workload: str = "fork+exec+wait of a static no-op (ldbench fork)"
    workload_window_ms: int = 0
    workload_idle_per_s: float | None = None  # median over the idle windows, one before each dump
    workload_idle_per_s_all: list[float] = field(default_factory=list)
    workload_dump_per_s: float | None = None  # median over the dumps whose sweep outlasted the window
    workload_dump_per_s_all: list[float | None] = field(default_factory=list)
    workload_ratio: float | None = None
    # The control: the same workload and poller beside a plain dd of the same size (no dump), same boot.
    workload_dd_per_s: float | None = None   # median over the runs dd outlasted
    workload_dd_per_s_all: list[float | None] = field(default_factory=list)
    workload_dd_ratio: float | None = None   # against workload_idle_per_s
    dd_loaded_mib_s: float | None = None     # dd's own rate with the workload beside it, median
    dd_loaded_mib_s_all: list[float] = field(default_factory=list)
    directmap4k_kb_before: int | None = None
    directmap4k_kb_during: int | None = None
    directmap4k_kb_after: int | None = None
    directmap2m_kb_before: int | None = None
    directmap2m_kb_during: int | None = None
    directmap2m_kb_after: int | None = None
    directmap1g_kb_before: int | None = None
    directmap1g_kb_during: int | None = None
    directmap1g_kb_after: int | None = None
    cow_faults: int | None = None          # median over the dumps
    failed_pages: int | None = None        # max over the dumps
    reserve_pages: int | None = None       # last dump's
    reserve_used_max: int | None = None    # max over the dumps
    table_pages: int | None = None         # last dump's
    tables_used: int | None = None         # max over the dumps
    protected_entries: int | None = None   # median over the dumps
    # The control for the vmalloc and module areas' protection: as many dumps again with
    # livedump.protect_aliases=0, each right after a measured one in the same boot. None: a kernel without
    # the parameter.
    pause_no_aliases_ns: int | None = None  # median
    pause_no_aliases_ns_all: list[int] = field(default_factory=list)
    workload_no_aliases_per_s_all: list[float | None] = field(default_factory=list)
    workload_no_aliases_ratio: float | None = None  # against workload_idle_per_s
    cow_faults_no_aliases: int | None = None  # median
    # The same for user mappings' protection (livedump.protect_user=0).
    pause_no_user_ns: int | None = None  # median
    pause_no_user_ns_all: list[int] = field(default_factory=list)
    workload_no_user_per_s_all: list[float | None] = field(default_factory=list)
    workload_no_user_ratio: float | None = None  # against workload_idle_per_s
    cow_faults_no_user: int | None = None  # median
    # lib/test_livedump.c's latency probe (a write fault's work on pages no dump protects, interrupts off):
    # the floor the machine puts under the fault latency. Beside the dumps (after START to the end of the
    # sweep), in the idle windows and beside the dd control; percentiles as for the faults.
    probe_dump_ns_log2: list[int] | None = None
    probe_dump_p99_ns: int | None = None
    probe_dump_p999_ns: int | None = None
    probe_dump_max_ns: int | None = None
    probe_idle_ns_log2: list[int] | None = None
    probe_idle_p99_ns: int | None = None
    probe_idle_p999_ns: int | None = None
    probe_idle_max_ns: int | None = None
    probe_dd_ns_log2: list[int] | None = None
    probe_dd_p99_ns: int | None = None
    probe_dd_p999_ns: int | None = None
    probe_dd_max_ns: int | None = None
    fault_p50_ns: int | None = None        # from the summed log2 histograms: upper bucket bound
    fault_p99_ns: int | None = None
    fault_p999_ns: int | None = None
    fault_max_ns: int | None = None
    fault_ns_log2: list[int] | None = None  # summed over the dumps
    warmup_pause_ns_all: list[int] = field(default_factory=list)  # the warm-up dumps' own numbers, apart
    warmup_fault_max_ns_all: list[int | None] = field(default_factory=list)
    dumps: list[dict[str, str]] = field(default_factory=list)  # each dump's final `livedump status`
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Fields every bench.json row has (the documented shape; tests check it).
ROW_FIELDS = tuple(f.name for f in fields(BenchRow))


def write_json(rows: list[BenchRow], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    tmp.replace(path)


def _fmt(value: float | int | None, scale: float = 1.0, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value / scale:.{digits}f}"


COLUMNS = ("RAM", "pause ms", "pause ms no-alias/no-user", "QEMU pause ms", "dump MiB/s", "dd MiB/s",
           "workload dump/no-alias/no-user/dd", "COW faults", "failed",
           "fault p99/p99.9/max us", "probe p99.9 us dump/dd/idle", "DirectMap4k kB before/during/after")


def table(rows: list[BenchRow]) -> str:
    """A plain-text table, one line per size."""
    lines = []
    for r in rows:
        if r.error:
            lines.append((r.memory, f"error: {r.error}") + ("",) * (len(COLUMNS) - 2))
            continue
        lines.append((
            r.memory,
            _fmt(r.pause_ns, 1e6, 3),
            "/".join(_fmt(v, 1e6, 3) for v in (r.pause_no_aliases_ns, r.pause_no_user_ns)),
            _fmt(r.qemu_dump_pause_ns, 1e6, 0),
            _fmt(r.dump_mib_s, 1, 1),
            _fmt(r.dd_mib_s, 1, 1),
            "/".join("-" if v is None else f"{v:.2f}x"
                     for v in (r.workload_ratio, r.workload_no_aliases_ratio, r.workload_no_user_ratio,
                               r.workload_dd_ratio)),
            _fmt(r.cow_faults),
            _fmt(r.failed_pages),
            "/".join(_fmt(v, 1e3, 1) for v in (r.fault_p99_ns, r.fault_p999_ns, r.fault_max_ns)),
            "/".join(_fmt(v, 1e3, 1) for v in (r.probe_dump_p999_ns, r.probe_dd_p999_ns, r.probe_idle_p999_ns)),
            "/".join(_fmt(v) for v in (r.directmap4k_kb_before, r.directmap4k_kb_during, r.directmap4k_kb_after)),
        ))
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    out += ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def plot(rows: list[BenchRow], path: Path) -> str | None:
    """bench.png: pause vs RAM (log axis), throughput vs RAM. Returns why not, or None when written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); no bench.png"
    good = [r for r in rows if r.error is None]
    if not good:
        return "no size was measured; no bench.png"
    mib = [r.memory_mib for r in good]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    def series(ax, values, label, marker):
        points = [(x, y) for x, y in zip(mib, values, strict=True) if y is not None]
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker=marker, label=label)

    series(left, [r.pause_ns / 1e6 if r.pause_ns else None for r in good], "livedump (stop_machine)", "o")
    series(left, [r.qemu_dump_pause_ns / 1e6 if r.qemu_dump_pause_ns else None for r in good],
           "QEMU dump-guest-memory", "s")
    left.set_yscale("log")
    left.set_xscale("log", base=2)
    left.set_xlabel("guest RAM")
    left.set_ylabel("guest paused (ms)")
    left.set_title("pause vs RAM")
    left.legend()
    series(right, [r.dump_mib_s for r in good], "livedump sweep", "o")
    series(right, [r.dd_mib_s for r in good], "dd oflag=direct", "s")
    right.set_xscale("log", base=2)
    right.set_xlabel("guest RAM")
    right.set_ylabel("MiB/s")
    right.set_title("throughput vs RAM")
    right.set_ylim(bottom=0)
    right.legend(loc="lower right")
    for ax in (left, right):
        ax.set_xticks(mib, [r.memory for r in good])
        ax.minorticks_off()
    accel = ",".join(sorted({r.accel for r in good}))
    fig.suptitle(f"livedump bench ({accel}, smp {good[0].smp})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
