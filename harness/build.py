"""Kernel build: out-of-tree, incremental, reproducible, logged.

One ``O=`` directory per (tree, architecture, fragment set) so that make's own dependency
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

from . import log as hlog
from .arch import DEFAULT as DEFAULT_ARCH
from .arch import Arch
from .errors import BuildError, ToolMissing
from .runner import Runner

STAMP = ".livedump-build-key"
DURATION = ".livedump-build-seconds"  # how long the last good build in this directory took
# What a person is told before a first build of the default fragments (measured on this project's host).
FIRST_BUILD_ESTIMATE = "about 3–4 min on 2 cores"
# Fixed build metadata: the same inputs give the same image, and changing
# the wall clock does not relink the kernel.
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 2024",
    "KBUILD_BUILD_USER": "livedump",
    "KBUILD_BUILD_HOST": "harness",
}
REQUIRED_TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc",
                  "perl": "perl", "cpio": "cpio"}
_TARGET_LINE = re.compile(r"^\s+([A-Z][A-Z0-9_]*)\s+(\S+)")  # kbuild's "  CC      mm/memory.o"
_ERROR_LINE = re.compile(r"(error:|Error \d+|undefined reference|No rule to make target|fatal error)")


@dataclass(frozen=True)
class BuildResult:
    build_dir: Path
    image: Path  # what QEMU boots: arch/x86/boot/bzImage, arch/arm64/boot/Image
    vmlinux: Path
    headers: Path  # installed uapi headers, for static guest helpers
    release: str
    rebuilt: bool

    @property
    def bzimage(self) -> Path:
        """The bootable image by its x86 name, for callers from before other architectures."""
        return self.image


def make_vars(arch: Arch = DEFAULT_ARCH) -> dict[str, str]:
    """Variables given to every make call, config and build alike (same CC).

    They are part of the build key: x86_64's are the words they were before
    other architectures, so its builds stay up to date.
    """
    cc = arch.helper_cc
    if shutil.which("ccache"):
        cc = f"ccache {cc}"
    # ARCH and CROSS_COMPILE first: the order make is given them in the logged command line.
    cross = {"ARCH": arch.kernel_arch, "CROSS_COMPILE": arch.cross_compile} if arch.cross else {}
    # An explicit (empty) LOCALVERSION keeps setlocalversion from appending
    # "+" for a git tree: the release stays what the config says.
    return {**cross, "CC": cc, "LOCALVERSION": ""}


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


def release_of(src: Path, config: Path) -> str:
    """The release a build of src with config will have, before it exists: 6.1.192-livedump; without a
    kernel Makefile, the tree's name."""
    head: dict[str, str] = {}
    makefile = src / "Makefile"
    for line in (makefile.read_text(errors="replace") if makefile.is_file() else "").splitlines()[:20]:
        m = re.match(r"(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", line)
        if m:
            head.setdefault(m[1], m[2])
    local = re.search(r'^CONFIG_LOCALVERSION="([^"]*)"', config.read_text(errors="replace") if config.is_file() else "",
                      re.M)
    if "VERSION" not in head:
        return src.name
    release = ".".join(head.get(k, "?") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))
    return release + head.get("EXTRAVERSION", "") + (local[1] if local else "")


def build_estimate(build_dir: Path) -> str:
    """What to expect: the last build here, or a first build's usual time."""
    try:
        return f"the last build here took {hlog.elapsed(float((build_dir / DURATION).read_text()))}"
    except (OSError, ValueError):
        pass
    if (build_dir / "vmlinux").is_file():
        return "incremental"
    return f"a first build, {FIRST_BUILD_ESTIMATE}"


def build_progress(log: Path) -> str:
    """How far make is: lines written and the last target it named."""
    lines = log.read_text(errors="replace").splitlines()
    last = next((f"{m[1]} {m[2]}" for line in reversed(lines) if (m := _TARGET_LINE.match(line))), "")
    return f"{len(lines)} lines of make output" + (f", last: {last}" if last else "")


def result_for(build_dir: Path, rebuilt: bool, arch: Arch = DEFAULT_ARCH) -> BuildResult:
    release_file = build_dir / "include" / "config" / "kernel.release"
    release = release_file.read_text().strip() if release_file.is_file() else ""
    return BuildResult(build_dir, build_dir / arch.image, build_dir / "vmlinux",
                       build_dir / "usr" / "include", release, rebuilt)


def build(src: Path, build_dir: Path, key: str, runner: Runner, log: Path, *, jobs: int | None = None,
          mvars: dict[str, str] | None = None, progress_every: float = hlog.PROGRESS_EVERY,
          arch: Arch = DEFAULT_ARCH) -> BuildResult:
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            raise ToolMissing("build", tool, package)
    arch.require_compiler("build")
    mvars = make_vars(arch) if mvars is None else mvars
    stamp = build_dir / STAMP
    done = result_for(build_dir, rebuilt=False, arch=arch)
    if stamp.is_file() and stamp.read_text().strip() == key and done.image.is_file() and done.vmlinux.is_file():
        return done
    jobs = jobs or os.cpu_count() or 1
    argv = ["make", "-C", str(src), f"O={build_dir}", f"-j{jobs}", *(f"{k}={v}" for k, v in mvars.items()),
            arch.image_target, "headers", "modules"]
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    release = release_of(src, build_dir / ".config")
    if not runner.dry_run:
        hlog.info(f"building {release} ({build_estimate(build_dir)}, make -j{jobs}), log: {log}")
    start = time.monotonic()
    with open(log, "w") as f, hlog.progress(f"building {release}", lambda: build_progress(log), every=progress_every):
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
    seconds = time.monotonic() - start
    (build_dir / DURATION).write_text(f"{seconds:.1f}\n")
    hlog.info(f"built {release} in {hlog.elapsed(seconds)}")
    return result_for(build_dir, rebuilt=True, arch=arch)
