"""Armed dumps (kernel patch 0045): set up ahead of time, started by a WARN() or SysRq-D.

``livedump arm /dev/vdb --on warn,sysrq`` leaves a dump READY and armed; a WARN() from test_livedump's
``warn`` parameter (in the task that writes it) fires it: the kernel takes the snapshot from a work item and
the sweep runs on its own. The dump reads back with drgn and crash as any other (its log holds the
warning); its trigger note names the event, the file and line of the WARN(), the task and CPU, the delay
from the event to the stop, and the registers at the WARN(), whose rip drgn symbolizes as the function that
warned. A second dump is armed for SysRq-D and fired through /proc/sysrq-trigger. A disarmed dump does not
fire, and a WARN() with nothing armed changes nothing.

The guest boots with loglevel=3: the WARN()s this test makes on purpose would otherwise reach the console,
which the harness fails on. A panic still reaches it.
"""

from __future__ import annotations

import re

import pytest
from guest_checks import read_back, state

from harness import dump as dump_mod
from harness import elfcore, validate
from harness.console import CommandResult

pytestmark = pytest.mark.qemu

WARN_PARAM = "/sys/module/test_livedump/parameters/warn"
SYSRQ_TARGET = dump_mod.GUEST_DISK_NAMES[2]


def wait_for_end(console) -> dict[str, str]:
    return dump_mod.parse_status(console.run("i=0; while ! livedump status | grep -qE '^state=(done|failed)' && "
                                             "[ $i -lt 600 ]; do sleep 1; i=$((i+1)); done; livedump status",
                                             check=True, timeout=900).output)


@pytest.fixture(scope="module")
def guest(pipeline):
    disks = dump_mod.dump_disks(pipeline.run.path("triggers"), dump_mod.memory_bytes(pipeline.options.memory),
                                extra=("sysrq",))
    with pipeline.boot(disks, tag="triggers", append=("loglevel=3",)) as console:
        if not dump_mod.has_torture(console):
            pytest.fail("the kernel has no test_livedump (CONFIG_TEST_LIVEDUMP): nothing can WARN() on request")
        yield console, disks
    for disk in disks:
        disk.path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def warned(guest):
    """Under the e2e load, armed for warn and sysrq; marker A, a WARN() from a shell whose pid is known,
    the dump, marker B."""
    console, disks = guest
    dump_mod.start_load(console)
    armed = console.run(f"livedump arm {dump_mod.DUMP_TARGET} --on warn,sysrq --reason 'armed for a warning'",
                        check=True).output
    before = dump_mod.status(console)
    markers = dump_mod.Markers.new()
    dump_mod.kmsg(console, markers.before)
    # The shell stays in the warning function for 3 s: a task that warned and is stuck there.
    pid = int(re.search(r"pid=(\d+)", console.run(f"sh -c 'echo pid=$$; echo 3000 > {WARN_PARAM}'",
                                                  check=True, timeout=60).output).group(1))
    end = wait_for_end(console)
    dump_mod.kmsg(console, markers.after)
    dump_mod.stop_load(console)
    console.run("livedump release", check=True)
    taken = dump_mod.DumpRun(CommandResult("armed", 0, ""), end, markers, "armed for a warning")
    return {"armed": armed, "before": before, "end": end, "pid": pid, "taken": taken,
            "image": dump_mod.dump_image(disks)}


def test_arming_leaves_the_dump_ready_and_says_for_what(warned):
    assert "livedump: armed for warn,sysrq" in warned["armed"], warned["armed"]
    before = warned["before"]
    assert (before["state"], before["triggers"], before["fired"]) == ("ready", "warn,sysrq", "none"), before


def test_a_warn_starts_the_dump_which_completes(warned):
    end = warned["end"]
    assert (end["state"], end["error"], end["fired"], end["triggers"]) == ("done", "0", "warn", "none"), end


def test_the_trigger_note_says_what_where_and_who(pipeline, warned):
    fired = elfcore.read(warned["image"]).trigger()
    assert fired is not None, "no NT_LIVEDUMP_TRIGGER note"
    assert fired.event == "warn"
    assert re.match(r"WARN at lib/test_livedump\.c:\d+ tld_warn_set\+", fired.where), fired.where
    assert fired.pid == warned["pid"]
    assert 0 < fired.delay_ns < 10 * 10**9, fired.delay_ns
    assert fired.regs is not None
    prog = validate.open_drgn(warned["image"], pipeline.build().vmlinux)
    assert prog.symbol(fired.regs["rip"]).name == "tld_warn_set"


