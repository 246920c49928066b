"""The closing "skipped" summary of tests/conftest.py, run in a pytest session of its own (pytester)."""

from __future__ import annotations

from pathlib import Path

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def test_summary_lists_each_skip_with_its_reason(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_demo="""
        import pytest

        @pytest.fixture(scope="module")
        def headers():
            pytest.skip("crash headers not installed (Debian: apt install crash)")

        def test_passes():
            pass

        def test_needs_headers(headers):
            pass

        @pytest.mark.skip(reason="needs a KVM host")
        def test_marked():
            pass

        @pytest.mark.xfail(reason="known bug", strict=False)
        def test_expected_failure():
            assert False
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines([
        "*!! 2 skipped: not tested in this run !!*",
        "SKIPPED test_demo.py::test_needs_headers: crash headers not installed (Debian: apt install crash)",
        "SKIPPED test_demo.py::test_marked: needs a KVM host",
    ])
    # An expected failure is not a skip: it must not be listed as one.
    assert "test_expected_failure" not in result.stdout.str().split("skipped: not tested")[1]


def test_no_summary_when_nothing_was_skipped(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_demo="def test_passes():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "not tested in this run" not in result.stdout.str()
