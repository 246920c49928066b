"""Taking dumps inside the guest: load, markers, the livedump tool, status.

A dump test writes marker A to /dev/kmsg, dumps, then writes marker B: a
dump of one instant has A in its printk buffer and not B.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from . import consistency
from .console import CommandResult, GuestConsole
from .errors import HarnessError
from .qemu import Disk

# The guest sees the run's disks in order as /dev/vda, /dev/vdb, ... The first
# is a scratch disk the load writes to, as a guest's own disk would be; dump
# targets follow it.
# `livedump dump --exclude` value that keeps every page of RAM: dumps whose figures or offsets are about all
# of RAM (bench, oracle, target faults) use it; the kernel's default leaves user, free and own pages out.
EVERY_PAGE = "none"
GUEST_DISK_NAMES = tuple(f"/dev/vd{c}" for c in "abcdefgh")
DUMP_TARGET = GUEST_DISK_NAMES[1]
SMALL_TARGET = GUEST_DISK_NAMES[2]
LOAD_TASK = "ldload"
LOAD_COMMAND = ("for m in spin fork 'write /tmp'; do ldload $m >/dev/null 2>&1 & done; "
                "(while :; do dd if=/dev/zero of=/dev/vda bs=64k count=64 2>/dev/null; done) &")


def dump_disks(run_dir: Path, memory_bytes: int, *, small: bool = False,
               extra: tuple[str, ...] = ()) -> tuple[Disk, ...]:
    """Scratch disk, a target big enough for all guest RAM plus headers, optionally a too-small one,
    then one more full-size target per name in extra (/dev/vdd, ... or /dev/vdc without small)."""
    disks = [Disk(run_dir / "scratch.img", 64 << 20), Disk(run_dir / "dump0.img", memory_bytes + (256 << 20))]
    if small:
        disks.append(Disk(run_dir / "small.img", 16 << 20))
    disks += [Disk(run_dir / f"{name}.img", memory_bytes + (256 << 20)) for name in extra]
    return tuple(disks)


TORTURE_RUN = "/sys/module/test_livedump/parameters/run"
TORTURE_ITERATIONS = "/sys/module/test_livedump/parameters/iterations"
# livedump's module parameter: protect the vmalloc and module areas too (0047).
PROTECT_ALIASES = "/sys/module/livedump/parameters/protect_aliases"
# ... and user mappings (protect_user).
PROTECT_USER = "/sys/module/livedump/parameters/protect_user"
USER_TORTURE_OUT, USER_TORTURE_PID = "/tmp/ldtorture.out", "/tmp/ldtorture.pid"
# The module whose data the torture load sweeps (0050), where harness/rootfs.py puts it; loaded once, for good.
TORTURE_MODULE = "/lib/modules/test_livedump_module.ko"


def has_torture(console: GuestConsole) -> bool:
    return console.run(f"test -w {TORTURE_RUN}").status == 0


def torture(console: GuestConsole, on: bool) -> None:
    """Start or stop the torture load: lib/test_livedump.c's writers (CONFIG_TEST_LIVEDUMP) and the user-space
    writer ldtorture (buildroot-config/helpers/ldtorture.c), whose regions the checker reads where it expects
    them (harness/consistency.py); test_livedump_module, where the kernel has it, lends them its data."""
    if on:
        console.run(f"if [ -f {TORTURE_MODULE} ] && ! grep -q '^test_livedump_module ' /proc/modules; then "
                    f"insmod {TORTURE_MODULE}; fi", check=True)
    console.run(f"echo {int(on)} > {TORTURE_RUN}", check=True)
    if not on:
        console.run(f"kill $(cat {USER_TORTURE_PID}) 2>/dev/null; rm -f {USER_TORTURE_PID}; true", check=True)
        return
    console.run(f"{consistency.USER_TASK} {consistency.USER_ANON_ADDR:#x} {consistency.USER_SHARED_ADDR:#x} "
                f"{consistency.USER_PAGES} > {USER_TORTURE_OUT} 2>&1 & echo $! > {USER_TORTURE_PID}", check=True)
    ready = console.run(f"for i in $(seq 100); do grep -q ready {USER_TORTURE_OUT} && break; sleep 0.1; done; "
                        f"cat {USER_TORTURE_OUT}")
    if "ldtorture ready" not in ready.output:
        raise HarnessError("torture", f"the user-space writer did not start: {ready.output.strip()!r}")


def set_parameter(console: GuestConsole, path: str, on: bool) -> None:
    """Set a boolean module parameter of livedump's (read at INIT: it applies to the next dumps)."""
    console.run(f"echo {int(on)} > {path}", check=True)


