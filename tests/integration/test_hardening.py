"""Hardening: what a live dump must survive and refuse on a production host.

Each test here failed on the series before the fix it names (run against
0001-0013), except the first, whose docstring says why; see the kernel patch
named in each docstring. The guest helper
``ldharden`` (buildroot-config/helpers/ldharden.c) does what busybox cannot.
"""

from __future__ import annotations

import errno
import re

import pytest
from guest_checks import expect_errno, state

from harness import bench, elfcore
from harness import dump as dump_mod

pytestmark = pytest.mark.qemu

PAGE = 4096


@pytest.fixture(scope="module")
def hguest(pipeline):
    """One guest with a dump disk big enough for its RAM (/dev/vdb) and a small one."""
    disks = dump_mod.dump_disks(pipeline.run.path("hardening"), dump_mod.memory_bytes(pipeline.options.memory),
                                small=True)
    with pipeline.boot(disks, tag="hardening") as console:
        yield console, disks
    for disk in disks:
        disk.path.unlink(missing_ok=True)


def fields(output: str) -> dict[str, str]:
    """The ``key=value`` words of the last line ldharden printed."""
    lines = [line for line in output.splitlines() if "=" in line]
    assert lines, f"ldharden printed nothing to parse: {output!r}"
    return dict(word.split("=", 1) for word in lines[-1].split() if "=" in word)


def test_dumps_survive_io_threads_and_self_reaping_threads(hguest, show):
    """0014: io_uring threads (create_io_thread()) and threads that reap themselves on exit.

    Neither was seen by the fork hook or the stop's task walk. This test did
    not crash the series before 0014 in three dumps: a new stack is zeroed
    through the direct map when it is allocated, which saves and unprotects
    it before the thread runs, and the window of an exiting thread (off the
    task list, still on its stack) is narrow. It exercises both paths; the
    fix (stacks in vmalloc space, never protected) closes them by design.
    """
    console, disks = hguest
    console.run("ldharden threads >/dev/null 2>&1 & echo $! > /tmp/ldharden.pid", check=True)
    try:
        for i in range(2):
            taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason=f"io threads {i}")
            assert taken.result.status == 0, taken.result.output
            assert taken.status["failed_pages"] == "0", taken.status
        alive = console.run("kill -0 $(cat /tmp/ldharden.pid)")
        assert alive.status == 0, "the thread churn died during the dumps"
    finally:
        console.run("kill $(cat /tmp/ldharden.pid) 2>/dev/null; wait; true")
    show(f"dumps under io_uring and thread churn: pause {taken.status.get('pause_ns')} ns")


def test_a_poisoned_page_is_never_read(hguest):
    """0015: a page marked HWPoison is listed as failed and dumped as zeros, not read."""
    console, disks = hguest
    pfn = int(fields(console.run("ldharden poison", check=True).output)["pfn"])
    # The poisoned page is a user page: the default filter leaves it out unread. Kept, it must be failed.
    taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="hwpoison", flags="--exclude none")
    assert taken.result.status == 0, taken.result.output
    assert int(taken.status["failed_pages"]) >= 1, taken.status
    core = elfcore.read(dump_mod.dump_image(disks))
    note = core.livedump()
    assert note is not None
    assert pfn in note.failed_pfns, f"poisoned pfn {pfn:#x} not listed: {note.failed_pfns[:16]}"
    page = core.read_phys(pfn * PAGE, PAGE)
    assert page == bytes(PAGE), f"poisoned page dumped with content: {page[:32]!r}"


def test_a_read_only_target_is_refused(hguest):
    """0017, 0029: 6.1 only warns about writes to a read-only device: refused at INIT, and at SWEEP."""
    console, _ = hguest
    console.run(f"blockdev --setro {dump_mod.DUMP_TARGET}", check=True)
    try:
        expect_errno(console, f"livedump init {dump_mod.DUMP_TARGET}", errno.EROFS, "idle")
    finally:
        console.run(f"blockdev --setrw {dump_mod.DUMP_TARGET}", check=True)
    console.run(f"livedump init {dump_mod.DUMP_TARGET} && livedump start && blockdev --setro {dump_mod.DUMP_TARGET}",
                check=True)
    try:
        expect_errno(console, "livedump sweep", errno.EROFS, "started")
    finally:
        console.run(f"livedump release; blockdev --setrw {dump_mod.DUMP_TARGET}", check=True)


def cpu1_online(console, value: int):
    return console.run(f"echo {value} > /sys/devices/system/cpu/cpu1/online")


