"""``python -m harness soak``: many dumps in one boot, and the host ends as it began.

One boot under the e2e load and the ``test_livedump`` torture load. Before the
first INIT and after the last release (caches dropped both times, the loads
still running): MemFree, Slab and VmallocUsed must be back within
``--tolerance`` (a fraction of RAM, default 1 %) and the DirectMap lines must
be exactly equal. Every cycle is a whole ``livedump dump`` between two
markers; it must exit 0 with 0 failed pages, and the console must show no
``WARNING:``/``BUG:``/oops (the console raises on those). A sample of the
dumps is read back with drgn (``--read-every N``: the first, the last and
every Nth; each check reads the disk image, so only the dump just taken can
be read): the release, marker A in the printk buffer and marker B not.

``--nmi-storm``: the torture load's hrtimer runs every ``NMI_STORM_PERIOD_US``
instead of every millisecond, and each tick sends an NMI whose handler
writes a pair of counters in kmalloc'ed memory, so that NMI handlers write
protected slab memory while dumps are taken, also while their own CPU is
copying a page. No dump may hang (a timeout fails the run); pages an NMI had
to give up are counted and reported, not failed; the NMIs handled are
counted by the module.

Writes soak.json in the run directory; exit 0 when every check held.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from . import benchstats as stats
from . import dump as dump_mod
from . import validate
from .console import GuestConsole
from .errors import HarnessError
from .pipeline import Pipeline, say

MEMINFO_KEYS = ("MemFree", "Slab", "VmallocUsed", "DirectMap4k", "DirectMap2M", "DirectMap1G")


class SoakError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("soak", message, detail=detail)


def parse_meminfo(text: str) -> dict[str, int]:
    """The MEMINFO_KEYS lines of /proc/meminfo, in kB (a missing DirectMap1G is simply absent)."""
    values = stats.meminfo_kb(text)
    return {key: values[key] for key in MEMINFO_KEYS if key in values}


def settled_meminfo(console: GuestConsole) -> dict[str, int]:
    """/proc/meminfo after dropping clean caches, so that page cache churn does not count as a leak."""
    text = console.run("sync; echo 3 > /proc/sys/vm/drop_caches; cat /proc/meminfo", check=True).output
    return parse_meminfo(text)


def drift_problems(before: dict[str, int], after: dict[str, int], ram_kb: int, tolerance: float) -> list[str]:
    """What did not come back: MemFree down, Slab or VmallocUsed up by more than tolerance x RAM; any DirectMap."""
    slack = int(ram_kb * tolerance)
    problems = []
    for key in ("MemFree", "Slab", "VmallocUsed"):
        if key not in before or key not in after:
            problems.append(f"{key} missing from /proc/meminfo")
            continue
        grew = before[key] - after[key] if key == "MemFree" else after[key] - before[key]
        if grew > slack:
            what = "fell" if key == "MemFree" else "grew"
            problems.append(f"{key} {what} by {grew} kB (from {before[key]} to {after[key]}; "
                            f"tolerance {slack} kB)")
    for key in ("DirectMap4k", "DirectMap2M", "DirectMap1G"):
        if before.get(key) != after.get(key):
            problems.append(f"{key} is {after.get(key)} kB, was {before.get(key)} kB")
    return problems


def dump_read_problems(view: validate.DrgnView, release: str, markers: dump_mod.Markers) -> list[str]:
    """Is this dump of the right kernel, and of one instant between the two markers?"""
    problems = []
    if view.release != release:
        problems.append(f"drgn reads release {view.release!r}, the kernel is {release!r}")
    if markers.before not in view.log:
        problems.append("marker A (before the dump) is not in the printk buffer")
    if markers.after in view.log:
        problems.append("marker B (after the dump) is in the printk buffer")
    return problems


NMI_STORM_PERIOD_US = 20
TORTURE_PERIOD = "/sys/module/test_livedump/parameters/period_us"
TORTURE_NMIS = "/sys/module/test_livedump/parameters/nmis"


def nmi_count(console: GuestConsole) -> int:
    """NMIs the torture load's handler has taken so far."""
    return int(console.run(f"cat {TORTURE_NMIS}", check=True).output.strip().splitlines()[-1])


def cycles_to_read(cycles: int, every: int) -> set[int]:
    """1-based cycles whose dump drgn reads: the first, the last and every ``every``th (0: only those two)."""
    chosen = {1, cycles}
    if every > 0:
        chosen |= set(range(every, cycles + 1, every))
    return {c for c in chosen if 1 <= c <= cycles}


