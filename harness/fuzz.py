"""``python -m harness fuzz``: the ioctl fuzzer, and a dump that still works after it.

One boot, the guest helper ``ldfuzz CALLS TARGET SEED`` (2 processes x 2
threads of random and hostile ioctls on /dev/livedump, see its header). It must
exit 0 (every call returned 0 or an errno the documentation lists), have made
all the calls, leave no oops on the console (the console raises on one), and
leave the device usable: after ``livedump release`` (a dump a thread set up with
LIVEDUMP_INIT_KEEP may remain) a whole ``livedump dump`` must succeed with 0
failed pages.

Writes fuzz.json in the run directory; exit 0 when all of that held.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from . import dump as dump_mod
from .errors import HarnessError
from .pipeline import Pipeline, say

# ldfuzz rounds CALLS down to a multiple of its 2 processes x 2 threads.
FUZZ_WORKERS = 4


class FuzzError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("fuzz", message, detail=detail)


@dataclass
class FuzzResult:
    calls_asked: int
    seed: int
    calls: int = 0
    unexpected: int = 0
    exit_status: int | None = None
    final_dump_ok: bool = False
    unexpected_lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(result: FuzzResult, output: str) -> None:
    """Fill result's counts from ldfuzz's output and list what went wrong."""
    result.calls = sum(int(c) for c in re.findall(r"^calls=(\d+)", output, re.M))
    result.unexpected = sum(int(c) for c in re.findall(r"unexpected=(\d+)", output))
    result.unexpected_lines = [line for line in output.splitlines() if line.startswith("ldfuzz: cmd")][:50]
    if result.exit_status != 0:
        result.problems.append(f"ldfuzz exited {result.exit_status}")
    if result.unexpected:
        result.problems.append(f"{result.unexpected} calls returned an undocumented result")
    if result.calls < result.calls_asked - (FUZZ_WORKERS - 1):
        result.problems.append(f"ldfuzz made {result.calls} calls of {result.calls_asked}")


def fuzz(p: Pipeline, calls: int, seed: int) -> FuzzResult:
    if calls < FUZZ_WORKERS:
        raise FuzzError(f"--calls must be at least {FUZZ_WORKERS}")
    kernel = p.build()
    if not (kernel.headers / "linux" / "livedump.h").is_file():
        raise FuzzError("this kernel has no livedump (series or fragment missing)")
    result = FuzzResult(calls_asked=calls, seed=seed)
    disks = dump_mod.dump_disks(p.run.path("fuzz"), dump_mod.memory_bytes(p.options.memory))
    with p.boot(disks, tag="fuzz") as console:
        say(f"fuzz: {calls} ioctl calls, seed {seed}")
        fuzzed = console.run(f"ldfuzz {calls} {dump_mod.DUMP_TARGET} {seed}", timeout=p.options.timeouts.run)
        result.exit_status = fuzzed.status
        judge(result, fuzzed.output)
        console.run("livedump release 2>/dev/null; true", check=True)
        final = dump_mod.dump(console, dump_mod.DUMP_TARGET, reason="after the fuzzer")
    for disk in disks:
        disk.path.unlink(missing_ok=True)
    result.final_dump_ok = final.result.status == 0 and final.status.get("failed_pages") == "0"
    if not result.final_dump_ok:
        result.problems.append(f"the dump after the fuzzer exited {final.result.status}, "
                               f"failed pages {final.status.get('failed_pages')}: {final.result.output[-500:]}")
    return result


def command(p: Pipeline, args) -> int:
    with p.run.stage("fuzz"):
        result = fuzz(p, args.calls, args.seed)
    out = p.run.path("fuzz.json")
    out.write_text(json.dumps(asdict(result) | {"ok": result.ok}, indent=2) + "\n")
    say(f"fuzz: {result.calls} calls (seed {result.seed}), {result.unexpected} undocumented results, "
        f"dump afterwards {'good' if result.final_dump_ok else 'FAILED'}")
    for problem in result.problems:
        say(f"fuzz: FAILED: {problem}")
    for line in result.unexpected_lines[:10]:
        say(f"fuzz: {line}")
    say(f"wrote {out}")
    p.run.facts["fuzz"] = {"json": str(out), "ok": result.ok, "calls": result.calls}
    return 0 if result.ok else 1
