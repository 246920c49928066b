"""The real :class:`Builder`: at each step the series (when the checkout lacks it), configure, and an
incremental build in the tree's one ``O=`` directory, with build failures told apart from the host's."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from ..artifacts import Run
from ..errors import BuildError, ConfigError, HarnessError, SourceError, ToolMissing
from ..pipeline import Pipeline
from ..runner import Runner
from .digest import image_digest
from .series import apply_series, carries_series
from .verdict import Build, BuildOutcome

_INFRA_LOG = re.compile(r"No space left on device|Killed signal terminated program|virtual memory exhausted|"
                        r"Cannot allocate memory|Input/output error")
MIN_FREE_BYTES = 2 << 30


class PipelineBuilder:
    """Each step: (series) + configure + incremental build in the tree's fixed O= directory."""

    def __init__(self, tree: Path, options, paths, runner, *, series: Sequence[Path] = (),
                 apply: str = "auto", say: Callable[[str], None] = lambda msg: None):
        self.tree = tree
        self.options = options
        self.paths = paths
        self.runner = runner
        self.series = list(series)
        self.apply = apply  # auto | always | never
        self.say = say
        self._dirty = False
        self._last: Pipeline | None = None  # the previous step's: the next one shares its accelerator choice

    def build(self, rev: str, step_dir: Path) -> BuildOutcome:
        if self.series and self.apply != "never":
            if self.apply == "auto" and carries_series(self.tree, self.series, self.runner):
                self.say("  the checkout carries the series: built as it is")
            else:
                self._dirty = True
                failure = apply_series(self.tree, self.series, self.runner)
                if failure:
                    self.say(f"  series: {failure}")
                    return BuildOutcome(Build.NO_SERIES, failure)
        run = Run(directory=step_dir, command="bisect-step")
        run.write_result()
        runner = Runner(log_path=run.commands_log, verbose=self.runner.verbose)
        if self._last is None:
            p = Pipeline(run, self.options, paths=self.paths, runner=runner)
        else:  # probe KVM once per bisect, not once per step
            p = self._last.for_tree(self.tree, run=run, runner=runner)
        self._last = p
        try:
            build_dir = p.build_dir()
            build_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(build_dir).free
            if free < MIN_FREE_BYTES:
                return BuildOutcome(Build.INFRA, f"disk full: {free >> 20} MiB free under {build_dir}")
            kernel = p.build()
        except ToolMissing as e:
            return self._finish(run, BuildOutcome(Build.INFRA, str(e)))
        except (BuildError, ConfigError, SourceError) as e:
            log = run.path("build.log")
            text = log.read_text(errors="replace") if log.is_file() else ""
            if _INFRA_LOG.search(text):
                return self._finish(run, BuildOutcome(Build.INFRA, f"{e} ({_INFRA_LOG.search(text).group(0)})"))
            first = e.detail.strip().splitlines()[:1]
            return self._finish(run, BuildOutcome(Build.FAILED, f"{e}" + (f": {first[0].strip()}" if first else "")))
        except HarnessError as e:
            kind = Build.INFRA if e.exit_code == HarnessError.INFRA else Build.FAILED
            return self._finish(run, BuildOutcome(kind, str(e)))
        except (OSError, subprocess.CalledProcessError) as e:
            return self._finish(run, BuildOutcome(Build.INFRA, f"{type(e).__name__}: {e}"))
        digest = image_digest(kernel.vmlinux, kernel.build_dir)
        return self._finish(run, BuildOutcome(Build.OK, kernel.release, digest, handle=p))

    def _finish(self, run: Run, outcome: BuildOutcome) -> BuildOutcome:
        run.facts["bisect_build"] = {"status": outcome.status.value, "reason": outcome.reason,
                                     "image_digest": outcome.image_digest}
        run.finish(outcome.status.value, None if outcome.status is Build.OK else outcome.reason or None)
        return outcome

    def cleanup(self) -> None:
        if self._dirty:
            self._dirty = False
            self.runner.run(["git", "-C", str(self.tree), "reset", "-q", "--hard"], capture=True, check=True)
