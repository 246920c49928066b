"""The pure parts of the faults and fuzz commands: fault placement and the verdicts on their output."""

from __future__ import annotations

import pytest

from harness import faults, fuzz

MIB = 1 << 20


def test_eio_offsets_name_places_in_ram():
    assert faults.eio_offsets_mib(("0", "1", "half", "end"), 512 * MIB) == [0, 1, 256, 511]


def test_the_same_place_twice_is_one_target():
    assert faults.eio_offsets_mib(("half", "256", "0", "0"), 512 * MIB) == [256, 0]


@pytest.mark.parametrize("spec", ["512", "-1", "middle", ""])
def test_eio_offsets_outside_ram_are_refused(spec):
    with pytest.raises(faults.FaultsError, match="--eio-at"):
        faults.eio_offsets_mib((spec,), 512 * MIB)


FAILED = {"state": "failed", "error": "-5", "pages_dumped": "51200", "pages_total": "131072"}
LOG = "[   42.1] livedump: dump failed: -5"


def test_a_dump_that_failed_as_documented_has_no_problem():
    assert faults.failed_dump_problems(1, FAILED, LOG) == []


@pytest.mark.parametrize(("exit_status", "change", "log", "why"), [
    (0, {}, LOG, "exited 0"),
    (1, {"state": "done"}, LOG, "state 'done'"),
    (1, {"error": "0"}, LOG, "not a negative errno"),
    (1, {"error": "-5"}, "", "kernel log has no"),
    (1, {"pages_dumped": "131072"}, LOG, "did not stop the sweep"),
    (1, {"pages_dumped": ""}, LOG, "pages_dumped '' of"),
])
def test_each_way_a_failed_dump_can_be_wrong_is_named(exit_status, change, log, why):
    problems = faults.failed_dump_problems(exit_status, FAILED | change, log)
    assert len(problems) == 1 and why in problems[0], problems


def test_a_failure_in_the_last_writes_may_come_back_after_every_page_was_submitted():
    everything = FAILED | {"pages_dumped": "131072"}
    assert faults.failed_dump_problems(1, everything, LOG, partial=False) == []
    assert faults.failed_dump_problems(1, everything | {"pages_dumped": "131073"}, LOG, partial=False) == [
        "pages_dumped '131073' of '131072'"]


def test_a_status_missing_everything_is_not_a_documented_failure():
    assert len(faults.failed_dump_problems(1, {}, LOG)) == 3


def fuzz_output(calls: int, unexpected: int) -> str:
    return (f"seed=1\ncalls={calls} unexpected={unexpected}\n"
            + "ldfuzz: cmd 0x4004a201 returned -1 errno 22\n" * unexpected
            + f"calls={calls} unexpected=0\n")


def test_fuzz_counts_both_processes():
    result = fuzz.FuzzResult(calls_asked=100, seed=1, exit_status=0)
    fuzz.judge(result, fuzz_output(50, 0))
    assert (result.calls, result.unexpected, result.problems) == (100, 0, [])


def test_fuzz_undocumented_results_and_short_runs_are_problems():
    result = fuzz.FuzzResult(calls_asked=1000, seed=1, exit_status=1)
    fuzz.judge(result, fuzz_output(50, 2))
    assert result.unexpected == 2 and len(result.unexpected_lines) == 2
    assert [p.split()[0] for p in result.problems] == ["ldfuzz", "2", "ldfuzz"]


def test_fuzz_output_without_counts_is_not_a_pass():
    result = fuzz.FuzzResult(calls_asked=100, seed=1, exit_status=0)
    fuzz.judge(result, "")
    assert result.problems == ["ldfuzz made 0 calls of 100"]


def test_an_unknown_mid_sweep_fault_is_refused_before_anything_boots(tmp_path):
    class NoPipeline:
        """faults() must refuse before it builds or boots anything."""

        class options:
            memory = "512M"

        def build(self):
            class Kernel:
                headers = tmp_path
            (tmp_path / "linux").mkdir(exist_ok=True)
            (tmp_path / "linux" / "livedump.h").write_text("")
            return Kernel()

        def boot(self, *args, **kwargs):
            raise AssertionError("booted")

    with pytest.raises(faults.FaultsError, match="unknown mid-sweep fault melt"):
        faults.faults(NoPipeline(), ("half",), ("unplug", "melt"))
