"""Reading a dump back on the host with drgn and with Debian's crash.

Both readers are used unmodified; a dump passes only if both can make sense
of it. The raw disk image the guest wrote (ELF at offset 0, then whatever the
disk held) is opened directly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import elfcore
from .errors import HarnessError, ToolMissing

# What crash prints when it cannot read or interpret part of a dump.
CRASH_FAILURES = re.compile(r"read error|invalid|cannot|seek error|not found in|no such|WARNING: ", re.I)
# A line of the dumped kernel's own log, as crash's `log` prints it: a WARNING: there is the kernel's (a dump
# an armed WARN() started holds one), not crash's.
KERNEL_LOG_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")


class ValidationError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("validate", message, detail=detail)


@dataclass
class DrgnView:
    release: str
    init_comm: str
    tasks: list[tuple[int, str]]
    log: str
    nr_prstatus: int
    prstatus_pids: list[int]
    # Per CPU: the function each CPU was executing at the stop instant (NT_PRSTATUS pc: x86-64 rip, arm64 pc).
    stop_functions: list[str] = field(default_factory=list)
    # Per CPU: drgn's stack trace (function names) of the task running there, from its NT_PRSTATUS registers;
    # call frames only: a function inlined at the saved rip (crash_setup_regs() in some builds) is not a frame.
    stop_traces: list[list[str]] = field(default_factory=list)


def open_drgn(dump: Path, vmlinux: Path):
    """A drgn Program for the dump with vmlinux's debug info; an error if vmlinux is not its kernel."""
    import drgn

    prog = drgn.Program()
    try:
        prog.set_core_dump(str(dump))
        prog.load_debug_info([str(vmlinux)], default=False, main=False)
    except (drgn.FaultError, drgn.MissingDebugInfoError, ValueError, OSError) as e:
        raise ValidationError(f"drgn cannot open {dump} with {vmlinux}: {e}") from None
    try:
        prog["init_task"]
    except KeyError:
        raise ValidationError(f"{vmlinux} is not the kernel of {dump} (drgn found no matching build ID)") from None
    return prog


def read_with_drgn(dump: Path, vmlinux: Path) -> DrgnView:
    import drgn
    from drgn.helpers.linux.pid import find_task, for_each_task
    from drgn.helpers.linux.printk import get_printk_records

    prog = open_drgn(dump, vmlinux)
    tasks = [(int(t.pid), t.comm.string_().decode(errors="replace")) for t in for_each_task(prog)]
    log = "\n".join(r.text.decode(errors="replace") for r in get_printk_records(prog))
    try:
        prstatus = elfcore.read(dump).prstatus()
    except elfcore.NotAnElfDump:
        prstatus = []  # a kdump-compressed file (makedumpfile): drgn reads it, elfcore does not
    stop_functions, stop_traces = [], []
    for note in prstatus:
        try:
            stop_functions.append(prog.symbol(note.pc).name)
        except LookupError:
            stop_functions.append(f"{note.pc:#x}")
        try:
            trace = prog.stack_trace(find_task(prog, note.pid)) if note.pid else []
            stop_traces.append([frame.name or f"{frame.pc:#x}" for frame in trace if not frame.is_inline])
        except (drgn.FaultError, ValueError, LookupError):
            stop_traces.append([])

    return DrgnView(
        release=prog["init_uts_ns"].name.release.string_().decode(),
        init_comm=prog["init_task"].comm.string_().decode(),
        tasks=tasks,
        log=log,
        nr_prstatus=len(prstatus),
        prstatus_pids=[p.pid for p in prstatus],
        stop_functions=stop_functions,
        stop_traces=stop_traces,
    )


