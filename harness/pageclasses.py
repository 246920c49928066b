"""What a dump says of RAM by page class, against what the snapshot's own counters say.

The LIVEDUMP note (version 3) counts every page of RAM by the class its ``struct page`` had at the stop
(``enum livedump_page_class``) and says which classes the dump left out. The kernel's vmstat counters are
part of the same snapshot: read from the dump with drgn, they are /proc/meminfo at the instant of the
stop. :func:`class_problems` compares the two, class by class, within a tolerance (the per-cpu counter
deltas not yet folded into the global counters, and pages between states, are not in either exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import elfcore, validate

PAGE_BYTES = 4096
# The classes livedump leaves out unless told otherwise (LIVEDUMP_EXCLUDE_DEFAULT).
DEFAULT_EXCLUDED = ("user", "free", "own")


@dataclass(frozen=True)
class SnapshotMeminfo:
    """vmstat counters at the stop, in pages, read from the dump itself."""

    free: int  # NR_FREE_PAGES: MemFree
    anon: int  # NR_ANON_MAPPED: AnonPages
    file: int  # NR_FILE_PAGES: Cached + SwapCached + Buffers


def snapshot_meminfo(dump: Path, vmlinux: Path) -> SnapshotMeminfo:
    prog = validate.open_drgn(dump, vmlinux)
    zone, node = prog["vm_zone_stat"], prog["vm_node_stat"]

    def counter(array, name: str) -> int:
        return int(array[prog[name].value_()].counter)

    return SnapshotMeminfo(free=counter(zone, "NR_FREE_PAGES"), anon=counter(node, "NR_ANON_MAPPED"),
                           file=counter(node, "NR_FILE_PAGES"))


# Each class the note counts, and the counter that counts the same pages.
_COMPARED = {
    "free": lambda m: m.free,
    "user": lambda m: m.anon,
    "cache": lambda m: m.file,  # cache and cache-private together
}


def class_pages(note: elfcore.LivedumpNote) -> dict[str, int]:
    """The note's counts, page cache with and without private data as one."""
    if note.class_pages is None:
        raise ValueError(f"LIVEDUMP note version {note.version} has no page classes (version 3 has)")
    counts = dict(note.class_pages)
    counts["cache"] = counts["cache"] + counts.pop("cache-private")
    return counts


def class_problems(note: elfcore.LivedumpNote, meminfo: SnapshotMeminfo, *, tolerance: float = 0.05,
                   slack_pages: int = 64) -> list[str]:
    """Classes whose count in the note is off the snapshot's counter by more than ``tolerance`` of the
    larger of the two plus ``slack_pages`` (pages in flight between lists: a few per CPU)."""
    counts = class_pages(note)
    problems = []
    for name, of in _COMPARED.items():
        ours, theirs = counts[name], of(meminfo)
        if abs(ours - theirs) > tolerance * max(ours, theirs) + slack_pages:
            problems.append(f"{name}: the note counts {ours} pages, the snapshot's counter {theirs}")
    return problems


def excluded_problems(note: elfcore.LivedumpNote, loads: tuple[elfcore.Segment, ...]) -> list[str]:
    """The pages left out are the RAM the PT_LOAD segments do not cover, and no more than the classes the
    note says were left out hold."""
    problems = []
    in_loads = sum(s.filesz for s in loads) // PAGE_BYTES
    if in_loads != note.pages_total:
        problems.append(f"the note counts {note.pages_total} pages dumped, the PT_LOAD segments hold {in_loads}")
    ram = sum(note.class_pages.values())
    if ram != note.pages_total + note.excluded_pages:
        problems.append(f"RAM by class is {ram} pages, dumped {note.pages_total} + left out {note.excluded_pages}")
    left_out_classes = sum(note.class_pages[c] for c in note.excluded_classes)
    if note.excluded_pages > left_out_classes:
        problems.append(f"{note.excluded_pages} pages left out, the classes left out "
                        f"({','.join(note.excluded_classes) or 'none'}) hold {left_out_classes}")
    return problems
