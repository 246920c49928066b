"""What one bisect step found: the verdict codes, and the build and test outcomes they are judged from.

=======  ====  ==============================================================
verdict  code  when
=======  ====  ==============================================================
GOOD     0     the guest test passed (every try)
BAD      1     it failed; with ``--type build``: the kernel did not build
SKIP     125   untestable: the series does not apply, the kernel does not
               build (``--type boot``/``test``), no livedump in the guest,
               a test that says "skip" (exit 125), or a flaky result (some
               tries passed, some failed)
ABORT    128   an infrastructure fault: QEMU or a host tool missing, disk
               full, a harness bug. The bisect stops; nothing is marked.
=======  ====  ==============================================================

The codes are those of ``git bisect run`` (125 skips, 128 and up abort), so
``--step`` can serve as its script.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.Enum):
    GOOD = 0
    BAD = 1
    SKIP = 125
    ABORT = 128


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str = ""
    confidence: str = ""  # e.g. "3/3 tries passed"

    @property
    def exit_code(self) -> int:
        return self.kind.value

    def __str__(self) -> str:
        extra = f" ({self.confidence})" if self.confidence else ""
        return f"{self.kind.name.lower()}{extra}{': ' + self.reason if self.reason else ''}"


def good(reason: str = "", confidence: str = "") -> Verdict:
    return Verdict(Kind.GOOD, reason, confidence)


def bad(reason: str = "", confidence: str = "") -> Verdict:
    return Verdict(Kind.BAD, reason, confidence)


def skip(reason: str, confidence: str = "") -> Verdict:
    return Verdict(Kind.SKIP, reason, confidence)


def abort(reason: str) -> Verdict:
    return Verdict(Kind.ABORT, reason)


class Build(enum.Enum):
    OK = "ok"
    FAILED = "failed"  # the tree does not build (or configure): a fact about the commit
    NO_SERIES = "series does not apply"
    INFRA = "infra"  # the host is at fault: tool missing, disk full, harness bug


@dataclass
class BuildOutcome:
    status: Build
    reason: str = ""
    image_digest: str | None = None
    handle: Any = None  # what the Tester needs to boot this kernel (the real one: a Pipeline)


class Test(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    UNTESTABLE = "untestable"  # e.g. the kernel has no livedump: neither good nor bad
    INFRA = "infra"


@dataclass(frozen=True)
class TestOutcome:
    status: Test
    reason: str = ""


@dataclass
class StepResult:
    index: int
    commit: str
    subject: str
    verdict: Verdict
    build: str
    tries: list[dict[str, str]] = field(default_factory=list)
    image_digest: str | None = None
    directory: str = ""


def judge(tries: Sequence[TestOutcome], *, flaky_is_bad: bool = False) -> Verdict:
    """One verdict from N tries: all pass good, all fail bad, mixed is flaky (skip unless flaky_is_bad)."""
    for t in tries:
        if t.status is Test.INFRA:
            return abort(t.reason)
    untestable = [t for t in tries if t.status is Test.UNTESTABLE]
    if untestable:
        return skip(f"untestable: {untestable[0].reason}")
    n = len(tries)
    failed = [t for t in tries if t.status is Test.FAILED]
    passed = n - len(failed)
    if not failed:
        return good("test passed", f"{passed}/{n} tries passed")
    first = failed[0].reason
    if passed == 0:
        return bad(first, f"{len(failed)}/{n} tries failed")
    confidence = f"flaky: {passed}/{n} tries passed"
    if flaky_is_bad:
        return bad(first, confidence)
    return skip(f"inconclusive: {first}", confidence)
