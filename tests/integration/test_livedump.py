"""A livedump of a loaded guest, read back by drgn and by Debian's crash."""

from __future__ import annotations

import pytest

from harness import dump as dump_mod
from harness import elfcore, validate

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def dumped(pipeline, show):
    """Boot with a dump disk, dump under load, then a second dump after release."""
    if not (pipeline.build().headers / "linux" / "livedump.h").is_file():
        pytest.fail("the built kernel has no livedump uapi: series or fragment missing")
    disks = dump_mod.dump_disks(pipeline.run.directory, dump_mod.memory_bytes(pipeline.options.memory))
    with pipeline.boot(disks) as console:
        dump_mod.start_load(console)
        first = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET)
        second = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET, reason="second dump")
        state_after = dump_mod.status(console).get("state")
        dump_mod.stop_load(console)
    show(f"livedump: stop_machine pause {first.status.get('pause_ns')} ns (first dump), "
        f"{second.status.get('pause_ns')} ns (second); COW faults {first.status.get('cow_faults')}, "
        f"{second.status.get('cow_faults')}; failed pages {first.status.get('failed_pages')}, "
        f"{second.status.get('failed_pages')}")
    return {"first": first, "second": second, "image": dump_mod.dump_image(disks), "state_after": state_after}


def test_dump_tool_exits_zero_and_releases(dumped):
    assert dumped["first"].result.status == 0, dumped["first"].result.output
    assert dumped["second"].result.status == 0, dumped["second"].result.output
    assert dumped["state_after"] == "idle"


def test_status_reports_the_pause(dumped):
    pause = int(dumped["second"].status["pause_ns"])
    assert 0 < pause < 10_000_000_000


@pytest.fixture(scope="module")
def drgn_view(pipeline, dumped):
    # The image holds the second dump (same disk): its markers are the ones to check.
    return validate.read_with_drgn(dumped["image"], pipeline.build().vmlinux)


def test_drgn_reads_the_instant_of_the_dump(pipeline, dumped, drgn_view):
    markers = dumped["second"].markers
    assert drgn_view.init_comm == "swapper/0"
    assert drgn_view.release == pipeline.build().release
    assert sum(comm == dump_mod.LOAD_TASK for _, comm in drgn_view.tasks) >= 3
    assert markers.before in drgn_view.log
    assert markers.after not in drgn_view.log
    # The first dump's B marker was written before the second dump began.
    assert dumped["first"].markers.after in drgn_view.log


def test_one_prstatus_per_cpu(pipeline, dumped, drgn_view):
    assert drgn_view.nr_prstatus == pipeline.options.smp
    core = elfcore.read(dumped["image"])
    assert core.segments[0].type == elfcore.PT_NOTE
    assert all(s.type == elfcore.PT_LOAD for s in core.segments[1:])
    assert "KERNELOFFSET" in core.vmcoreinfo()
    note = core.livedump()
    assert note is not None and note.reason == "second dump"
    assert note.nr_cpus == pipeline.options.smp


CRASH_COMMANDS = ["sys", "help -o", "ps", "log", "bt -a", "kmem -i", "kmem -s", "files 1", "vm 2"]


@pytest.fixture(scope="module")
def crash_session(pipeline, dumped):
    """Debian's crash with crash-patches/livedump.so loaded, as the README tells users to run it."""
    extension = validate.build_crash_extension(pipeline.run.path("crash-extension"))
    return validate.run_crash(dumped["image"], pipeline.build().vmlinux, CRASH_COMMANDS,
                              log=pipeline.run.path("crash.log"), extension=extension)


def test_crash_reads_release_log_and_memory(pipeline, dumped, crash_session):
    assert validate.crash_release(crash_session) == pipeline.build().release
    markers = dumped["second"].markers
    assert markers.before in crash_session.outputs["log"]
    assert markers.after not in crash_session.outputs["log"]
    for cmd in ("sys", "log", "kmem -i", "kmem -s"):
        assert crash_session.failures(cmd) == [], f"crash `{cmd}`:\n{crash_session.outputs[cmd]}"


def test_extension_makes_crash_read_struct_pid_whole(crash_session):
    """Without the extension crash 8.0.2 reads struct pid short of numbers[] (6.1 flex array)."""
    assert validate.crash_pid_problem(crash_session) is None, crash_session.outputs["help -o"]
    assert "task table rebuilt" in crash_session.outputs[next(c for c in crash_session.outputs
                                                             if c.startswith("extend "))]


def test_crash_ps_lists_the_load(crash_session):
    assert crash_session.failures("ps") == [], crash_session.outputs["ps"]
    assert dump_mod.LOAD_TASK in crash_session.outputs["ps"]


def test_crash_bt_starts_each_cpu_at_the_stop_instant(pipeline, crash_session, drgn_view):
    """bt -a: every CPU's active task unwinds from the rip saved in its NT_PRSTATUS note, not from its last
    context switch. crash 8.0.2's stack-scanning unwinder may put a stale text address it finds at the saved
    rsp first; drgn's ORC unwinder gives the exact trace (next test)."""
    assert crash_session.failures("bt -a") == [], crash_session.outputs["bt -a"]
    traces = validate.crash_backtraces(crash_session.outputs["bt -a"])
    assert sorted(traces) == list(range(pipeline.options.smp)), crash_session.outputs["bt -a"]
    for cpu, frames in sorted(traces.items()):
        assert drgn_view.stop_functions[cpu] in frames[:2], crash_session.outputs["bt -a"]
        assert "__schedule" not in frames, crash_session.outputs["bt -a"]


def test_drgn_unwinds_each_cpu_from_the_stop_instant(pipeline, drgn_view):
    """drgn's trace of each CPU's running task: the stop function, called by stop_machine's stopper."""
    assert validate.stop_trace_problems(drgn_view, pipeline.options.smp) == []


def test_crash_files_and_vm_of_a_kernel_thread(crash_session):
    """files of init; vm only of a kernel thread (crash 8.0.2 cannot walk 6.1's maple tree)."""
    assert crash_session.failures("files 1") == [], crash_session.outputs["files 1"]
    assert "/dev/console" in crash_session.outputs["files 1"]
    assert crash_session.failures("vm 2") == [], crash_session.outputs["vm 2"]
    assert "kthreadd" in crash_session.outputs["vm 2"]


def test_makedumpfile_round_trip(pipeline, dumped, show):
    """makedumpfile -c -d 31 turns the dump into a kdump file that drgn and crash still read."""
    out = validate.makedumpfile(dumped["image"], pipeline.run.path("dump0.kdump"))
    show(f"livedump: makedumpfile -c -d 31: {out.elf_bytes} -> {out.kdump_bytes} bytes (ratio {out.ratio:.4f})")
    assert 0 < out.ratio < 0.5
    kernel = pipeline.build()
    view = validate.read_with_drgn(out.path, kernel.vmlinux)
    assert view.release == kernel.release
    assert dumped["second"].markers.before in view.log
    assert sum(comm == dump_mod.LOAD_TASK for _, comm in view.tasks) >= 3
    # crash needs the KASLR offset, which only the ELF dump's VMCOREINFO note tells the harness.
    session = validate.run_crash(out.path, kernel.vmlinux, ["sys", "log"], kaslr_from=dumped["image"])
    assert validate.crash_release(session) == kernel.release
    assert dumped["second"].markers.before in session.outputs["log"]
