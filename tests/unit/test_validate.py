"""The host side of dump validation that needs no real dump: crash output handling, guest status parsing."""

from __future__ import annotations

import pytest

from harness import dump, validate

FAKE_CRASH = r"""#!/bin/sh
# Stands in for crash: prints a banner, then answers each stdin line like crash -s would.
echo "crash 8.0.2 banner"
while IFS= read -r line; do
    case "$line" in
    '!'*) sh -c "${line#!}" ;;
    sys) printf '      KERNEL: vmlinux\n     RELEASE: 6.1.192-livedump\n' ;;
    log) echo "[ 1.0] $FAKE_LOG" ;;
    "bt -a") echo "bt: read error: kernel virtual address: ffff8880 type: \"stack\"" ;;
    exit) exit 0 ;;
    *) echo "output of $line" ;;
    esac
done
"""


@pytest.fixture
def fake_crash(tmp_path, monkeypatch):
    crash = tmp_path / "bin" / "crash"
    crash.parent.mkdir()
    crash.write_text(FAKE_CRASH)
    crash.chmod(0o755)
    monkeypatch.setenv("PATH", f"{crash.parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_LOG", "marker-A")
    return crash


def test_run_crash_splits_output_per_command(fake_crash, tmp_path):
    session = validate.run_crash(tmp_path / "dump", tmp_path / "vmlinux", ["sys", "ps", "log", "bt -a"],
                                 log=tmp_path / "crash.log")
    assert validate.crash_release(session) == "6.1.192-livedump"
    assert session.outputs["ps"].strip() == "output of ps"
    assert "marker-A" in session.outputs["log"]
    assert "banner" not in "".join(session.outputs.values())
    assert session.failures("ps") == []
    assert session.failures("bt -a") and "read error" in session.failures("bt -a")[0]
    assert "bt -a" in (tmp_path / "crash.log").read_text()


def test_crash_that_cannot_open_the_dump_is_an_error(tmp_path, monkeypatch):
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'crash: vmlinux and dump do not match!' >&2\nexit 1\n")
    crash.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(validate.ValidationError, match="crash could not open"):
        validate.run_crash(tmp_path / "dump", tmp_path / "vmlinux", ["sys"])


def test_missing_crash_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Exception, match="install the Debian package crash"):
        validate.run_crash(tmp_path / "dump", tmp_path / "vmlinux", ["sys"])


def test_status_lines_from_the_tool():
    text = "livedump: 10/20 pages\nstate=done\npause_ns=1234\nnot a status line\ncow_faults=5"
    assert dump.parse_status(text) == {"state": "done", "pause_ns": "1234", "cow_faults": "5"}


@pytest.mark.parametrize("spec,value", [("512M", 512 << 20), ("1G", 1 << 30), ("4096", 4096)])
def test_memory_sizes(spec, value):
    assert dump.memory_bytes(spec) == value


def test_dump_disk_is_big_enough_for_ram_and_headers(tmp_path):
    disks = dump.dump_disks(tmp_path, 512 << 20, small=True)
    by_name = dict(zip(dump.GUEST_DISK_NAMES, disks, strict=False))
    assert by_name[dump.DUMP_TARGET].size > 512 << 20
    assert by_name[dump.SMALL_TARGET].size < 512 << 20
    assert dump.dump_image(disks) == by_name[dump.DUMP_TARGET].path


def test_markers_differ_between_dumps():
    a, b = dump.Markers.new(), dump.Markers.new()
    assert a.before != a.after and a.before != b.before


BT_A = """PID: 12       TASK: ffff8880010fe400  CPU: 0    COMMAND: "migration/0"
 #0 [ffff888001113e20] ld_stop_fn at ffffffffa64b4c66
 #1 [ffff888001113f18] kthread at ffffffffa645d988
 #2 [ffff888001113f50] ret_from_fork at ffffffffa640119f

PID: 15       TASK: ffff888001103c00  CPU: 1    COMMAND: "migration/1"
 #0 [ffff888001123e68] __schedule at ffffffffa66ac274
 #1 [ffff888001123e70] stop_one_cpu at ffffffffa64b6501
    RIP: 0000000000460a63  RSP: 00007ffd8612b398  RFLAGS: 00000202
"""


def test_backtraces_per_cpu_in_frame_order():
    traces = validate.crash_backtraces(BT_A)
    assert traces == {0: ["ld_stop_fn", "kthread", "ret_from_fork"], 1: ["__schedule", "stop_one_cpu"]}
    assert validate.crash_backtraces("bt: read of stack at fffffe0000014000 failed") == {}


