"""How a run ends: its exit code, then its end on disk (failed.ndjson, the checkpoint's end, summary.json).

Every run that opened its archive ends here, however it ended (a full
manifest, a signal, a budget, a broken disk): the writer has committed every
result handed to it, and these three writes make the archive say so. The exit
code comes first because the checkpoint's end entry and summary.json record it.

The exit code has one rule: the run's `Stop`, if it was asked to stop (which
reason that is was decided as the reasons came, by `Stop.merge`); otherwise 1
if any id failed, else 0.
"""

from __future__ import annotations

import time

from exporter.archive.layout import Summary
from exporter.archive.writer import Archive
from exporter.config import ExportConfig
from exporter.errors import ExitCode
from exporter.logs import rfc3339
from exporter.outcomes import FetchStats
from exporter.pacing import PacingReport
from exporter.plan import Planner
from exporter.stops import Stop
from exporter.summary import RunFacts, build_summary, pacing_report, run_counts, run_status

from .committer import Committer


def exit_code(stopping: Stop | None, committed: Committer) -> int:
    """The run's exit code: why it was stopped, else whether an id failed."""
    if stopping is not None:
        return int(stopping.reason)
    return int(ExitCode.INCOMPLETE if sum(committed.failures.values()) else ExitCode.OK)


def finish(
    archive: Archive,
    planner: Planner,
    *,
    config: ExportConfig,
    committed: Committer,
    stats: FetchStats,
    pacing: PacingReport | None,
    exit_code: int,
    message: str | None,
    started_epoch: float,
    elapsed_s: float,
) -> Summary:
    """End-of-run bookkeeping, in the writer thread: failed.ndjson, checkpoint end, summary."""
    failed_lines = archive.write_failed(planner.seen)
    counts = run_counts(planner.counts, committed.exported, committed.failures, stats)
    finished_at = rfc3339(time.time())
    files = archive.files_report()
    archive.end_run(
        at=finished_at,
        exit_code=exit_code,
        status=run_status(exit_code),
        counts=counts,
        message=message,
    )
    facts = RunFacts(
        run=archive.run,
        started_at=rfc3339(started_epoch),
        finished_at=finished_at,
        elapsed_s=elapsed_s,
        exit_code=exit_code,
        manifest=config.manifest.display,
        base_url=config.http.base_url,
        proxy=config.http.proxy.url if config.http.proxy is not None else None,
        shard=str(config.shard) if config.shard else None,
        superseded_to=str(archive.superseded_to) if archive.superseded_to else None,
    )
    report = pacing_report(pacing) if pacing is not None else None
    summary = build_summary(facts, counts, dict(committed.failures), files, failed_lines, report)
    archive.write_summary(summary)
    return summary
