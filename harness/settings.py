"""Where things live. Everything here can be overridden from the environment.

- ``LIVEDUMP_CACHE``: downloads, extracted sources, the kernel git tree and
  build directories (default ``~/.cache/livedump``). Deleting it is always safe.
- ``LIVEDUMP_ARTIFACTS``: per-run artifact directories (default ``artifacts/``
  in the checkout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = REPO_ROOT / "kernel.lock.json"
SERIES_DIR = REPO_ROOT / "kernel-patches"
FRAGMENTS_DIR = REPO_ROOT / "harness" / "fragments"
ROOTFS_OVERLAY = REPO_ROOT / "buildroot-config" / "rootfs-overlay"
TOOLS_DIR = REPO_ROOT / "tools" / "livedump"


@dataclass(frozen=True)
class Paths:
    cache: Path
    artifacts: Path

    @classmethod
    def from_env(cls) -> Paths:
        cache = Path(os.environ.get("LIVEDUMP_CACHE", Path.home() / ".cache" / "livedump"))
        artifacts = Path(os.environ.get("LIVEDUMP_ARTIFACTS", REPO_ROOT / "artifacts"))
        return cls(cache=cache, artifacts=artifacts)

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def sources(self) -> Path:
        return self.cache / "src"

    @property
    def trees(self) -> Path:
        return self.cache / "tree"

    @property
    def builds(self) -> Path:
        return self.cache / "build"

    @property
    def locks(self) -> Path:
        return self.cache / "locks"