def stop_trace_problems(view: DrgnView, cpus: int) -> list[str]:
    """Does each CPU's task unwind from the instant of the stop: from the rip of its NT_PRSTATUS note, up
    through stop_machine's multi_cpu_stop()? One line per CPU where it does not."""
    if len(view.stop_traces) != cpus or len(view.stop_functions) != cpus:
        return [f"{len(view.stop_traces)} traces and {len(view.stop_functions)} stop rips for {cpus} CPUs"]
    problems = []
    for cpu, (function, frames) in enumerate(zip(view.stop_functions, view.stop_traces, strict=True)):
        if frames[:1] != [function] or "multi_cpu_stop" not in frames:
            problems.append(f"CPU {cpu}: rip in {function}, trace {' < '.join(frames[:4]) or '(none)'}")
    return problems


@dataclass
class CrashSession:
    outputs: dict[str, str] = field(default_factory=dict)
    transcript: str = ""

    def failures(self, command: str) -> list[str]:
        """crash's error lines in the command's output; a command that printed nothing failed too: crash
        died before it, or never ran it."""
        output = self.outputs.get(command, "")
        if not output.strip():
            return [f"`{command}` printed nothing (crash exited or never ran it)"]
        return [ln for ln in output.splitlines() if CRASH_FAILURES.search(ln) and not KERNEL_LOG_LINE.match(ln)]

    def livedump_check_ok(self) -> bool:
        """Did the extension's ``livedump -c`` end with its own verdict, ``result: OK``?"""
        return re.search(r"^\s*result: OK\s*$", self.outputs.get("livedump -c", ""), re.M) is not None


def kaslr_option(dump: Path) -> list[str]:
    """crash 8.0.2 finds the KASLR offset itself only when vmlinux has
    ``module_load_offset``; the dump's VMCOREINFO says it exactly."""
    try:
        offset = elfcore.read(dump).vmcoreinfo().get("KERNELOFFSET")
    except (elfcore.NotAnElfDump, OSError):
        return []
    return [f"--kaslr=0x{offset}"] if offset else []


CRASH_PATCHES = Path(__file__).resolve().parent.parent / "crash-patches"


