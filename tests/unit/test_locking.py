"""Two processes never build in the same tree or O= directory at once."""

import subprocess
import sys
import time

from harness import locking

HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from harness import locking
with locking.exclusive(Path({target!r}), "build directory", Path({locks!r})):
    print("held", flush=True)
    time.sleep(1.5)
"""


def test_second_holder_waits_and_says_so(tmp_path):
    target, locks = tmp_path / "build", tmp_path / "locks"
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=root, target=str(target), locks=str(locks))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    messages = []
    start = time.monotonic()
    with locking.exclusive(target, "build directory", locks, say=messages.append):
        waited = time.monotonic() - start
    holder.wait()
    assert waited > 0.5
    assert messages and "waiting for build directory" in messages[0] and "pid" in messages[0]


def test_uncontended_lock_is_silent_and_reentrant_across_calls(tmp_path):
    messages = []
    for _ in range(2):
        with locking.exclusive(tmp_path / "tree", "kernel tree", tmp_path / "locks", say=messages.append):
            pass
    assert messages == []
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
