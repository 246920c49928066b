"""Per-run artifact directory: commands, logs, .config, result.json.

Layout of one run directory::

    harness.log      everything the harness said, timestamped, debug lines too (harness/log.py)
    commands.sh      every host command, shell-quoted, in order
    config           the .config the kernel was built with
    build.log        output of make
    serial.log       the whole guest console
    qemu-stderr.log  what QEMU printed on stderr
    result.json      verdict, stage timings, accelerator, error
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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
