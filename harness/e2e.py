"""The end-to-end check behind ``make test-qemu``: dump a loaded guest, read it back.

Boot with a dump disk, start a load, marker A, ``livedump dump``, marker B,
power off; then drgn and crash must both read the image and agree with what
the guest was at the instant of the dump.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import consistency, validate
from . import dump as dump_mod
from .errors import HarnessError
from .log import progress
from .pipeline import Pipeline, say

# crash with crash-patches/livedump.so loaded (it repairs what crash 8.0.2 misreads on 6.1).
# `vm` only on a kernel thread (kthreadd, pid 2): crash 8.0.2 cannot walk 6.1's maple tree.
CRASH_COMMANDS = ["sys", "help -o", "ps", "log", "bt -a", "kmem -i", "kmem -s", "files 1", "vm 2", "livedump",
                  "livedump -c"]


@dataclass
class Verdict:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, ok, detail))
        say(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")

    @property
    def failed(self) -> list[str]:
        return [f"{name}: {detail}" if detail else name for name, ok, detail in self.checks if not ok]


def dump_and_validate(p: Pipeline) -> Verdict:
    kernel = p.build()
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory), extra=("torture",))
    torture_target = dump_mod.GUEST_DISK_NAMES[2]
    verdict = Verdict()
    tortured = None
    with p.boot(disks) as console:
        uname = console.run("uname -r", check=True).output.strip()
        verdict.check("guest runs the built kernel (uname -r)", uname == kernel.release, uname)
        print(f"guest runs the pinned kernel: uname -r = {uname}")
        if console.run("command -v livedump").status != 0:
            raise HarnessError("test", "the guest has no livedump tool: is the series applied and "
                               "CONFIG_LIVEDUMP in the fragments?")
        say(f"starting the load, then dumping {p.options.memory} of guest RAM to {dump_mod.DUMP_TARGET} "
            f"({dump_mod.dump_image(disks).name})")
        dump_mod.start_load(console)
        with p.run.stage("dump"), progress("dumping"):
            taken = dump_mod.dump_with_markers(console, dump_mod.DUMP_TARGET)
        dump_mod.stop_load(console)
        # One more dump while test_livedump rewrites its structures: is it one instant?
        if dump_mod.has_torture(console):
            say(f"starting test_livedump's torture load, then dumping to {torture_target}")
            dump_mod.torture(console, True)
            with p.run.stage("torture dump"), progress("dumping under test_livedump"):
                tortured = dump_mod.dump(console, torture_target, reason="make test-qemu torture")
            dump_mod.torture(console, False)
    p.run.facts["dump"] = {"exit": taken.result.status, "counters": taken.status, "output": taken.result.output}
    verdict.check("livedump dump exits 0", taken.result.status == 0,
                  (taken.result.output.splitlines() or [""])[-1])
    if taken.result.status != 0:
        return verdict
    say(f"stop_machine pause: {taken.status.get('pause_ns', '?')} ns, "
        f"COW faults: {taken.status.get('cow_faults', '?')}, failed pages: {taken.status.get('failed_pages', '?')}")
    image = dump_mod.dump_image(disks)

    say(f"reading {image.name} with drgn")
    with p.run.stage("drgn"), progress("drgn"):
        view = validate.read_with_drgn(image, kernel.vmlinux)
    verdict.check("drgn: init_task.comm is swapper/0", view.init_comm == "swapper/0", view.init_comm)
    verdict.check("drgn: release is the built kernel's", view.release == kernel.release, view.release)
    loads = [pid for pid, comm in view.tasks if comm == dump_mod.LOAD_TASK]
    verdict.check("drgn: the load's processes are in the task list", len(loads) >= 3, f"{len(loads)} ldload tasks")
    verdict.check("drgn: marker A is in the printk buffer", taken.markers.before in view.log)
    verdict.check("drgn: marker B is not", taken.markers.after not in view.log)
    verdict.check("drgn: one NT_PRSTATUS per CPU", view.nr_prstatus == p.options.smp,
                  f"{view.nr_prstatus} notes for {p.options.smp} CPUs")

    say(f"reading {image.name} with crash and its livedump extension: {', '.join(CRASH_COMMANDS)}")
    with p.run.stage("crash"), progress("crash"):
        extension = validate.build_crash_extension(p.run.path("crash-extension"))
        session = validate.run_crash(image, kernel.vmlinux, CRASH_COMMANDS, log=p.run.path("crash.log"),
                                     extension=extension)
    verdict.check("crash: sys shows the built release", validate.crash_release(session) == kernel.release,
                  str(validate.crash_release(session)))
    log = session.outputs.get("log", "")
    verdict.check("crash: log has A and not B", taken.markers.before in log and taken.markers.after not in log)
    pid_problem = validate.crash_pid_problem(session)
    verdict.check("crash: struct pid read whole (extension loaded)", pid_problem is None, pid_problem or "")
    verdict.check("crash: ps lists the load", dump_mod.LOAD_TASK in session.outputs.get("ps", ""))
    # crash 8.0.2's stack-scanning unwinder may show a stale text address found at the saved rsp first.
    traces = validate.crash_backtraces(session.outputs.get("bt -a", ""))
    heads = [traces.get(cpu, [])[:2] for cpu in range(p.options.smp)]
    verdict.check("crash: bt -a unwinds each CPU from its NT_PRSTATUS rip",
                  len(view.stop_functions) == p.options.smp
                  and all(f in h for f, h in zip(view.stop_functions, heads, strict=True)),
                  f"first frames per CPU {heads}, rip symbols {view.stop_functions}")
    unwound = validate.stop_trace_problems(view, p.options.smp)
    verdict.check("drgn: each CPU's task unwinds from the stop instant", not unwound,
                  "; ".join(unwound or [" < ".join(t[:3]) for t in view.stop_traces]))
    reason = re.search(r"^\s+reason:\s+(.*)$", session.outputs.get("livedump", ""), re.M)
    cow = re.search(r"^\s+COW faults:\s+(\d+)", session.outputs.get("livedump", ""), re.M)
    verdict.check("crash: livedump shows the reason and counters the guest saw",
                  bool(reason and cow) and reason.group(1) == taken.reason
                  and int(cow.group(1)) == int(taken.status.get("cow_faults", -1)),
                  f"reason {reason.group(1) if reason else None!r}, COW faults {cow.group(1) if cow else None}")
    for cmd in CRASH_COMMANDS:
        bad = session.failures(cmd)
        verdict.check(f"crash: `{cmd}` reads without errors", not bad, "; ".join(bad[:3]))
    verdict.check("crash: `livedump -c` says result: OK", session.livedump_check_ok(),
                  session.outputs.get("livedump -c", "(no output)").strip()[-300:])
    if tortured is None:
        verdict.check("consistency: the kernel has test_livedump (CONFIG_TEST_LIVEDUMP)", False)
    elif tortured.result.status != 0:
        verdict.check("consistency: livedump dump under test_livedump exits 0", False, tortured.result.output[-300:])
    else:
        say(f"checking the torture invariants in {disks[2].path.name}")
        with p.run.stage("consistency"), progress("checking consistency"):
            report = consistency.read_and_check(disks[2].path, kernel.vmlinux)
        p.run.path("consistency.txt").write_text(report.text() + "\n")
        print(report.text())
        problems = consistency.protected_dump_problems(report, tortured.status)
        verdict.check("consistency: the dump under test_livedump holds every invariant", not problems,
                      "; ".join(problems) or f"0 violations, COW faults {tortured.status.get('cow_faults')}")
    say(f"compressing {image.name} with makedumpfile -c -d 31, then reading it with drgn")
    with p.run.stage("makedumpfile"), progress("makedumpfile"):
        packed = validate.makedumpfile(image, p.run.path("dump0.kdump"))
        reread = validate.read_with_drgn(packed.path, kernel.vmlinux)
    verdict.check("makedumpfile -c -d 31: drgn reads the result", reread.release == kernel.release
                  and taken.markers.before in reread.log,
                  f"{packed.elf_bytes} -> {packed.kdump_bytes} bytes, ratio {packed.ratio:.4f}")
    p.run.facts["checks"] = [{"name": n, "ok": ok, "detail": d} for n, ok, d in verdict.checks]
    return verdict
