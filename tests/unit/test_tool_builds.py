"""The guest tool builds with the rootfs's flags against the first uapi header of the series, not only the last.

``harness bisect`` builds the initramfs for kernels from any point of the series, so
tools/livedump/livedump-ioctl.c must compile (``-Wall -Werror``, as harness/rootfs.py builds it) against
include/uapi/linux/livedump.h as patch 0002 creates it, where later ioctls and flags do not exist yet. A
helper defined only for newer headers once left an unused function there and every bisect step failed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "livedump" / "livedump-ioctl.c"
HEADER = "include/uapi/linux/livedump.h"


def first_header(patches: list[Path]) -> str:
    """The text of HEADER as the first patch that creates it writes it: its added lines."""
    for patch in patches:
        text = patch.read_text()
        marker = f"+++ b/{HEADER}\n"
        if marker not in text or f"--- /dev/null\n{marker}" not in text:
            continue
        lines = []
        for line in text.split(marker, 1)[1].split("\n")[1:]:  # past the hunk header
            if line.startswith("diff --git") or line.startswith("-- "):
                break
            if line.startswith("@@"):
                continue
            if not line.startswith("+"):
                raise AssertionError(f"{patch.name}: a new file's hunk has a line that is not added: {line!r}")
            lines.append(line[1:])
        return "\n".join(lines) + "\n"
    raise AssertionError(f"no patch in kernel-patches/ creates {HEADER}")


def test_the_tool_compiles_against_the_first_header_of_the_series(tmp_path):
    patches = sorted((ROOT / "kernel-patches").glob("0*.patch"))
    header = first_header(patches)
    assert "LIVEDUMP_IOC_INIT" in header, header[:500]
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux" / "livedump.h").write_text(header)
    # -c, not -fsyntax-only: gcc reports unused static functions only when it compiles.
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-c", "-o", str(tmp_path / "tool.o"), f"-I{tmp_path}",
                        str(TOOL)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
