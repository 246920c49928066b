"""For every tier: a closing summary of what was skipped and why.

A skip is easy to miss in a line of dots: `make test-unit` on a host without
crash's headers skips the extension build that the integration tier then
fails on. The summary names each skipped test and its reason, so a green run
that tested less than it could says so at its end.
"""

from __future__ import annotations

# pytester runs a pytest session inside a test (tests/unit/test_skip_summary.py).
pytest_plugins = ["pytester"]


def skip_reason(report) -> str:
    """The reason a skipped test report carries, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} skipped: not tested in this run", sep="!", yellow=True, bold=True)
    for report in skipped:
        terminalreporter.write_line(f"SKIPPED {report.nodeid}: {skip_reason(report)}", yellow=True)
