"""The end-to-end check behind ``make test-qemu``: dump a loaded guest, read it back.

Boot with a dump disk, start a load, marker A, ``livedump dump``, marker B,
power off; then drgn and crash must both read the image and agree with what
the guest was at the instant of the dump.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import dump as dump_mod
from . import dumpcheck, validate
from .dumpcheck import Check
from .errors import HarnessError
from .log import progress
from .pipeline import Pipeline, say


@dataclass
class EndToEndChecks:
    """Every check of one make test-qemu run, in order; each is said as it is made."""

    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> None:
        self.checks.append(check)
        say(f"{check.verdict} {check}")

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.add(Check(name, ok, detail))

    @property
    def failed(self) -> list[str]:
        return [str(c) for c in self.checks if c.failed]

    @property
    def skipped(self) -> list[str]:
        return [str(c) for c in self.checks if c.skipped]


@contextlib.contextmanager
def _timed(p: Pipeline, name: str) -> Iterator[None]:
    """A stage of the run (its time in result.json), with progress lines while it lasts."""
    with p.run.stage(name), progress(name):
        yield


def dump_and_validate(p: Pipeline) -> EndToEndChecks:
    kernel = p.build()
    disks = dump_mod.dump_disks(p.run.directory, dump_mod.memory_bytes(p.options.memory), extra=("torture",))
    torture_target = dump_mod.GUEST_DISK_NAMES[2]
    verdict = EndToEndChecks()
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

    arch = p.options.arch
    if arch.reads("crash"):
        say(f"reading {image.name} with drgn, then with crash and its livedump extension: "
            f"{', '.join(dumpcheck.CRASH_COMMANDS)}")
    else:
        say(f"reading {image.name} with drgn; not with crash: {arch.reader_skip_reason('crash')}")
    saw = dumpcheck.GuestSaw.of(taken, kernel.release, p.options.smp)
    checked = dumpcheck.check_dump(image, kernel.vmlinux, saw, crash_dir=p.run.directory,
                                   stage=lambda name: _timed(p, name), arch=arch)
    for check in checked.checks:
        verdict.add(check)
    if tortured is None:
        verdict.check("consistency: the kernel has test_livedump (CONFIG_TEST_LIVEDUMP)", False)
    elif tortured.result.status != 0:
        verdict.check("consistency: livedump dump under test_livedump exits 0", False, tortured.result.output[-300:])
    else:
        say(f"checking the torture invariants in {disks[2].path.name}")
        with p.run.stage("consistency"), progress("checking consistency"):
            torture = dumpcheck.check_torture_dump(disks[2].path, kernel.vmlinux, tortured.status, arch=arch)
        p.run.path("consistency.txt").write_text(torture.report.text() + "\n")
        print(torture.report.text())
        verdict.add(torture.check)
    makedumpfile_check = "makedumpfile -c -d 31: drgn reads the result"
    if not arch.reads("makedumpfile"):
        verdict.add(dumpcheck.Check.skip(makedumpfile_check, arch.reader_skip_reason("makedumpfile")))
    else:
        say(f"compressing {image.name} with makedumpfile -c -d 31, then reading it with drgn")
        with p.run.stage("makedumpfile"), progress("makedumpfile"):
            packed = validate.makedumpfile(image, p.run.path("dump0.kdump"))
            reread = validate.read_with_drgn(packed.path, kernel.vmlinux)
        verdict.check(makedumpfile_check, reread.release == kernel.release
                      and taken.markers.before in reread.log,
                      f"{packed.elf_bytes} -> {packed.kdump_bytes} bytes, ratio {packed.ratio:.4f}")
    # "skipped" only where a check was skipped: an x86-64 run's result.json has the words it always had.
    p.run.facts["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail, **({"skipped": True} if c.skipped
                              else {})} for c in verdict.checks]
    return verdict
