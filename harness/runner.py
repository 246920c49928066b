"""Running host commands: every command line is logged shell-quoted, once.

One :class:`Runner` per harness invocation. It appends each command to the
run's ``commands.sh`` (so a run can be replayed by hand), prints it with
``-v``, and with ``--dry-run`` prints instead of running.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from . import log
from .errors import HarnessError


def quote(argv: Sequence[str | os.PathLike], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    words = [shlex.quote(os.fspath(a)) for a in argv]
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    line = " ".join(prefix + words)
    if cwd is not None:
        line = f"(cd {shlex.quote(os.fspath(cwd))} && {line})"
    return line


@dataclass
class Runner:
    log_path: Path | None = None
    verbose: bool = False
    dry_run: bool = False
    echo: IO[str] = field(default_factory=lambda: sys.stderr)

    def record(self, argv: Sequence[str | os.PathLike], cwd: Path | None = None,
               env: Mapping[str, str] | None = None, *, mutates: bool = True) -> str:
        line = quote(argv, cwd, env)
        log.debug(("would run: " if self.dry_run and mutates else "run: ") + line)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as f:
                f.write(line + "\n")
        if self.verbose or self.dry_run:
            print(("would run: " if self.dry_run and mutates else "+ ") + line, file=self.echo)
        return line

    def run(self, argv: Sequence[str | os.PathLike], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, check: bool = True, capture: bool = False,
            stdout: IO | None = None, stderr: IO | int | None = None, mutates: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv. ``env`` holds only the variables added to os.environ.

        Commands that only read (``mutates=False``) still run under --dry-run,
        because later steps need their answers to print the right commands.
        """
        self.record(argv, cwd, env, mutates=mutates)
        if self.dry_run and mutates:
            return subprocess.CompletedProcess(list(map(os.fspath, argv)), 0, "", "")
        full_env = dict(os.environ, **env) if env else None
        try:
            return subprocess.run(
                [os.fspath(a) for a in argv],
                cwd=cwd,
                env=full_env,
                check=check,
                text=True,
                input=input,
                stdout=subprocess.PIPE if capture else stdout,
                stderr=subprocess.PIPE if capture else stderr,
            )
        except FileNotFoundError as e:
            # A missing program is one line for the user, not a traceback.
            program = os.fspath(argv[0])
            if e.filename != program:
                raise
            raise HarnessError("host", f"{program} not found on PATH; `make setup` installs what the harness needs",
                               exit_code=HarnessError.INFRA) from None
