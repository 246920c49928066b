"""``python -m harness faults``: the dump's target fails under it, and the host runs on.

One boot under the e2e load, one extra target per fault:

- ``eio@N``: QEMU's blkdebug fails every write that touches sector N with EIO
  (``--eio-at``, in MiB into the target: the ELF headers at 0, the first data
  chunk, halfway, the last MiB of the dump);
- ``unplug``: a target throttled to ``SLOW_WRITE_BYTES_PER_S`` is removed with
  QMP ``device_del`` once the sweep has written ``MID_SWEEP_PAGES`` pages
  (ACPI PCI hot-unplug: the guest ejects the virtio-blk device mid-sweep);
- ``setro``: a throttled target is made read-only (``blockdev --setro``) at
  the same point, which the kernel only warns about: the sweep must stop.

Each faulty dump must end FAILED: ``livedump dump`` exits 1, STATUS holds the
state ``failed`` and a negative errno, fewer pages were dumped than the total,
the kernel log says ``livedump: dump failed: <errno>``, the DirectMap lines of
/proc/meminfo equal those before the dump (the protection and every split are
gone), the device is idle again, the load still runs, and the next dump to a
good target succeeds with 0 failed pages. A fault counts as survived only when
all of that held.

Writes faults.json in the run directory; exit 0 when every fault was survived.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace

from . import bench
from . import dump as dump_mod
from .console import GuestConsole
from .errors import HarnessError
from .pipeline import Pipeline, say
from .qemu import device_id
from .qmp import QmpClient

SECTOR = 512
# What the writer may have submitted beyond a failing write: LIVEDUMP_CHUNKS (4) bios of 256 KiB, and slack.
IN_FLIGHT_MIB = 4
# Where the default run makes a target fail, in MiB into it; "end" is the dump's last MiB.
DEFAULT_EIO_AT = ("0", "1", "half", "end")
# The faults that strike mid-sweep, on a target slow enough for the sweep to be under way.
MID_SWEEP_FAULTS = ("unplug", "setro")
SLOW_WRITE_BYTES_PER_S = 16 << 20
MID_SWEEP_PAGES = 4096
UNPLUG_EJECT_TIMEOUT_S = 120.0
ASYNC_OUT = "/tmp/faulty-dump.out"


class FaultsError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("faults", message, detail=detail)


@dataclass
class FaultOutcome:
    fault: str                      # "eio@<MiB>" or "unplug"
    exit_status: int | None = None
    status: dict[str, str] = field(default_factory=dict)
    next_dump_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return not self.problems and self.next_dump_ok


@dataclass
class FaultsResult:
    memory: str
    outcomes: list[FaultOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.survived for o in self.outcomes)


def eio_offsets_mib(specs: tuple[str, ...], memory_bytes: int) -> list[int]:
    """``--eio-at`` values -> MiB offsets: a number, ``half`` (of RAM) or ``end`` (the last MiB of RAM)."""
    ram_mib = memory_bytes >> 20
    named = {"half": ram_mib // 2, "end": ram_mib - 1}
    offsets = []
    for spec in specs:
        spec = spec.strip().lower()
        if spec in named:
            mib = named[spec]
        elif spec.isdigit() and int(spec) < ram_mib:
            mib = int(spec)
        else:
            raise FaultsError(f"--eio-at {spec!r}: give MiB below {ram_mib}, 'half' or 'end'")
        if mib not in offsets:  # one target per place
            offsets.append(mib)
    return offsets


def failed_dump_problems(exit_status: int, status: dict[str, str], kernel_log: str, *,
                         partial: bool = True) -> list[str]:
    """Did a dump to a failing target end as the documentation says: FAILED, with its errno, and (partial)
    before the sweep had handed all pages to the target? pages_dumped counts pages submitted, so a write that
    fails in the last MiB comes back after all of them were."""
    problems = []
    if exit_status != 1:
        problems.append(f"livedump dump exited {exit_status}, not 1")
    if status.get("state") != "failed":
        problems.append(f"the last STATUS says state {status.get('state')!r}, not 'failed'")
    error = status.get("error", "")
    if not (error.startswith("-") and error[1:].isdigit() and int(error) < 0):
        problems.append(f"STATUS error is {error!r}, not a negative errno")
    elif f"livedump: dump failed: {error}" not in kernel_log:
        problems.append(f"the kernel log has no 'livedump: dump failed: {error}'")
    dumped, total = status.get("pages_dumped", ""), status.get("pages_total", "")
    if not (dumped.isdigit() and total.isdigit() and int(dumped) <= int(total)):
        problems.append(f"pages_dumped {dumped!r} of {total!r}")
    elif partial and int(dumped) == int(total):
        problems.append(f"pages_dumped {dumped!r} of {total!r}: the failure did not stop the sweep")
    return problems


def host_problems(console: GuestConsole, directmap_before: dict[str, int | None]) -> list[str]:
    """After a failed dump: idle again, every mapping put back, the load still running."""
    problems = []
    state = dump_mod.status(console).get("state")
    if state != "idle":
        problems.append(f"the device is {state!r} after the failed dump, not idle")
    directmap_after = bench.meminfo(console)
    if directmap_after != directmap_before:
        problems.append(f"DirectMap {directmap_after} after the failed dump, {directmap_before} before")
    loads = dump_mod.load_processes(console)
    if loads < 3:
        problems.append(f"the load is gone: {loads} {dump_mod.LOAD_TASK} processes")
    return problems


def kernel_log(console: GuestConsole) -> str:
    return console.run("dmesg | grep 'livedump: dump failed' ; true").output


# The faulty dumps keep every page of RAM: the --eio-at offsets are MiB into a dump of all of it, and a
# filtered dump would end (well) before the half or the end of RAM.
FAULT_DUMP_FLAGS = f"--exclude {dump_mod.EVERY_PAGE}"


def mid_sweep_dump(console: GuestConsole, qmp: QmpClient, fault: str, target: str, index: int,
                   reason: str) -> tuple[int, str]:
    """Start a dump to target in the background, strike it mid-sweep; (exit status, tool output)."""
    console.run(f"rm -f {ASYNC_OUT}.rc; (livedump dump {target} --reason '{reason}' {FAULT_DUMP_FLAGS} "
                f"> {ASYNC_OUT} 2>&1; "
                f"echo $? > {ASYNC_OUT}.rc) &", check=True)
    deadline = time.monotonic() + 300
    while True:
        status = dump_mod.status(console)
        if int(status.get("pages_dumped", "0") or 0) >= MID_SWEEP_PAGES and status.get("state") == "sweeping":
            break
        if console.run(f"test -e {ASYNC_OUT}.rc").status == 0:
            raise FaultsError(f"the dump to the slow target ended before the {fault} could strike",
                              detail=console.run(f"cat {ASYNC_OUT}").output)
        if time.monotonic() > deadline:
            raise FaultsError(f"the sweep did not reach {MID_SWEEP_PAGES} pages in 300 s", detail=str(status))
        time.sleep(0.5)
    if fault == "unplug":
        say(f"faults: device_del {device_id(index)} ({target}) at {status.get('pages_dumped')} pages dumped")
        qmp.execute("device_del", {"id": device_id(index)})
        qmp.wait_event("DEVICE_DELETED", UNPLUG_EJECT_TIMEOUT_S, device=device_id(index))
    else:
        say(f"faults: blockdev --setro {target} at {status.get('pages_dumped')} pages dumped")
        console.run(f"blockdev --setro {target}", check=True)
    waited = console.run(f"while ! test -e {ASYNC_OUT}.rc; do sleep 0.2; done; cat {ASYNC_OUT}.rc", timeout=600,
                         check=True)
    return int(waited.output.strip().splitlines()[-1]), console.run(f"cat {ASYNC_OUT}", check=True).output


def faults(p: Pipeline, eio_at: tuple[str, ...] = DEFAULT_EIO_AT,
           mid_sweep: tuple[str, ...] = MID_SWEEP_FAULTS) -> FaultsResult:
    kernel = p.build()
    if not (kernel.headers / "linux" / "livedump.h").is_file():
        raise FaultsError("this kernel has no livedump (series or fragment missing)")
    memory = dump_mod.memory_bytes(p.options.memory)
    offsets = eio_offsets_mib(eio_at, memory)
    unknown = set(mid_sweep) - set(MID_SWEEP_FAULTS)
    if unknown:
        raise FaultsError(f"unknown mid-sweep fault {', '.join(sorted(unknown))}: "
                          f"known are {', '.join(MID_SWEEP_FAULTS)}")
    names = [f"eio{mib}" for mib in offsets] + list(mid_sweep)
    if not names:
        raise FaultsError("no fault to inject")
    base = dump_mod.dump_disks(p.run.path("faults"), memory, extra=tuple(names))
    first = len(base) - len(names)
    if first + len(names) > len(dump_mod.GUEST_DISK_NAMES):
        raise FaultsError(f"{len(names)} faulty targets do not fit in {len(dump_mod.GUEST_DISK_NAMES)} disks")
    disks = list(base)
    for i, mib in enumerate(offsets):
        disks[first + i] = replace(disks[first + i], fail_writes_at_sector=(mib << 20) // SECTOR)
    for i in range(len(offsets), len(names)):
        disks[first + i] = replace(disks[first + i], write_bytes_per_s=SLOW_WRITE_BYTES_PER_S)
    result = FaultsResult(memory=p.options.memory)
    with p.boot(tuple(disks), tag="faults") as console, QmpClient.connect(p.run.path("qmp.sock")) as qmp:
        dump_mod.start_load(console)
        for i, name in enumerate(names):
            index = first + i
            target = dump_mod.GUEST_DISK_NAMES[index]
            outcome = FaultOutcome(fault=name.replace("eio", "eio@", 1) if name.startswith("eio") else name)
            say(f"faults: {outcome.fault}: dumping to {target}")
            directmap_before = bench.meminfo(console)
            if name in MID_SWEEP_FAULTS:
                outcome.exit_status, output = mid_sweep_dump(console, qmp, name, target, index, f"fault {name}")
            else:
                run = dump_mod.dump(console, target, reason=f"fault {name}", flags=FAULT_DUMP_FLAGS).result
                outcome.exit_status, output = run.status, run.output
            outcome.status = dump_mod.tool_counters(output)
            # Writes in flight when the target fails: the sweep stops within these MiB of the failure.
            partial = not name.startswith("eio") or offsets[i] + IN_FLIGHT_MIB < memory >> 20
            outcome.problems += failed_dump_problems(outcome.exit_status, outcome.status, kernel_log(console),
                                                     partial=partial)
            outcome.problems += host_problems(console, directmap_before)
            good = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason=f"after fault {name}")
            outcome.next_dump_ok = good.result.status == 0 and good.status.get("failed_pages") == "0"
            if not outcome.next_dump_ok:
                outcome.problems.append(f"the next dump to {dump_mod.DUMP_TARGET} exited {good.result.status}, "
                                        f"failed pages {good.status.get('failed_pages')}")
            say(f"faults: {outcome.fault}: error {outcome.status.get('error')}, "
                f"{outcome.status.get('pages_dumped')}/{outcome.status.get('pages_total')} pages, "
                f"{'survived' if outcome.survived else 'NOT survived: ' + '; '.join(outcome.problems)}")
            result.outcomes.append(outcome)
        dump_mod.stop_load(console)
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    return result


def command(p: Pipeline, args) -> int:
    with p.run.stage("faults"):
        result = faults(p, tuple(args.eio_at.split(",")) if args.eio_at else (),
                        tuple(args.mid_sweep.split(",")) if args.mid_sweep else ())
    out = p.run.path("faults.json")
    out.write_text(json.dumps(asdict(result) | {"ok": result.ok}, indent=2) + "\n")
    survived = sum(o.survived for o in result.outcomes)
    say(f"faults: {survived}/{len(result.outcomes)} faults survived at {result.memory}")
    say(f"wrote {out}")
    p.run.facts["faults"] = {"json": str(out), "ok": result.ok, "injected": len(result.outcomes),
                             "survived": survived}
    return 0 if result.ok else 1
