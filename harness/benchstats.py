"""Pure helpers for ``python -m harness bench``: parsing guest output and small statistics.

Nothing here talks to a guest, so all of it is unit-tested directly.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence

# /proc/meminfo names of the direct-map page sizes, and the suffix used in bench.json.
DIRECTMAP_SIZES = (("4k", "DirectMap4k"), ("2m", "DirectMap2M"), ("1g", "DirectMap1G"))


def meminfo_kb(meminfo: str) -> dict[str, int]:
    """Every ``Name:  N kB`` line of /proc/meminfo text, in kB."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\w+):\s+(\d+)\s*kB", meminfo, re.MULTILINE)}


def parse_directmap(meminfo: str) -> dict[str, int | None]:
    """{"4k": kB, "2m": kB, "1g": kB} from /proc/meminfo text; a line the kernel does not print is None."""
    values = meminfo_kb(meminfo)
    return {short: values.get(name) for short, name in DIRECTMAP_SIZES}


def parse_memory_list(spec: str) -> list[str]:
    """``512M,1G`` -> ["512M", "1G"], in the order given, without empty items or duplicates."""
    sizes: list[str] = []
    for item in spec.split(","):
        item = item.strip().upper()
        if item and item not in sizes:
            sizes.append(item)
    return sizes


def median(values: Iterable[float]) -> float | None:
    """The median, or None for no values."""
    values = list(values)
    return statistics.median(values) if values else None


def median_int(values: Iterable[int]) -> int | None:
    m = median(values)
    return None if m is None else round(m)


def max_or_none(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def int_field(status: Mapping[str, str], key: str) -> int | None:
    """An integer counter from a parsed ``livedump status``; None when the kernel does not report it."""
    value = status.get(key)
    if value is None or not value.strip().lstrip("-").isdigit():
        return None
    return int(value)


def parse_histogram(text: str) -> list[int]:
    """``fault_ns_log2=c0,c1,...`` value -> counts; bucket i counts latencies in [2^i, 2^(i+1)) ns."""
    text = text.strip()
    if not text:
        return []
    return [int(c) for c in text.split(",")]


def add_histograms(histograms: Iterable[Sequence[int]]) -> list[int]:
    total: list[int] = []
    for h in histograms:
        if len(h) > len(total):
            total += [0] * (len(h) - len(total))
        for i, c in enumerate(h):
            total[i] += c
    return total


def histogram_percentile(counts: Sequence[int], q: float) -> int | None:
    """Upper bound in ns (2^(i+1)) of the bucket holding the q-quantile (0 < q <= 1); None when empty.

    The quantile is the fault of rank ceil(q * total), counting from 1: with
    a log2 histogram the answer is only known to a power of two, and the upper
    bound never understates a latency.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return 1 << (i + 1)
    raise AssertionError("unreachable: rank <= total")


def mib_per_s(nbytes: int, ns: int) -> float | None:
    if nbytes <= 0 or ns <= 0:
        return None
    return nbytes / (1 << 20) / (ns / 1e9)


def rate_per_s(ops: int, ns: int) -> float | None:
    return None if ns <= 0 else ops / (ns / 1e9)


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den
