"""Kernel build: out-of-tree, incremental, reproducible, logged.

One ``O=`` directory per (tree, fragment set) so that make's own dependency
tracking keeps rebuilds incremental. A stamp records the key of the last
good build — (source identity, series digest, .config digest) — so an
unchanged kernel is not even handed to make.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError, ToolMissing
from .runner import Runner

STAMP = ".livedump-build-key"
# Fixed build metadata: the same inputs give the same image, and changing
# the wall clock does not relink the kernel.
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 2024",
    "KBUILD_BUILD_USER": "livedump",
    "KBUILD_BUILD_HOST": "harness",
}
REQUIRED_TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc",
                  "perl": "perl", "cpio": "cpio"}
_ERROR_LINE = re.compile(r"(error:|Error \d+|undefined reference|No rule to make target|fatal error)")


@dataclass(frozen=True)
class BuildResult:
    build_dir: Path
    bzimage: Path
    vmlinux: Path
    headers: Path  # installed uapi headers, for static guest helpers
    release: str
    rebuilt: bool


def make_vars() -> dict[str, str]:
    """Variables given to every make call, config and build alike (same CC)."""
    cc = "gcc"
    if shutil.which("ccache"):
        cc = "ccache gcc"
    # An explicit (empty) LOCALVERSION keeps setlocalversion from appending
    # "+" for a git tree: the release stays what the config says.
    return {"CC": cc, "LOCALVERSION": ""}


def build_key(source_identity: str, series_digest: str, config: Path, mvars: dict[str, str]) -> str:
    h = hashlib.sha256()
    for part in (source_identity, series_digest, hashlib.sha256(config.read_bytes()).hexdigest(),
                 repr(sorted(mvars.items())), repr(sorted(REPRODUCIBLE_ENV.items()))):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def first_errors(log_text: str, limit: int = 12) -> list[str]:
    lines = log_text.splitlines()
    picked = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return (picked or lines[-limit:])[:limit]


def result_for(build_dir: Path, rebuilt: bool) -> BuildResult:
    release_file = build_dir / "include" / "config" / "kernel.release"
    release = release_file.read_text().strip() if release_file.is_file() else ""
    return BuildResult(build_dir, build_dir / "arch" / "x86" / "boot" / "bzImage", build_dir / "vmlinux",
                       build_dir / "usr" / "include", release, rebuilt)


def build(src: Path, build_dir: Path, key: str, runner: Runner, log: Path, *, jobs: int | None = None,
          mvars: dict[str, str] | None = None) -> BuildResult:
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            raise ToolMissing("build", tool, package)
    mvars = make_vars() if mvars is None else mvars
    stamp = build_dir / STAMP
    done = result_for(build_dir, rebuilt=False)
    if stamp.is_file() and stamp.read_text().strip() == key and done.bzimage.is_file() and done.vmlinux.is_file():
        return done
    jobs = jobs or os.cpu_count() or 1
    argv = ["make", "-C", str(src), f"O={build_dir}", f"-j{jobs}", *(f"{k}={v}" for k, v in mvars.items()),
            "bzImage", "headers"]
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    start = time.monotonic()
    with open(log, "w") as f:
        r = runner.run(argv, env=REPRODUCIBLE_ENV, check=False, stdout=f, stderr=f)
    if runner.dry_run:
        return done
    # Keep the newest log next to the build too: the run directory may be gone.
    shutil.copyfile(log, build_dir / "last-build.log")
    if r.returncode != 0:
        errors = "\n".join(first_errors(log.read_text(errors="replace")))
        raise BuildError(f"make failed (exit {r.returncode}) after {time.monotonic() - start:.0f}s; full log: {log}",
                         detail=errors)
    stamp.write_text(key + "\n")
    return result_for(build_dir, rebuilt=True)
