"""Per-run artifact directory: commands, logs, .config, result.json.

Layout of one run directory::

    harness.log      everything the harness said, timestamped, debug lines too (harness/log.py)
    commands.sh      every host command, shell-quoted, in order
    config           the .config the kernel was built with
    build.log        output of make
    serial.log       the whole guest console
    qemu-stderr.log  what QEMU printed on stderr
    result.json      verdict, stage timings, accelerator, error

Disk images (a dump target is as large as the guest's RAM) and QEMU's captures pile up fast: when a run
starts, :func:`prune` removes run directories beyond the newest ``LIVEDUMP_KEEP_RUNS`` and the images of
runs beyond the newest ``LIVEDUMP_KEEP_IMAGES`` (:class:`Retention`). A run still marked running and less
than a day old is never touched: another harness may be writing it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Files of a run that hold guest memory or disks: big, and reproducible by running again.
IMAGE_SUFFIXES = (".img", ".elf", ".kdump", ".qcow2", ".raw")
RUN_NAME = re.compile(r"^\d{8}T\d{6}-")
RUNNING_GRACE_S = 24 * 3600


@dataclass(frozen=True)
class Retention:
    """What stays of earlier runs when a new one starts."""

    runs: int = 40    # run directories kept, newest first
    images: int = 4   # of those, the newest that keep their disk images and captures

    @classmethod
    def from_env(cls) -> Retention:
        default = cls()
        return cls(runs=int(os.environ.get("LIVEDUMP_KEEP_RUNS", default.runs)),
                   images=int(os.environ.get("LIVEDUMP_KEEP_IMAGES", default.images)))


def _still_running(directory: Path, now: float) -> bool:
    try:
        verdict = json.loads((directory / "result.json").read_text()).get("verdict")
    except (OSError, ValueError):
        return False
    return verdict == "running" and now - directory.stat().st_mtime < RUNNING_GRACE_S


def prune(root: Path, retention: Retention, *, keep: Path | None = None,
          now: float | None = None) -> list[str]:
    """Remove the run directories under ``root`` beyond ``retention.runs`` and the images of those beyond
    ``retention.images``, newest first by name; never ``keep``, a live run, or anything not named like a
    run. Returns what was removed, one line each."""
    now = time.time() if now is None else now
    runs = sorted((d for d in root.iterdir() if d.is_dir() and not d.is_symlink() and RUN_NAME.match(d.name)
                   and d != keep), key=lambda d: d.name, reverse=True)
    removed = []
    for rank, directory in enumerate(runs, start=1 if keep is not None else 0):
        if _still_running(directory, now):
            continue
        if rank >= retention.runs:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(f"{directory.name}/")
        elif rank >= retention.images:
            for f in directory.rglob("*"):
                if f.is_file() and f.suffix in IMAGE_SUFFIXES:
                    f.unlink(missing_ok=True)
                    removed.append(str(f.relative_to(root)))
    return removed


@dataclass
class Run:
    directory: Path
    command: str
    started: float = field(default_factory=time.time)
    stages: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    verdict: str = "running"
    error: str | None = None

    @classmethod
    def create(cls, root: Path, command: str) -> Run:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            directory = root / f"{stamp}-{command}" if n == 0 else root / f"{stamp}-{command}-{n}"
            try:
                directory.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError(f"cannot make a run directory under {root}")
        latest = root / "latest"
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(directory.name)
        except OSError:
            pass
        run = cls(directory=directory, command=command)
        run.write_result()
        run.facts["pruned"] = len(prune(root, Retention.from_env(), keep=directory))
        return run

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def commands_log(self) -> Path:
        return self.path("commands.sh")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - start, 3)
            self.write_result()

    def finish(self, verdict: str, error: str | None = None) -> None:
        self.verdict = verdict
        self.error = error
        self.write_result()

    def write_result(self) -> None:
        result = {
            "command": self.command,
            "verdict": self.verdict,
            "error": self.error,
            "started": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "duration_s": round(time.time() - self.started, 3),
            "stages_s": self.stages,
            **self.facts,
        }
        tmp = self.path("result.json.tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path("result.json"))