@dataclass
class SoakResult:
    cycles: int
    memory: str
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    pause_ns: list[int] = field(default_factory=list)
    cow_faults: list[int] = field(default_factory=list)
    read_cycles: list[int] = field(default_factory=list)
    torture: bool = False
    nmi_storm: bool = False
    nmis: int = 0                  # NMIs taken during the cycles
    failed_pages: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cycles_done: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.cycles_done == self.cycles


def soak(p: Pipeline, cycles: int, read_every: int, tolerance: float, *, nmi_storm: bool = False,
         reserve_pages: int | None = None) -> SoakResult:
    if cycles < 1:
        raise SoakError("--cycles must be at least 1")
    kernel = p.build()
    if not (kernel.headers / "linux" / "livedump.h").is_file():
        raise SoakError("this kernel has no livedump (series or fragment missing)")
    result = SoakResult(cycles=cycles, memory=p.options.memory, nmi_storm=nmi_storm)
    ram_kb = dump_mod.memory_bytes(p.options.memory) >> 10
    to_read = cycles_to_read(cycles, read_every)
    disks = dump_mod.dump_disks(p.run.path("soak"), dump_mod.memory_bytes(p.options.memory))
    with p.boot(disks, tag="soak") as console:
        dump_mod.start_load(console)
        result.torture = dump_mod.has_torture(console)
        if result.torture:
            dump_mod.torture(console, True)
        result.before = settled_meminfo(console)
        if nmi_storm:
            if not result.torture or console.run(f"test -w {TORTURE_PERIOD}").status != 0:
                raise SoakError("--nmi-storm needs the test_livedump torture load with period_us")
            nmis = nmi_count(console)
            console.run(f"echo {NMI_STORM_PERIOD_US} > {TORTURE_PERIOD}", check=True)
        for cycle in range(1, cycles + 1):
            say(f"soak: cycle {cycle}/{cycles}")
            taken = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET, reason=f"soak {cycle}",
                                               flags=dump_mod.reserve_flag(reserve_pages))
            if taken.result.status != 0:
                result.problems.append(f"cycle {cycle}: livedump dump exited {taken.result.status}: "
                                       f"{taken.result.output.strip()[-500:]}")
                break
            result.failed_pages.append(int(taken.status.get("failed_pages", -1)))
            if result.failed_pages[-1] != 0 and not nmi_storm:
                result.problems.append(f"cycle {cycle}: {taken.status.get('failed_pages')} failed pages")
            result.pause_ns.append(int(taken.status.get("pause_ns", 0)))
            result.cow_faults.append(int(taken.status.get("cow_faults", 0)))
            if cycle in to_read:
                view = validate.read_with_drgn(dump_mod.dump_image(disks), kernel.vmlinux)
                result.problems += [f"cycle {cycle}: {why}"
                                    for why in dump_read_problems(view, kernel.release, taken.markers)]
                result.read_cycles.append(cycle)
            result.cycles_done = cycle
        if nmi_storm:
            console.run(f"echo 1000 > {TORTURE_PERIOD}", check=True)
            result.nmis = nmi_count(console) - nmis
            if result.nmis < cycles:
                result.problems.append(f"the NMI storm delivered only {result.nmis} NMIs")
        result.after = settled_meminfo(console)
        if result.torture:
            dump_mod.torture(console, False)
        dump_mod.stop_load(console)
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    result.problems += drift_problems(result.before, result.after, ram_kb, tolerance)
    return result


def command(p: Pipeline, args) -> int:
    with p.run.stage("soak"):
        result = soak(p, args.cycles, args.read_every, args.tolerance, nmi_storm=args.nmi_storm)
    out = p.run.path("soak.json")
    out.write_text(json.dumps(asdict(result) | {"ok": result.ok}, indent=2) + "\n")
    pauses = sorted(result.pause_ns)
    say(f"soak: {result.cycles_done}/{result.cycles} cycles at {result.memory}"
        f"{' with the torture load' if result.torture else ''}; drgn read {len(result.read_cycles)} dumps; "
        f"pause median {pauses[len(pauses) // 2] if pauses else 0} ns, max {pauses[-1] if pauses else 0} ns; "
        f"failed pages {sum(result.failed_pages)}" + (f"; {result.nmis} NMIs" if result.nmi_storm else ""))
    for key in MEMINFO_KEYS:
        if key in result.before or key in result.after:
            say(f"soak: {key}: {result.before.get(key)} kB before the first dump, {result.after.get(key)} kB "
                "after the last")
    for problem in result.problems:
        say(f"soak: FAILED: {problem}")
    say(f"wrote {out}")
    p.run.facts["soak"] = {"json": str(out), "ok": result.ok, "cycles": result.cycles_done}
    return 0 if result.ok else 1
