"""The crash extension (crash-patches/) on a real livedump and on vmcores that are not livedumps.

One guest: a dump under load onto the dump disk, then QEMU's own
dump-guest-memory (QMP, paging=false) of the same guest as a non-livedump
ELF vmcore. Debian's crash then loads livedump.so and must show what the
livedump tool printed in the guest.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from harness import dump as dump_mod
from harness import elfcore, extract

pytestmark = pytest.mark.qemu

CRASH_PATCHES = Path(__file__).resolve().parents[2] / "crash-patches"
REASON = "crash extension test"
CMD_MARK = "@@LIVEDUMP-EXT-{}@@"


def qmp_dump_guest_memory(sock: Path, out: Path, timeout: float = 900.0) -> None:
    """QMP dump-guest-memory (paging=false): an ELF vmcore written by QEMU, with no LIVEDUMP note."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        f = s.makefile("rwb")
        json.loads(f.readline())  # greeting

        def execute(name: str, **arguments) -> object:
            f.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    raise RuntimeError(f"QMP closed the connection during {name}")
                msg = json.loads(line)
                if "error" in msg:
                    raise RuntimeError(f"QMP {name}: {msg['error']}")
                if "return" in msg:
                    return msg["return"]

        execute("qmp_capabilities")
        execute("dump-guest-memory", paging=False, protocol=f"file:{out}")


