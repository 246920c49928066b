"""The series on an arm64 guest (QEMU virt, cortex-a57, GICv3 with pseudo-NMIs, TCG), whatever LIVEDUMP_ARCH
says: what `make test-qemu ARCH=arm64` checks, then the torture load's verdicts with their negative control.

arm64 write-protects the linear map and the kernel image's data only (livedump.rst, "arm64"): the vmalloc,
module and user invariants are its known gaps, named in every report, and every other invariant must hold
in each protected dump. Without write protection (--test-no-wrprotect) the checker must find the dump
torn in at least MIN_TORN_UNPROTECTED of DUMPS_PER_MODE dumps, or it proves nothing. crash and
makedumpfile are skipped (Debian's read x86-64 dumps only); drgn reads everything.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from guest_checks import dump_disks_in

from harness import arch, consistency, e2e
from harness import dump as dump_mod
from harness.pipeline import Pipeline

pytestmark = pytest.mark.qemu

DUMPS_PER_MODE = 5
MIN_TORN_UNPROTECTED = 4
# Invariants behind mappings arm64 does not protect, or without a source there (no NMI writer): known gaps,
# never counted. Every other finding must hold in a protected dump.
ARM64_GAPS = {"sweep (vmalloc)", "sweep (vmap)", "sweep (module data)", "user sweep (anonymous)",
              "user sweep (shared)", "NMI pair"}
MUST_HOLD = {"sweep (page allocator)", "pair under spinlock", "list under spinlock", "per-cpu pair",
             "hard-IRQ pair"}


@pytest.fixture(scope="module")
def arm64(pipeline) -> Pipeline:
    """The session's pipeline, for an arm64 guest: its own run directory, build and initramfs."""
    options = replace(pipeline.options, arch=arch.ARM64, accel="tcg")
    p = Pipeline(pipeline.run, options, paths=pipeline.paths)
    p.build()
    return p


@pytest.fixture(scope="module")
def end_to_end(arm64, show):
    verdict = e2e.dump_and_validate(arm64)
    show("arm64 make test-qemu checks:\n" + "\n".join(f"  {c.verdict} {c}" for c in verdict.checks))
    return verdict


def test_arm64_dump_is_read_by_drgn_from_the_instant_of_the_stop(end_to_end):
    """Markers A in, B out, one NT_PRSTATUS per CPU unwinding to the stop, the torture dump consistent but for
    arm64's known gaps: every check make test-qemu makes, none failed."""
    names = [c.name for c in end_to_end.checks]
    assert end_to_end.failed == [], "\n".join(end_to_end.failed)
    for needed in ("drgn: marker A is in the printk buffer", "drgn: marker B is not",
                   "drgn: one NT_PRSTATUS per CPU"):
        assert needed in names, names
    assert any(n.startswith("consistency:") for n in names), names
    assert "drgn: each CPU's task unwinds from the stop instant" in names, names


def test_arm64_skips_the_x86_only_readers_and_says_why(end_to_end):
    skipped = [c for c in end_to_end.checks if c.skipped]
    assert {c.name.split(":")[0] for c in skipped} >= {"crash"}, [str(c) for c in skipped]
    assert all("x86-64" in c.detail for c in skipped), [str(c) for c in skipped]


@pytest.fixture(scope="module")
def torture(arm64, show):
    kernel = arm64.build()
    directory, disks, image = dump_disks_in(arm64, "arm64-consistency")
    results: dict[str, list] = {"protected": [], "unprotected": []}
    with arm64.boot(disks, tag="arm64-torture") as console:
        if not dump_mod.has_torture(console):
            pytest.fail("the arm64 kernel has no test_livedump (CONFIG_TEST_LIVEDUMP)")
        dump_mod.torture(console, True)
        for mode, flags in (("protected", ""), ("unprotected", "--test-no-wrprotect")):
            for i in range(DUMPS_PER_MODE):
                taken = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason=f"arm64 {mode} {i}", flags=flags)
                assert taken.result.status == 0, f"{mode} dump {i}:\n{taken.result.output}"
                report = consistency.read_and_check(image, kernel.vmlinux)
                (directory / f"{mode}-{i}.txt").write_text(report.text() + "\n")
                results[mode].append((report, taken.status))
        dump_mod.torture(console, False)
    show("arm64 torture dumps:\n" + "\n".join(
        f"  {mode:>11}: violations {[r.violations for r, _ in entries]}, in known gaps "
        f"{[sum(f.violations for f in r.findings if f.known_gap) for r, _ in entries]}, COW faults "
        f"{[c.get('cow_faults') for _, c in entries]}" for mode, entries in results.items())
        + "\n" + results["protected"][0][0].text())
    return results


def test_arm64_protected_dumps_hold_every_invariant_but_the_named_gaps(torture):
    for i, (report, counters) in enumerate(torture["protected"]):
        problems = consistency.protected_dump_problems(report, counters,
                                                       not_protected_here=arch.ARM64.unprotected_mappings)
        assert not problems, f"protected dump {i}: {'; '.join(problems)}\n{report.text()}"
        findings = {f.name: f for f in report.findings if not f.name.startswith("kthread stack ")}
        assert {n for n, f in findings.items() if f.known_gap} == ARM64_GAPS, report.text()
        assert {n for n, f in findings.items() if not f.known_gap} == MUST_HOLD, report.text()
        assert all(f.checked > 0 for n, f in findings.items() if n in MUST_HOLD), report.text()
        # The note tells what arm64 left out; the checker did not assume it.
        assert report.aliases_protected is False and report.user_protected is False, report.text()


def test_arm64_unprotected_dumps_are_caught_torn(torture):
    torn = [r for r, _ in torture["unprotected"]
            if any(f.violations - f.excused for f in r.findings if f.name in MUST_HOLD)]
    assert len(torn) >= MIN_TORN_UNPROTECTED, (
        f"only {len(torn)} of {DUMPS_PER_MODE} unprotected arm64 dumps torn where arm64 protects\n"
        + "\n".join(r.text() for r, _ in torture["unprotected"]))