def test_extension_is_loaded_before_the_commands(fake_crash, tmp_path):
    session = validate.run_crash(tmp_path / "dump", tmp_path / "vmlinux", ["ps"], extension=tmp_path / "x.so")
    assert list(session.outputs) == [f"extend {tmp_path / 'x.so'}", "ps"]


def stop_view(functions: list[str], traces: list[list[str]]) -> validate.DrgnView:
    return validate.DrgnView(release="6.1", init_comm="swapper/0", tasks=[], log="", nr_prstatus=len(functions),
                             prstatus_pids=[], stop_functions=functions, stop_traces=traces)


def test_a_trace_from_the_stop_rip_through_the_stopper_is_no_problem():
    view = stop_view(["ld_stop_fn"] * 2, [["ld_stop_fn", "multi_cpu_stop", "cpu_stopper_thread"]] * 2)
    assert validate.stop_trace_problems(view, 2) == []


def test_a_trace_from_elsewhere_is_a_problem_per_cpu():
    view = stop_view(["ld_stop_fn", "ld_stop_fn"],
                     [["ld_stop_fn", "multi_cpu_stop"], ["__schedule", "schedule", "smpboot_thread_fn"]])
    assert validate.stop_trace_problems(view, 2) == [
        "CPU 1: rip in ld_stop_fn, trace __schedule < schedule < smpboot_thread_fn"]
    view = stop_view(["ld_stop_fn"], [["ld_stop_fn", "kthread"]])
    assert validate.stop_trace_problems(view, 1) == ["CPU 0: rip in ld_stop_fn, trace ld_stop_fn < kthread"]


def test_missing_traces_are_a_problem_not_a_pass():
    assert validate.stop_trace_problems(stop_view([], []), 2) == ["0 traces and 0 stop rips for 2 CPUs"]
    assert validate.stop_trace_problems(stop_view(["ld_stop_fn"], [[]]), 1) == [
        "CPU 0: rip in ld_stop_fn, trace (none)"]


def test_a_crash_command_that_printed_nothing_failed():
    session = validate.CrashSession(outputs={"ps": "   PID  PPID\n", "kmem -s": "  \n"})
    assert session.failures("ps") == []
    assert session.failures("kmem -s") and "printed nothing" in session.failures("kmem -s")[0]
    # crash died before it: the command is not in the transcript at all
    assert session.failures("vm 2") and "printed nothing" in session.failures("vm 2")[0]


def test_livedump_check_needs_its_own_verdict():
    ok = validate.CrashSession(outputs={"livedump -c": "  pages: 131072\n  result: OK\n"})
    failed = validate.CrashSession(outputs={"livedump -c": "  pages: 131072\n  result: FAILED\n"})
    silent = validate.CrashSession(outputs={"livedump -c": "  pages: 131072\n"})
    assert ok.livedump_check_ok()
    assert not failed.livedump_check_ok() and not silent.livedump_check_ok()
    assert not validate.CrashSession().livedump_check_ok()


HELP_O = """                  pid_numbers: %d
                        pid: %d
"""


def test_crash_pid_problem_reads_help_o():
    whole = validate.CrashSession(outputs={"help -o": HELP_O % (96, 112)})
    short = validate.CrashSession(outputs={"help -o": HELP_O % (96, 96)})
    assert validate.crash_pid_problem(whole) is None
    assert "96 bytes" in validate.crash_pid_problem(short)


def test_crash_pid_problem_cannot_tell_without_the_sizes():
    """Fails closed: no sizes in `help -o` (or no `help -o` at all) is a problem, not a pass."""
    for outputs in ({"help -o": "       task_struct_pid: 1488\n"}, {}):
        problem = validate.crash_pid_problem(validate.CrashSession(outputs=outputs))
        assert problem and problem.startswith("cannot tell")


def test_a_warning_in_the_dumped_kernels_log_is_not_a_crash_failure():
    """A dump an armed WARN() started holds the kernel's WARNING: in its log; crash's own warnings (no
    printk timestamp) still count."""
    session = validate.CrashSession(outputs={
        "log": "[    1.942753] WARNING: CPU: 0 PID: 62 at lib/test_livedump.c:559 tld_warn_set+0xc/0x20\n"
               "[    1.942800] Call Trace:\n",
        "ps": "WARNING: cannot find NT_PRSTATUS note for cpu: 1\n   PID  PPID\n"})
    assert session.failures("log") == []
    assert session.failures("ps") and "NT_PRSTATUS" in session.failures("ps")[0]
