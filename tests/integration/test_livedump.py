"""A livedump of a loaded guest, read back by drgn and by Debian's crash."""

from __future__ import annotations

import pytest

from harness import dump as dump_mod
from harness import dumpcheck, elfcore, validate

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
def verdict(pipeline, dumped) -> dumpcheck.DumpVerdict:
    """The checks make test-qemu makes, on the second dump (same disk: the image holds it)."""
    kernel = pipeline.build()
    saw = dumpcheck.GuestSaw.of(dumped["second"], kernel.release, pipeline.options.smp)
    return dumpcheck.check_dump(dumped["image"], kernel.vmlinux, saw, crash_dir=pipeline.run.directory)


def assert_passed(verdict: dumpcheck.DumpVerdict, prefix: str) -> None:
    checks = verdict.named(prefix)
    assert checks, f"no check is named {prefix!r}..."  # a renamed check must not pass by being absent
    assert [str(c) for c in checks if not c.ok] == []


def test_drgn_reads_the_instant_of_the_dump(verdict, dumped):
    """init_task, the release, the load's tasks, marker A and not B, one NT_PRSTATUS per CPU."""
    assert_passed(verdict, "drgn: ")
    # The first dump's B marker was written before the second dump began.
    assert dumped["first"].markers.after in verdict.view.log


def test_one_prstatus_per_cpu(pipeline, dumped):
    core = elfcore.read(dumped["image"])
    assert len(core.prstatus()) == pipeline.options.smp
    assert core.segments[0].type == elfcore.PT_NOTE
    assert all(s.type == elfcore.PT_LOAD for s in core.segments[1:])
    assert "KERNELOFFSET" in core.vmcoreinfo()
    note = core.livedump()
    assert note is not None and note.reason == "second dump"
    assert note.nr_cpus == pipeline.options.smp


def test_crash_reads_release_log_and_memory(verdict):
    for prefix in ("crash: sys shows", "crash: log has A", "crash: `sys`", "crash: `log`", "crash: `kmem -i`",
                   "crash: `kmem -s`"):
        assert_passed(verdict, prefix)


def test_extension_makes_crash_read_struct_pid_whole(verdict):
    """Without the extension crash 8.0.2 reads struct pid short of numbers[] (6.1 flex array)."""
    assert_passed(verdict, "crash: struct pid read whole")
    assert_passed(verdict, "crash: the extension loaded")


def test_crash_ps_lists_the_load(verdict):
    assert_passed(verdict, "crash: ps lists the load")
    assert_passed(verdict, "crash: `ps`")


def test_crash_bt_starts_each_cpu_at_the_stop_instant(verdict):
    """bt -a: every CPU's active task unwinds from the rip saved in its NT_PRSTATUS note, not from its last
    context switch (no __schedule). crash 8.0.2's stack-scanning unwinder may put a stale text address it
    finds at the saved rsp first; drgn's ORC unwinder gives the exact trace (next test)."""
    assert_passed(verdict, "crash: bt -a unwinds")
    assert_passed(verdict, "crash: `bt -a`")


def test_drgn_unwinds_each_cpu_from_the_stop_instant(verdict):
    """drgn's trace of each CPU's running task: the stop function, called by stop_machine's stopper."""
    assert_passed(verdict, "drgn: each CPU's task unwinds")


def test_crash_files_and_vm_of_a_kernel_thread(verdict):
    """files of init; vm only of a kernel thread (crash 8.0.2 cannot walk 6.1's maple tree)."""
    for prefix in ("crash: files 1 shows", "crash: `files 1`", "crash: vm 2 is", "crash: `vm 2`"):
        assert_passed(verdict, prefix)


def test_the_extension_reads_the_dump_as_the_guest_saw_it(verdict):
    """livedump: the reason and COW faults the tool printed; livedump -c: its own verdict, result: OK."""
    for prefix in ("crash: livedump shows", "crash: `livedump`", "crash: `livedump -c`"):
        assert_passed(verdict, prefix)


def test_every_shared_check_passes(verdict):
    assert verdict.failed == []


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
