"""``git bisect`` driven one mark at a time: what it says back, and the real git behind the :class:`Git` interface."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import HarnessError


@dataclass(frozen=True)
class Progress:
    """What ``git bisect`` said after a start or a mark."""

    culprit: str | None = None  # "<sha> is the first bad commit"
    candidates: tuple[str, ...] = ()  # only skipped commits left: the culprit is one of these
    waiting: bool = False  # good or bad endpoint still unknown
    text: str = ""

    @property
    def done(self) -> bool:
        return self.culprit is not None or bool(self.candidates)


_FIRST = re.compile(r"^([0-9a-f]{40}) is the first (\S+) commit$", re.M)
_ONLY_SKIPPED = re.compile(r"There are only 'skip'ped commits left to test\.")
_SHA_LINE = re.compile(r"^([0-9a-f]{40})$", re.M)


def parse_progress(text: str) -> Progress:
    m = _FIRST.search(text)
    if m:
        return Progress(culprit=m.group(1), text=text)
    if _ONLY_SKIPPED.search(text):
        return Progress(candidates=tuple(_SHA_LINE.findall(text.split("could be any of:", 1)[-1])), text=text)
    return Progress(waiting="waiting for" in text and "Bisecting:" not in text, text=text)


class Git(Protocol):
    def rev_parse(self, ref: str) -> str: ...
    def subject(self, rev: str) -> str: ...
    def parent(self, rev: str) -> str | None: ...
    def head(self) -> str: ...
    def checkout(self, rev: str) -> None: ...
    def preflight(self) -> None: ...
    def start(self, new: str | None, old: Sequence[str], terms: tuple[str, str]) -> Progress: ...
    def mark(self, term: str, rev: str | None = None) -> Progress: ...
    def replay(self, log: Path) -> Progress: ...
    def terms(self) -> tuple[str, str]: ...
    def log(self) -> str: ...
    def reset(self) -> None: ...


class RealGit:
    def __init__(self, tree: Path, runner):
        self.tree = tree
        self.runner = runner

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = self.runner.run(["git", "-C", str(self.tree), *args], capture=True, check=False)
        if check and r.returncode != 0:
            raise HarnessError("git", f"`git {' '.join(args)}` exited {r.returncode}",
                               detail=((r.stdout or "") + (r.stderr or "")).strip(), exit_code=HarnessError.INFRA)
        return r

    def rev_parse(self, ref: str) -> str:
        r = self._git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
        if r.returncode != 0:
            raise HarnessError("bisect", f"{ref!r} is not a commit in {self.tree}")
        return r.stdout.strip()

    def subject(self, rev: str) -> str:
        return self._git("log", "-1", "--format=%s", rev).stdout.strip()

    def parent(self, rev: str) -> str | None:
        r = self._git("rev-parse", "-q", "--verify", f"{rev}^", check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def head(self) -> str:
        return self._git("rev-parse", "HEAD").stdout.strip()

    def checkout(self, rev: str) -> None:
        self._git("checkout", "-q", "--detach", rev)

    def preflight(self) -> None:
        if not (self.tree / ".git").exists():
            raise HarnessError("bisect", f"{self.tree} is not a git tree")
        gitdir = Path(self._git("rev-parse", "--absolute-git-dir").stdout.strip())
        if (gitdir / "BISECT_START").exists():
            raise HarnessError("bisect", f"a bisect is already running in {self.tree}; end it with "
                               f"`git -C {self.tree} bisect reset`")
        dirty = self._git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise HarnessError("bisect", f"{self.tree} has uncommitted changes; commit or stash them first "
                               "(each step resets the tree)", detail=dirty)

    def _progress(self, r: subprocess.CompletedProcess) -> Progress:
        return parse_progress((r.stdout or "") + (r.stderr or ""))

    def start(self, new: str | None, old: Sequence[str], terms: tuple[str, str]) -> Progress:
        args = ["bisect", "start", f"--term-old={terms[0]}", f"--term-new={terms[1]}"]
        if new is not None:
            args += [self.rev_parse(new), *(self.rev_parse(o) for o in old)]
        r = self._git(*args, check=False)
        if r.returncode != 0:
            text = ((r.stdout or "") + (r.stderr or "")).strip()
            self._git("bisect", "reset", check=False)
            hint = " (looking for a fix? add --reverse)" if "not ancestors" in text or "mistook" in text else ""
            raise HarnessError("bisect", f"git bisect start refused{hint}", detail=text)
        return self._progress(r)

    def mark(self, term: str, rev: str | None = None) -> Progress:
        r = self._git("bisect", term, *([rev] if rev else []), check=False)
        progress = self._progress(r)
        if r.returncode != 0 and not progress.done:
            raise HarnessError("git", f"`git bisect {term}` exited {r.returncode}",
                               detail=((r.stdout or "") + (r.stderr or "")).strip(), exit_code=HarnessError.INFRA)
        return progress

    def replay(self, log: Path) -> Progress:
        r = self._git("bisect", "replay", str(Path(log).resolve()), check=False)
        if r.returncode != 0 and not self._progress(r).done:
            raise HarnessError("bisect", f"git bisect replay {log} failed", detail=(r.stdout or "") + (r.stderr or ""))
        return self._progress(r)

    def terms(self) -> tuple[str, str]:
        old = self._git("bisect", "terms", "--term-old").stdout.strip()
        new = self._git("bisect", "terms", "--term-new").stdout.strip()
        return old, new

    def log(self) -> str:
        return self._git("bisect", "log").stdout

    def reset(self) -> None:
        self._git("reset", "-q", "--hard", check=False)
        self._git("bisect", "reset", check=False)