def test_cpu_hotplug_is_refused_while_a_dump_runs(hguest):
    """0020, 0026: the CPUs and RAM the snapshot holds stay, from INIT until the sweep ends."""
    console, _ = hguest
    console.run(f"livedump init {dump_mod.DUMP_TARGET}", check=True)
    try:
        for step in ("init", "start"):
            if step == "start":
                console.run("livedump start", check=True)
            refused = cpu1_online(console, 0)
            assert refused.status != 0, f"CPU 1 went offline after {step}"
            assert "busy" in refused.output.lower(), refused.output
            assert console.run("cat /sys/devices/system/cpu/cpu1/online", check=True).output.strip().endswith("1")
    finally:
        console.run("livedump release", check=True)
    # Allowed again once the dump is released.
    assert cpu1_online(console, 0).status == 0
    assert cpu1_online(console, 1).status == 0


# sizeof(struct livedump_status) on this series: LIVEDUMP_STATUS_SIZE_VER4 (0045 added triggers, fired).
STATUS_SIZE = 400


@pytest.mark.parametrize("size", [64, 368, 376, 392, STATUS_SIZE, 1024])
def test_status_serves_any_structure_size(hguest, size):
    """0021: an older or newer caller's STATUS gets what it has room for, the rest zeroed."""
    console, _ = hguest
    got = fields(console.run(f"ldharden status-size {size}", check=True).output)
    assert got["ret"] == "0", got
    assert int(got["size"]) == min(size, STATUS_SIZE), got
    assert got["state"] == "0", got  # idle
    assert got["tail_zero"] == "1", got


def test_status_smaller_than_the_first_version_is_refused(hguest):
    console, _ = hguest
    got = fields(console.run("ldharden status-size 32", check=True).output)
    assert (got["ret"], got["errno"]) == ("-1", str(errno.EINVAL)), got


def test_init_size_must_match_the_ioctl_number(hguest):
    console, _ = hguest
    got = fields(console.run(f"ldharden init-size 144 200 {dump_mod.DUMP_TARGET}", check=True).output)
    assert (got["ret"], got["errno"]) == ("-1", str(errno.EINVAL)), got
    assert state(console) == "idle"
    # A larger structure than this kernel knows, zero beyond: accepted.
    got = fields(console.run(f"ldharden init-size 200 200 {dump_mod.DUMP_TARGET}", check=True).output)
    assert (got["ret"], got["state"]) == ("0", "1"), got  # ready
    # The helper's exit closed the file that set the dump up: released.
    assert state(console) == "idle"


def vmalloc_used_kb(console) -> int:
    text = console.run("grep VmallocUsed /proc/meminfo", check=True).output
    return int(re.search(r"VmallocUsed:\s+(\d+) kB", text).group(1))


def test_the_reserve_is_given_back_when_the_sweep_ends(hguest):
    """0023: a finished dump nobody releases no longer pins the reserve."""
    console, _ = hguest
    before = vmalloc_used_kb(console)
    console.run(f"livedump init {dump_mod.DUMP_TARGET}", check=True)
    ready = vmalloc_used_kb(console)
    reserve_kb = int(dump_mod.status(console)["reserve_pages"]) * 4
    console.run("livedump start && livedump sweep && "
                "while livedump status | grep -q '^state=sweeping'; do sleep 1; done", check=True, timeout=900)
    done = vmalloc_used_kb(console)
    assert state(console) == "done"
    console.run("livedump release", check=True)
    assert ready - before >= reserve_kb, (before, ready, reserve_kb)
    # What stays until release is the counters and the notes.
    assert done - before < reserve_kb // 8, (before, ready, done, reserve_kb)


# kill -9 returns before the holder has exited (and closed its file): wait until it has.
KILL_HOLDER = ("p=$(cat /tmp/hold.pid); kill -9 $p 2>/dev/null; i=0; "
               "while [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status && [ $i -lt 30 ]; do sleep 1; "
               "i=$((i+1)); done; true")


def hold_a_started_dump(console) -> None:
    """A background process (pid in /tmp/hold.pid) holds a STARTED dump through the file that set it up.

    If it does not say so within a minute, what it is doing (its kernel stack, the dump's state, the
    kernel log) goes into the failure, and it is killed: a holder left behind would make every later
    test in this guest fail with EBUSY instead of its own reason.
    """
    held = console.run(f"ldharden hold {dump_mod.DUMP_TARGET} > /tmp/hold.out 2>&1 & echo $! > /tmp/hold.pid; "
                       "i=0; until grep -q held /tmp/hold.out || [ $i -ge 60 ]; do sleep 1; i=$((i+1)); done; "
                       "cat /tmp/hold.out", check=True)
    if "held" not in held.output:
        why = console.run("p=$(cat /tmp/hold.pid); echo pid=$p; cat /proc/$p/wchan /proc/$p/stack; "
                          "livedump status; dmesg | tail -n 30").output
        console.run(KILL_HOLDER, check=True)
        pytest.fail(f"ldharden hold did not set a dump up within 60 s; it printed {held.output!r}\n{why}")
    assert state(console) == "started"


