"""``harness oracle``: livedumps under load against QEMU's capture of the same instant (kernel patch 0040).

Three dumps under the e2e load and the torture load: every differing page is explained. The negative
control, dumps without write protection, must leave pages unexplained: the oracle can fail.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harness import cli, oraclecheck

pytestmark = pytest.mark.qemu


def oracle_runs(pipeline, tmp_path, *extra: str) -> tuple[int, list[dict]]:
    status = cli.main(["oracle", "--artifacts", str(tmp_path), "--accel",
                       pipeline.accel(pipeline.build().bzimage).accel, *extra])
    run = (tmp_path / "latest").resolve()
    path = run / "oracle.json"
    assert path.is_file(), (run / "result.json").read_text()
    return status, json.loads(path.read_text())


def unexplained_summary(run: dict) -> str:
    """The unexplained pages of a run grouped by what owned them, first pfn of each: short enough to survive
    in a CI log's excerpt (oracle.json in the run directory has up to 200 of them)."""
    report = run["report"]
    owners = Counter(d["owner"] for d in report["unexplained"])
    first = {}
    for d in report["unexplained"]:
        first.setdefault(d["owner"], d["pfn"])
    return (f"run {run['index']}: {report['differing'][oraclecheck.UNEXPLAINED]} unexplained pages; by owner: "
            + "; ".join(f"{owner}: {n} (first pfn {first[owner]:#x})" for owner, n in owners.most_common(8)))


def failed_summary(run: dict) -> str:
    c = run["counters"]
    full = " (the reserve was full)" if c.get("reserve_used_max") == c.get("reserve_pages") else ""
    return (f"run {run['index']}: {c['failed_pages']} failed pages, {c.get('cow_faults')} COW faults, reserve "
            f"{c.get('reserve_pages')} pages, at most {c.get('reserve_used_max')} used{full}")


def test_three_dumps_under_load_every_difference_explained(pipeline, tmp_path, show):
    pipeline.build()
    status, runs = oracle_runs(pipeline, tmp_path, "--runs", "3")
    assert len(runs) == 3
    for r in runs:
        assert r["error"] is None, r["error"]
        report = r["report"]
        differing = report["differing"]
        show(f"oracle run {r['index']}: {report['pages']} pages, {report['identical']} identical, "
             + ", ".join(f"{cls} {n}" for cls, n in differing.items() if n))
        assert report["not_in_capture"] == 0
        assert report["pages"] == int(r["counters"]["pages_total"])
        # First, as a failed page of the memmap tears what the classification reads (the free lists).
        assert int(r["counters"]["failed_pages"]) == 0, failed_summary(r)
        assert report["identical"] + sum(differing.values()) == report["pages"]
        assert differing[oraclecheck.UNEXPLAINED] == 0, unexplained_summary(r)
        assert report["problems"] == []  # a consistent snapshot reads whole
        # The load ran: free pages, livedump's buffers and the stop's own writes were there to explain.
        assert differing[oraclecheck.FREE] > 0 and differing[oraclecheck.OWN] > 0
        assert differing[oraclecheck.STOP_PERCPU] > 0 and differing[oraclecheck.PROTECTED_ENTRIES] > 0
    assert status == 0


def test_a_filtered_dump_holds_the_instant_for_every_page_it_keeps(pipeline, tmp_path, show):
    """The default filter (user, free and livedump's own pages left out): what is kept, in its many PT_LOADs,
    is each page's content at the instant, at its physical address."""
    status, runs = oracle_runs(pipeline, tmp_path, "--runs", "1", "--exclude", "default")
    report = runs[0]["report"]
    assert report is not None, runs[0]["error"]
    differing = report["differing"]
    show(f"oracle, default filter: {report['pages']} pages, {report['identical']} identical, "
         + ", ".join(f"{cls} {n}" for cls, n in differing.items() if n))
    assert report["pages"] == int(runs[0]["counters"]["pages_total"])
    assert differing[oraclecheck.UNEXPLAINED] == 0, unexplained_summary(runs[0])
    assert differing[oraclecheck.FREE] == 0  # left out, so never compared
    assert status == 0


def test_the_negative_control_without_write_protection_is_caught(pipeline, tmp_path, show):
    status, runs = oracle_runs(pipeline, tmp_path, "--runs", "1", "--test-no-wrprotect")
    report = runs[0]["report"]
    assert report is not None, runs[0]["error"]
    show(f"oracle, no write protection: {report['differing'][oraclecheck.UNEXPLAINED]} unexplained pages, e.g. "
         + "; ".join(u["owner"] for u in report["unexplained"][:3]))
    assert report["differing"][oraclecheck.UNEXPLAINED] > 0
    assert status == 1