@pytest.fixture(scope="module")
def extension(tmp_path_factory) -> Path:
    if shutil.which("crash") is None or not Path("/usr/include/crash/defs.h").is_file():
        pytest.fail("crash and its headers are needed (Debian: apt install crash)")
    out = tmp_path_factory.mktemp("crash-ext")
    r = subprocess.run(["make", "-C", str(CRASH_PATCHES), f"O={out}", "all", "prog"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="module")
def dumped(pipeline):
    if not (pipeline.build().headers / "linux" / "livedump.h").is_file():
        pytest.fail("the built kernel has no livedump uapi: series or fragment missing")
    directory = pipeline.run.directory / "crash-extension"
    directory.mkdir(parents=True, exist_ok=True)
    disks = dump_mod.dump_disks(directory, dump_mod.memory_bytes(pipeline.options.memory))
    target = dump_mod.DUMP_TARGET
    image = dump_mod.dump_image(disks)
    qemu_core = directory / "qemu-dump-guest-memory.core"
    with pipeline.boot(disks) as console:
        dump_mod.start_load(console)
        taken = dump_mod.dump_with_markers(console, target, reason=REASON)
        dump_mod.stop_load(console)
        qmp_dump_guest_memory(pipeline.run.path("qmp.sock"), qemu_core)
    assert taken.result.status == 0, taken.result.output
    yield {"taken": taken, "image": image, "qemu_core": qemu_core, "directory": directory}
    qemu_core.unlink(missing_ok=True)  # 512 MiB of guest RAM: keep the logs, not the copy


def crash_session(vmlinux: Path, dump: Path, commands: list[str], *, kaslr: str, log: Path,
                  timeout: float = 600.0) -> tuple[int, dict[str, str], str]:
    """crash in batch mode; (exit status, output of each command that ran, whole transcript)."""
    script = []
    for i, cmd in enumerate(commands):
        script += [f"!echo '{CMD_MARK.format(i)}'", cmd]
    script += [f"!echo '{CMD_MARK.format(len(commands))}'", "exit"]
    # A module-less KASLR kernel needs the offset given (see kernel-traps.md): KERNELOFFSET from
    # VMCOREINFO, or "auto" (crash finds it, e.g. from the IDT in QEMU's CPU-state notes).
    argv = ["crash", "-s", "--no_scroll", f"--kaslr={kaslr}", str(vmlinux), str(dump)]
    r = subprocess.run(argv, input="\n".join(script) + "\n", capture_output=True, text=True, timeout=timeout,
                       errors="replace")
    transcript = r.stdout + r.stderr
    log.write_text(f"$ {' '.join(argv)}\n" + "\n".join(script) + "\n---\n" + transcript + f"\n[exit {r.returncode}]\n")
    parts = re.split(r"@@LIVEDUMP-EXT-(\d+)@@\n?", r.stdout)
    outputs = {commands[int(parts[i])]: parts[i + 1] for i in range(1, len(parts) - 1, 2)
               if int(parts[i]) < len(commands)}
    return r.returncode, outputs, transcript


def field(output: str, name: str) -> str:
    m = re.search(rf"^  {re.escape(name)}:\s+(\S+)", output, re.M)
    assert m, f"no `{name}:` in\n{output}"
    return m.group(1)


@pytest.fixture(scope="module")
def session(pipeline, dumped, extension):
    core = elfcore.read(dumped["image"])
    kaslr = "0x" + core.vmcoreinfo().get("KERNELOFFSET", "0")
    commands = [f"extend {extension / 'livedump.so'}", "livedump", "livedump -c", "help livedump"]
    rc, outputs, transcript = crash_session(pipeline.build().vmlinux, dumped["image"], commands, kaslr=kaslr,
                                            log=dumped["directory"] / "crash-livedump.log")
    assert "livedump -c" in outputs, f"crash did not run the commands (exit {rc}):\n{transcript[-3000:]}"
    return {"core": core, "kaslr": kaslr, "outputs": outputs}


def test_livedump_shows_what_the_tool_printed(dumped, session):
    status = dumped["taken"].status
    out = session["outputs"]["livedump"]
    assert "LIVEDUMP note version 5" in out, out
    note = session["core"].livedump()
    left_out = re.search(r"^  left out:\s+(\S+) \((\d+) pages in no PT_LOAD segment\)$", out, re.M)
    assert left_out and left_out.group(1) == ",".join(note.excluded_classes) == status["exclude"], out
    assert int(left_out.group(2)) == note.excluded_pages
    assert field(out, "reserve") == status["reserve_pages"] == str(note.reserve_pages)
    assert field(out, "slowest fault") == str(note.fault_max_ns)
    assert f"  reason:            {REASON}\n" in out
    assert field(out, "pause") == status["pause_ns"]
    assert field(out, "COW faults") == status["cow_faults"]
    assert field(out, "failed pages") == status["failed_pages"]
    # The extension's reading of the note against the harness's own ELF reader's.
    assert field(out, "pages total") == str(note.pages_total)
    assert field(out, "stop copied") == str(note.stop_copied)
    assert field(out, "zero pages") == str(note.zero_pages)
    assert field(out, "protected entries") == str(note.protected_entries)
    # Version 4: of those, the vmalloc and module ones (protect_aliases is on by default).
    assert note.alias_entries and field(out, "alias entries") == str(note.alias_entries)
    # Version 5: user mappings protected too (protect_user is on by default), how many table entries.
    assert note.user_protected and field(out, "user entries") == str(note.user_entries)
    assert re.search(r"^  start time:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} UTC \(\d+ ns\)$", out, re.M)


def test_livedump_lists_the_captured_cpus(pipeline, session):
    out = session["outputs"]["livedump"]
    n = pipeline.options.smp
    assert f"  CPUs captured:     {n} NT_PRSTATUS note{'s' if n != 1 else ''}\n" in out
    assert "MISMATCH" not in out
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+([0-9a-f]{16})\s+([0-9a-f]{16})(.*)$", out, re.M)
    assert [int(r[0]) for r in rows] == list(range(n)), out
    regs = session["core"].prstatus()
    for (_cpu, pid, rip, rsp, _extra), pr in zip(rows, regs, strict=True):
        assert (int(pid), int(rip, 16), int(rsp, 16)) == (pr.pid, pr.regs["rip"], pr.regs["rsp"])
    # The registers are taken in the stop_machine callback: crash names the stopper task.
    assert all("migration/" in r[4] for r in rows), out


def test_check_passes_and_sizes_match_the_tool(dumped, session):
    out = session["outputs"]["livedump -c"]
    assert "PT_LOAD: all" in out and "present and readable" in out, out
    assert "inconsistent pages: none" in out
    assert out.rstrip().endswith("result: OK")
    needed = int(re.search(r"the ELF data needs (\d+) bytes", out).group(1))
    assert needed == session["core"].end
    if "bytes_written" in dumped["taken"].status:
        assert int(dumped["taken"].status["bytes_written"]) >= needed


def test_help(session):
    assert "livedump [-c] [-e]" in session["outputs"]["help livedump"]


def test_a_kdump_style_vmcore_without_the_note_is_refused(pipeline, dumped, extension, session):
    """The same real dump with the LIVEDUMP note renamed: crash opens it, the extension refuses it."""
    copy = dumped["directory"] / "no-livedump-note.img"
    subprocess.run(["cp", "--sparse=always", str(dumped["image"]), str(copy)], check=True)
    try:
        with open(copy, "r+b") as f:
            head = f.read(1 << 20)
            at = head.find(b"LIVEDUMP\0")
            assert at > 0
            f.seek(at)
            f.write(b"NOTOURS\0")
        commands = [f"extend {extension / 'livedump.so'}", "livedump", "livedump -c", "livedump -e", "sys"]
        rc, outputs, transcript = crash_session(pipeline.build().vmlinux, copy, commands, kaslr=session["kaslr"],
                                                log=dumped["directory"] / "crash-not-a-livedump.log")
    finally:
        copy.unlink(missing_ok=True)
    expected = f"livedump: {copy} is not a livedump: no LIVEDUMP note (kernel vmcore (kdump or similar))"
    assert expected in outputs["livedump"], transcript[-3000:]
    assert expected in outputs["livedump -c"]
    assert "LIVEDUMP note version" not in outputs["livedump"]
    # -e ends crash with status 1: `sys` never runs.
    assert rc == 1
    assert "sys" not in outputs


def test_qemu_dump_guest_memory_is_not_a_livedump(pipeline, dumped, extension, session):
    core = elfcore.read(dumped["qemu_core"])
    assert core.livedump() is None and core.loads
    r = subprocess.run([str(extension / "test-livedump-note"), str(dumped["qemu_core"])], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert "is not a livedump: no LIVEDUMP note (QEMU dump-guest-memory vmcore)" in r.stderr
    commands = [f"extend {extension / 'livedump.so'}", "livedump", "livedump -c"]
    # QEMU's core has no VMCOREINFO: the KASLR offset alone does not do (no phys_base), "auto" does.
    rc, outputs, transcript = crash_session(pipeline.build().vmlinux, dumped["qemu_core"], commands, kaslr="auto",
                                            log=dumped["directory"] / "crash-qemu.log")
    assert "livedump" in outputs, f"crash could not open QEMU's dump (exit {rc}):\n{transcript[-3000:]}"
    assert "is not a livedump: no LIVEDUMP note (QEMU dump-guest-memory vmcore)" in outputs["livedump"], transcript
    assert "is not a livedump" in outputs["livedump -c"]
    # The crash repairs are not livedump-specific: QEMU's dump of the same 6.1 kernel gets its tasks back too.
    assert "task table rebuilt" in outputs[commands[0]], outputs[commands[0]]


def test_crash_reads_the_extracted_file_too(pipeline, dumped, extension, session):
    """`harness extract` cuts the dump out of the disk; crash opens the file like the raw image."""
    out = dumped["directory"] / "extracted.vmcore"
    try:
        size = extract.extract(dumped["image"], out, progress=None, force=True)
        assert size == session["core"].end == out.stat().st_size
        commands = [f"extend {extension / 'livedump.so'}", "sys", "ps", "livedump -c"]
        rc, outputs, transcript = crash_session(pipeline.build().vmlinux, out, commands, kaslr=session["kaslr"],
                                                log=dumped["directory"] / "crash-extracted.log")
    finally:
        out.unlink(missing_ok=True)
    assert "livedump -c" in outputs, f"crash could not open the extracted file (exit {rc}):\n{transcript[-3000:]}"
    assert pipeline.build().release in outputs["sys"]
    assert dump_mod.LOAD_TASK in outputs["ps"]
    assert outputs["livedump -c"].rstrip().endswith("result: OK"), outputs["livedump -c"]
    assert f"file: {size} bytes" in outputs["livedump -c"]
