"""pageclasses compares a note's RAM by class with the snapshot's vmstat counters, and its pages left out
with the PT_LOAD segments."""

from __future__ import annotations

import dataclasses

import pytest

from harness import elfcore, pageclasses

CLASSES = {"kernel": 7000, "cache": 1700, "cache-private": 400, "user": 65600, "free": 51600, "own": 3700,
           "unknown": 0}
RAM = sum(CLASSES.values())


def make_note(*, exclude: int = 0x38, classes: dict | None = None, pages_total: int | None = None,
              excluded: int | None = None, version: int = 3) -> elfcore.LivedumpNote:
    classes = dict(CLASSES if classes is None else classes)
    left_out = sum(classes[c] for c in elfcore.class_names(exclude))
    excluded = left_out if excluded is None else excluded
    pages_total = RAM - excluded if pages_total is None else pages_total
    return elfcore.LivedumpNote(
        version=version, nr_cpus=2, start_time_ns=0, pause_ns=1, pages_total=pages_total, cow_faults=0,
        stop_copied=0, zero_pages=0, protected_entries=1, failed_pages=0, nr_listed=0, reason="", failed_pfns=(),
        exclude=exclude if version >= 3 else None, class_pages=classes if version >= 3 else None,
        excluded_pages=excluded if version >= 3 else None)


MEMINFO = pageclasses.SnapshotMeminfo(free=51600, anon=65590, file=2110)


def loads(pages: int, pieces: int = 3) -> tuple[elfcore.Segment, ...]:
    sizes = [pages // pieces] * (pieces - 1) + [pages - pages // pieces * (pieces - 1)]
    return tuple(elfcore.Segment(elfcore.PT_LOAD, 0, 0, 0, n * 4096, n * 4096, 0) for n in sizes)


def test_counts_that_agree_pass():
    assert pageclasses.class_problems(make_note(), MEMINFO) == []


@pytest.mark.parametrize("field,value,named", [("free", 40000, "free"), ("anon", 30000, "user"),
                                               ("file", 4000, "cache")])
def test_a_class_off_by_more_than_the_tolerance_is_named(field, value, named):
    problems = pageclasses.class_problems(make_note(), dataclasses.replace(MEMINFO, **{field: value}))
    assert len(problems) == 1 and problems[0].startswith(f"{named}:"), problems


def test_page_cache_counts_with_and_without_private_data():
    # 1700 + 400 is the file counter's 2100: neither alone would be.
    assert pageclasses.class_pages(make_note())["cache"] == 2100
    assert pageclasses.class_problems(make_note(), dataclasses.replace(MEMINFO, file=1700)) != []


def test_a_note_without_classes_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="no page classes"):
        pageclasses.class_problems(make_note(version=2), MEMINFO)


def test_left_out_pages_match_the_segments():
    note = make_note()
    assert pageclasses.excluded_problems(note, loads(note.pages_total)) == []


def test_segments_that_hold_other_than_the_note_says_are_found():
    note = make_note()
    assert pageclasses.excluded_problems(note, loads(note.pages_total + 1))[0].startswith("the note counts")


def test_more_left_out_than_the_classes_left_out_hold_is_found():
    # Nothing was to be left out, yet pages are missing from the segments.
    note = make_note(exclude=0, excluded=100)
    problems = pageclasses.excluded_problems(note, loads(note.pages_total))
    assert problems and "classes left out (none) hold 0" in problems[-1], problems


def test_ram_not_accounted_for_is_found():
    note = make_note(pages_total=RAM - 121_000 + 5)  # dumped + left out is not RAM
    problems = pageclasses.excluded_problems(note, loads(note.pages_total))
    assert any(p.startswith("RAM by class") for p in problems), problems