def protect_aliases(console: GuestConsole, on: bool) -> None:
    """Whether the next dumps write-protect vmalloc and module mappings too (default on)."""
    set_parameter(console, PROTECT_ALIASES, on)


def protect_user(console: GuestConsole, on: bool) -> None:
    """Whether the next dumps write-protect user mappings too (default on)."""
    set_parameter(console, PROTECT_USER, on)


def torture_iterations(console: GuestConsole) -> int:
    return int(console.run(f"cat {TORTURE_ITERATIONS}", check=True).output.strip().splitlines()[-1])


def dump(console: GuestConsole, target: str, *, reason: str, flags: str = "", timeout: float = 900.0) -> DumpRun:
    """``livedump dump TARGET`` without markers; counters from the tool's closing lines."""
    result = console.run(f"livedump dump {target} --reason '{reason}'{' ' + flags if flags else ''}", timeout=timeout)
    return DumpRun(result, tool_counters(result.output), None, reason)


def tool_counters(output: str) -> dict[str, str]:
    """The counters ``livedump dump`` prints last (``livedump: key=value``), from the last STATUS it read."""
    return parse_status("\n".join(line.removeprefix("livedump: ") for line in output.splitlines()))


def dump_image(disks: tuple[Disk, ...]) -> Path:
    """The host file behind DUMP_TARGET in a tuple from dump_disks()."""
    return disks[GUEST_DISK_NAMES.index(DUMP_TARGET)].path


def memory_bytes(spec: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", spec.strip().upper())
    if not m:
        raise HarnessError("qemu", f"cannot parse memory size {spec!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


# A reserve for runs that look at something other than capacity (the oracle, the debug kernel's soak), as a
# share of guest RAM: four times livedump's default (1/64). A page first written while the reserve is full
# fails (listed and counted, not torn); under the e2e and torture loads, or a KASAN kernel, the default
# filled up in some dumps. How much a load needs is the bench's reserve_used_max.
AMPLE_RESERVE_SHARE = 16


def ample_reserve_pages(memory: str) -> int:
    """AMPLE_RESERVE_SHARE of a guest with ``memory`` (QEMU's -m) of RAM, in pages."""
    return memory_bytes(memory) // 4096 // AMPLE_RESERVE_SHARE


def reserve_flag(pages: int | None) -> str:
    """livedump dump's option for a reserve of ``pages``; none (livedump's default) for 0 or None."""
    return f"--reserve {pages}" if pages else ""


def parse_status(text: str) -> dict[str, str]:
    """``key=value`` lines; keys are lower case and may hold digits (``fault_ns_log2``)."""
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[a-z_][a-z0-9_]*=", line))


@dataclass
class Markers:
    before: str
    after: str

    @classmethod
    def new(cls) -> Markers:
        tag = secrets.token_hex(6)
        return cls(f"livedump-marker-A-{tag}", f"livedump-marker-B-{tag}")


def kmsg(console: GuestConsole, text: str) -> None:
    console.run(f"echo {text} > /dev/kmsg", check=True)


def load_processes(console: GuestConsole) -> int:
    """How many processes of the e2e load run (start_load() starts three)."""
    return int(console.run(f"pidof {LOAD_TASK} | wc -w", check=True).output.strip().splitlines()[-1])


def start_load(console: GuestConsole) -> None:
    console.run(LOAD_COMMAND, check=True)
    count = load_processes(console)
    if count < 3:
        raise HarnessError("guest", f"load did not start: {count} {LOAD_TASK} processes")


def stop_load(console: GuestConsole) -> None:
    console.run(f"kill $(jobs -p) 2>/dev/null; killall {LOAD_TASK} 2>/dev/null; true")


def status(console: GuestConsole) -> dict[str, str]:
    return parse_status(console.run("livedump status", check=True).output)


@dataclass
class DumpRun:
    result: CommandResult
    status: dict[str, str]
    markers: Markers | None  # None: dump() took it without markers
    reason: str = ""


def dump_with_markers(console: GuestConsole, target: str, *, reason: str = "harness test", flags: str = "",
                      timeout: float = 900.0) -> DumpRun:
    """Marker A, ``livedump dump TARGET``, marker B.

    The counters come from the tool's closing ``livedump: key=value`` lines,
    printed from the last STATUS before it released the dump.
    """
    markers = Markers.new()
    kmsg(console, markers.before)
    taken = dump(console, target, reason=reason, flags=flags, timeout=timeout)
    kmsg(console, markers.after)
    return replace(taken, markers=markers)