def build_crash_extension(out_dir: Path) -> Path:
    """Build crash-patches/livedump.so into out_dir, as a user would (make)."""
    if shutil.which("crash") is None:
        raise ToolMissing("validate", "crash", "crash")
    if not Path("/usr/include/crash/defs.h").is_file():
        raise ValidationError("crash's headers are missing (/usr/include/crash/defs.h): apt install crash")
    out_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["make", "-s", "-C", str(CRASH_PATCHES), f"O={out_dir}", "all"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ValidationError("building the crash extension failed", detail=(r.stdout + r.stderr)[-3000:])
    return out_dir / "livedump.so"


def run_crash(dump: Path, vmlinux: Path, commands: list[str], *, timeout: float = 300.0,
              log: Path | None = None, kaslr_from: Path | None = None,
              extension: Path | None = None) -> CrashSession:
    """Run crash in batch mode; split its output per command with shell-escape markers.

    With ``extension``, crash first loads it (``extend``); its output is
    under that command's name like any other.
    """
    crash = shutil.which("crash")
    if crash is None:
        raise ToolMissing("validate", "crash", "crash")
    if extension is not None:
        commands = [f"extend {extension}", *commands]
    script = []
    for i, cmd in enumerate(commands):
        script += [f"!echo '@@LIVEDUMP-CMD-{i}@@'", cmd]
    script += [f"!echo '@@LIVEDUMP-CMD-{len(commands)}@@'", "exit"]
    argv = [crash, "-s", "--no_scroll", *kaslr_option(kaslr_from or dump), str(vmlinux), str(dump)]
    try:
        r = subprocess.run(argv, input="\n".join(script) + "\n", capture_output=True, text=True,
                           timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired as e:
        raise ValidationError(f"crash did not finish in {timeout:.0f}s", detail=str(e.stdout or "")[-3000:]) from None
    transcript = r.stdout + r.stderr
    if log is not None:
        log.write_text(f"$ {' '.join(argv)}\n" + "\n".join(script) + "\n---\n" + transcript)
    parts = re.split(r"@@LIVEDUMP-CMD-(\d+)@@\n?", r.stdout)
    outputs: dict[str, str] = {}
    # parts: [startup, "0", out0, "1", out1, ...]; output i belongs to commands[i]
    for idx in range(1, len(parts) - 1, 2):
        i = int(parts[idx])
        if i < len(commands):
            outputs[commands[i]] = parts[idx + 1]
    if not outputs:
        raise ValidationError(f"crash could not open {dump} (exit {r.returncode})", detail=transcript[-3000:])
    return CrashSession(outputs, transcript)


def crash_release(session: CrashSession) -> str | None:
    m = re.search(r"^\s*RELEASE:\s*(\S+)", session.outputs.get("sys", ""), re.M)
    return m.group(1) if m else None


def crash_pid_problem(session: CrashSession) -> str | None:
    """Why crash reads struct pid too short to reach numbers[0], or that it cannot tell; None when it reads
    it whole.

    crash 8.0.2 reads SIZE(pid) bytes of each struct pid and then looks at
    numbers[0].ns. Since "pid: Replace struct pid 1-element array with
    flex-array" (in Debian's 6.1.y too) numbers[] starts at SIZE(pid), so
    crash reads past its buffer, matches no pid and its task table holds
    only the idle and active tasks (QEMU's own dumps show it the same way).
    Needs "help -o" among the session's commands: without the two sizes there, it cannot tell, and says so.
    """
    text = session.outputs.get("help -o", "")
    numbers = re.search(r"^\s+pid_numbers:\s+(\d+)$", text, re.M)
    size = re.search(r"^\s+pid:\s+(\d+)$", text, re.M)
    if not (numbers and size):
        return "cannot tell: `help -o` shows no pid_numbers offset and pid size"
    if int(numbers.group(1)) >= int(size.group(1)):
        return f"crash reads {size.group(1)} bytes of struct pid, numbers[] starts at {numbers.group(1)}"
    return None


def crash_backtraces(text: str) -> dict[int, list[str]]:
    """``bt -a`` output -> {cpu: [function of frame #0, #1, ...]}."""
    traces: dict[int, list[str]] = {}
    frames: list[str] | None = None
    for line in text.splitlines():
        head = re.match(r"PID:\s+\d+\s+TASK:\s+[0-9a-f]+\s+CPU:\s+(\d+)", line)
        if head:
            frames = traces.setdefault(int(head.group(1)), [])
            continue
        frame = re.match(r"\s*#\d+ \[[0-9a-f]+\] (\S+) at ", line)
        if frame and frames is not None:
            frames.append(frame.group(1))
    return traces


@dataclass
class Compressed:
    path: Path
    elf_bytes: int
    kdump_bytes: int
    output: str

    @property
    def ratio(self) -> float:
        return self.kdump_bytes / self.elf_bytes


def makedumpfile(dump: Path, out: Path, *, level: int = 31, timeout: float = 600.0) -> Compressed:
    """Filter and compress a livedump ELF into a kdump-compressed file.

    makedumpfile takes the layout from the dump's VMCOREINFO alone (no -x):
    with a vmlinux it looks for page_offset_base, which a kernel without
    RANDOMIZE_MEMORY does not have. makedumpfile 1.7.2 warns that 6.1 is
    newer than it knows, and converts it correctly all the same.
    """
    tool = shutil.which("makedumpfile")
    if tool is None:
        raise ToolMissing("validate", "makedumpfile", "makedumpfile")
    out.unlink(missing_ok=True)
    r = subprocess.run([tool, "-c", "-d", str(level), str(dump), str(out)], capture_output=True, text=True,
                       timeout=timeout, errors="replace")
    if r.returncode != 0 or not out.is_file():
        raise ValidationError(f"makedumpfile failed (exit {r.returncode})", detail=(r.stdout + r.stderr)[-3000:])
    return Compressed(out, elfcore.read(dump).end, out.stat().st_size, r.stdout + r.stderr)
