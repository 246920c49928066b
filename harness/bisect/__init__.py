"""``python -m harness bisect``: find the commit (or our patch) that broke livedump.

The harness drives ``git bisect`` itself, one step at a time, so each step's verdict is mapped on
purpose rather than through an exit status (the codes: :mod:`.verdict`). One module per concern:

* :mod:`.verdict`: verdicts and the build and test outcomes they are judged from
* :mod:`.engine`: the bisect itself, against the ``Git``/``Builder``/``Tester`` interfaces (unit-tested
  with fakes)
* :mod:`.git`: what ``git bisect`` says, and the real git
* :mod:`.series`: the patch series on a checkout (``--tree``) or bisected itself (``--series``)
* :mod:`.digest`: is the culprit's kernel image its parent's?
* :mod:`.builder`, :mod:`.testers`, :mod:`.guest_tests`: the real builder, testers and guest tests
* :mod:`.cli`: the command's options and wiring

This package's namespace re-exports what the command line, the tests and users of the old single
module use.
"""

from __future__ import annotations

from .builder import MIN_FREE_BYTES, PipelineBuilder
from .cli import add_arguments, command, drop_disk_images
from .digest import image_digest
from .engine import REVERSE_TERMS, TERMS, Bisector, Builder, Config, Outcome, Tester, describe
from .git import Git, Progress, RealGit, parse_progress
from .series import (
                     SCRATCH_MARK,
                     apply_series,
                     carries_series,
                     created_files,
                     resolve_patch_ref,
                     scratch_tree,
                     series_commits,
)
from .testers import GUEST_TESTS, ManualTester, PipelineTester
from .verdict import Build, BuildOutcome, Kind, StepResult, Test, TestOutcome, Verdict, abort, bad, good, judge, skip

__all__ = [
    "GUEST_TESTS", "MIN_FREE_BYTES", "REVERSE_TERMS", "SCRATCH_MARK", "TERMS", "Bisector", "Build", "BuildOutcome",
    "Builder", "Config", "Git", "Kind", "ManualTester", "Outcome", "PipelineBuilder", "PipelineTester", "Progress",
    "RealGit", "StepResult", "Test", "TestOutcome", "Tester", "Verdict", "abort", "add_arguments", "apply_series",
    "bad", "carries_series", "command", "created_files", "describe", "drop_disk_images", "good", "image_digest",
    "judge", "parse_progress", "resolve_patch_ref", "scratch_tree", "series_commits", "skip",
]