def test_drgn_unwinds_the_warning_stack_from_the_notes_registers(pipeline, warned):
    """The task stayed in the function that warned (3 s) past the deferred snapshot: from the note's
    registers drgn unwinds the stack as it was at the WARN(), up through the write that set the
    parameter."""
    from drgn import Object

    fired = elfcore.read(warned["image"]).trigger()
    prog = validate.open_drgn(warned["image"], pipeline.build().vmlinux)
    names = {"rbp": "bp", "rbx": "bx", "rax": "ax", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di",
             "orig_rax": "orig_ax", "rip": "ip", "eflags": "flags", "rsp": "sp"}
    fields = {field.name for field in prog.type("struct pt_regs").members}
    regs = Object(prog, "struct pt_regs", value={names.get(k, k): v for k, v in fired.regs.items()
                                                  if names.get(k, k) in fields})
    frames = [frame.name for frame in prog.stack_trace(regs) if frame.name]
    assert frames[:1] == ["tld_warn_set"], frames
    assert "param_attr_store" in frames and "vfs_write" in frames, frames


CRASH_BT_FROM_THE_STOP = "crash: bt -a unwinds each CPU from its NT_PRSTATUS rip"


@pytest.fixture(scope="module")
def verdict(pipeline, warned):
    return read_back(pipeline, warned["taken"], warned["image"], pipeline.run.path("triggers") / "crash",
                     apart=(CRASH_BT_FROM_THE_STOP,))


@pytest.mark.xfail(strict=False, reason="known: in about half of the dumps a trigger started, crash 8.0.2's "
                   "bt -a unwinds CPU 0's stopper from a stack scan below the stop's frame instead of from its "
                   "NT_PRSTATUS rsp (seen once before in a dump taken by hand); drgn unwinds it right")
def test_crash_unwinds_every_cpu_from_the_stop(verdict):
    assert [str(c) for c in verdict.checks if c.name.startswith(CRASH_BT_FROM_THE_STOP) and not c.ok] == []


def test_crash_shows_the_trigger(verdict, warned):
    text = verdict.crash.outputs.get("livedump", "")
    assert re.search(rf"^  trigger: +warn on CPU \d+, task {warned['pid']}, [\d.]+ ms before the stop: "
                     r"WARN at lib/test_livedump\.c:\d+ tld_warn_set\+", text, re.M), text[-1500:]


def test_the_armed_dump_reads_back_with_the_warning_in_its_log(verdict):
    assert "test_livedump: a warning on request" in verdict.view.log


def test_sysrq_d_fires_a_dump_armed_for_it(pipeline, guest, warned):
    console, disks = guest
    console.run(f"livedump arm {SYSRQ_TARGET} --on sysrq --reason 'armed for sysrq'", check=True)
    console.run("echo D > /proc/sysrq-trigger", check=True)
    end = wait_for_end(console)
    console.run("livedump release", check=True)
    assert (end["state"], end["fired"]) == ("done", "sysrq"), end
    image = disks[[d.path.stem for d in disks].index("sysrq")].path
    fired = elfcore.read(image).trigger()
    assert (fired.event, fired.where) == ("sysrq", "SysRq-D"), fired
    assert elfcore.read(image).livedump().reason == "armed for sysrq"
    view = validate.read_with_drgn(image, pipeline.build().vmlinux)
    assert view.init_comm == "swapper/0" and "sysrq: Live dump" in view.log, view.log[-1000:]
    assert validate.stop_trace_problems(view, pipeline.options.smp) == []


def test_a_disarmed_dump_does_not_fire(guest, warned):
    console, _ = guest
    console.run(f"livedump arm {dump_mod.DUMP_TARGET} --on warn", check=True)
    out = console.run("livedump disarm", check=True).output
    assert "disarmed and released" in out, out
    console.run(f"echo 0 > {WARN_PARAM}; sleep 2", check=True)
    assert state(console) == "idle"


def test_arm_needs_triggers(guest, warned):
    console, _ = guest
    result = console.run(f"livedump arm {dump_mod.DUMP_TARGET}")
    assert result.status != 0 and "--on" in result.output, result.output
    result = console.run(f"livedump arm {dump_mod.DUMP_TARGET} --on panic")
    assert result.status != 0 and "unknown triggers" in result.output, result.output
    assert state(console) == "idle"


def test_lockdown_raised_after_arming_keeps_a_trigger_from_dumping(guest, warned):
    """0045, review: the work item asks lockdown again, as the ioctls do. Raises lockdown: last here."""
    console, _ = guest
    console.run(f"livedump arm {dump_mod.DUMP_TARGET} --on warn --reason 'armed before lockdown'", check=True)
    console.run("grep -q securityfs /proc/mounts || mount -t securityfs securityfs /sys/kernel/security; "
                "echo confidentiality > /sys/kernel/security/lockdown", check=True)
    console.run(f"dmesg -c > /dev/null; echo 0 > {WARN_PARAM}; sleep 3", check=True)
    # Only livedump's lines: the console must not carry the WARNING, which the harness fails on.
    log = console.run("dmesg | grep 'livedump:'; true", check=True).output
    assert re.search(r"livedump: the dump armed for WARN at lib/test_livedump\.c:\d+ \S+ could not start: -1\b",
                     log), log[-2000:]
    assert "snapshot taken" not in log
