"""Archives written the way the pipeline drives `Archive`, without a server: for the offline commands' tests.

Plain functions, imported by the tests that need them (fixtures live in conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings
from exporter.digests import DigestSet
from exporter.offline.verify_report import Problem, Report
from exporter.outcomes import FetchStats
from exporter.plan import PlanCounts
from exporter.summary import RunFacts, build_summary, run_counts

T0 = "2026-01-01T00:00:00.000Z"


def line_of(record_id: str) -> bytes:
    """A record line; the same length for ids of the same length, so damage does not shift lines."""
    return json.dumps({"id": record_id, "text": "payload-" + record_id, "n": 1}).encode() + b"\n"


def export_run(
    out: Path,
    batches: Sequence[Sequence[str]],
    *,
    failures: Sequence[tuple[str, str]] = (),
    finish: bool = True,
    raw: Sequence[tuple[str, bytes]] = (),
    **changes: object,
) -> None:
    """One run the way pipeline.py drives Archive: commits, failures, end entry, summary.

    With `finish=False` the run stops after its commits, as a `kill -9` would leave it.
    """
    settings = ArchiveSettings(out_dir=out, **changes)  # type: ignore[arg-type]
    archive = Archive.open(settings, RunRequest(started_at=T0, refetch=False, manifest="m.txt", shard=None))
    try:
        for batch in batches:
            archive.commit([(i, line_of(i)[:-1]) for i in batch])
        if raw:
            archive.commit([(i, line[:-1]) for i, line in raw])
        if not finish:
            return
        archive.record_failures(
            [json.dumps({"id": i, "reason": r, "error": "x", "at": T0}).encode() + b"\n" for i, r in failures]
        )
        failed_lines = archive.write_failed(DigestSet())
        files = archive.files_report()
        by_reason: dict[str, int] = {}
        for _, reason in failures:
            by_reason[reason] = by_reason.get(reason, 0) + 1
        exported = sum(map(len, batches)) + len(raw)
        counts = run_counts(PlanCounts(), exported, by_reason, FetchStats())
        archive.end_run(at=T0, exit_code=0, status="complete", counts=counts)
        facts = RunFacts(
            run=archive.run,
            started_at=T0,
            finished_at=T0,
            elapsed_s=1.0,
            exit_code=0,
            manifest="m.txt",
            base_url="http://api",
            shard=None,
            superseded_to=None,
        )
        archive.write_summary(build_summary(facts, counts, by_reason, files, failed_lines))
    finally:
        archive.close()


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:03d}" for n in range(count)]


def only(report: Report, text: str) -> Problem:
    """The one problem whose message contains `text`."""
    found = [p for p in report.problems if text in p.message]
    assert len(found) == 1, (text, [str(p) for p in report.findings])
    return found[0]