def test_a_killed_tool_releases_its_dump(hguest):
    """0024: closing the file that set a dump up releases it: memory writable, large pages back, reserve freed."""
    console, _ = hguest
    before = bench.meminfo(console)
    hold_a_started_dump(console)
    console.run(KILL_HOLDER, check=True)
    assert state(console) == "idle"
    assert bench.meminfo(console) == before


def test_only_the_file_that_set_a_dump_up_drives_it(hguest):
    """0030: another process can neither start, sweep nor release (and then replace) the dump a tool drives:
    EBUSY, the dump untouched; the owner's exit still releases it."""
    console, _ = hguest
    before = bench.meminfo(console)
    hold_a_started_dump(console)
    try:
        for step in ("start", "sweep", "release"):
            expect_errno(console, f"livedump {step}", errno.EBUSY, "started")
        expect_errno(console, f"livedump init {dump_mod.DUMP_TARGET}", errno.EBUSY, "started")
    finally:
        console.run(KILL_HOLDER, check=True)
    assert state(console) == "idle"
    assert bench.meminfo(console) == before


def test_an_abandoned_sweep_runs_to_its_end_and_the_next_init_takes_over(hguest):
    """0024: a sweep whose file was closed finishes on its own; nobody has to release it."""
    console, _ = hguest
    console.run(f"ldharden orphan {dump_mod.DUMP_TARGET}", check=True)
    console.run("while livedump status | grep -q '^state=sweeping'; do sleep 1; done", check=True, timeout=900)
    assert state(console) == "done"
    console.run(f"livedump init {dump_mod.DUMP_TARGET}", check=True)
    assert state(console) == "ready"
    console.run("livedump release", check=True)


def test_lockdown_raised_after_open_stops_the_sweep_and_refuses_init(hguest):
    """0016, 0029: a file opened before lockdown must not dump after it. Raises lockdown: last in this guest."""
    console, _ = hguest
    console.run("grep -q securityfs /proc/mounts || mount -t securityfs securityfs /sys/kernel/security", check=True)
    out = console.run(f"ldharden lockdown {dump_mod.DUMP_TARGET}", check=True).output
    swept = dict(w.split("=", 1) for line in out.splitlines() if line.startswith("sweep_state=")
                 for w in line.split())
    assert (swept.get("sweep_state"), swept.get("sweep_error")) == ("5", str(-errno.EPERM)), out  # FAILED
    assert int(swept["pages_dumped"]) < int(swept["pages_total"]), out
    got = fields(out)
    assert (got["ret"], got["errno"]) == ("-1", str(errno.EPERM)), got
    # A new open is refused as well, as it always was.
    assert console.run("livedump status").status == errno.EPERM


def test_more_ram_ranges_than_the_old_limit(pipeline):
    """0019: INIT failed with E2BIG beyond 64 System RAM ranges; memmap= holes make more.

    The holes start at 256 MiB: early boot's page tables live lower down. The
    e820 table holds 128 entries, so 80 holes give somewhat over 64 ranges.
    With that many memmap= regions and KASLR, 3 of 4 boots hung silently
    before the console here: nokaslr makes the boot deterministic.
    """
    holes = ("nokaslr",) + tuple(f"memmap=4K${0x10000000 + i * 0x100000:#x}" for i in range(80))
    disks = dump_mod.dump_disks(pipeline.run.path("ranges"), dump_mod.memory_bytes(pipeline.options.memory))
    with pipeline.boot(disks, tag="ranges", append=holes) as console:
        ranges = int(console.run("grep -c 'System RAM' /proc/iomem", check=True).output.strip().splitlines()[-1])
        # Nothing left out: one PT_LOAD per range, even a range that holds only free pages.
        taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="many ranges", flags="--exclude none")
    assert ranges > 64, f"memmap= left only {ranges} System RAM ranges"
    assert taken.result.status == 0, taken.result.output
    core = elfcore.read(dump_mod.dump_image(disks))
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    assert len(core.loads) >= ranges - 1, (len(core.loads), ranges)
