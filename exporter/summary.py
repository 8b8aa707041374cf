"""What goes in summary.json: a run's status word, counts and pacing, built into `layout.Summary`.

Built here from plain counts; the file's shape is `archive/layout.py`'s
`Summary`, written atomically by the archive at the end of every run,
interrupted ones included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .archive.layout import FileReport, Summary
from .errors import ExitCode, Reason
from .outcomes import FetchStats
from .pacing import PacingReport
from .plan import PlanCounts

_STATUS = {
    ExitCode.OK: "complete",
    ExitCode.INCOMPLETE: "incomplete",
    ExitCode.AUTH: "auth_refused",
    ExitCode.ARCHIVE: "archive_error",
    ExitCode.BUDGET: "budget_reached",
    ExitCode.API_UNAVAILABLE: "api_unavailable",
    ExitCode.SIGINT: "interrupted",
    ExitCode.SIGTERM: "interrupted",
}


def run_status(exit_code: int) -> str:
    """The word for how a run ended; `complete` and `incomplete` mean it read the whole manifest."""
    try:
        return _STATUS.get(ExitCode(exit_code), "error")
    except ValueError:
        return "error"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFacts:
    """Who ran what, when: the parts of the summary that are not counts."""

    run: int
    started_at: str
    finished_at: str
    elapsed_s: float
    exit_code: int
    manifest: str
    base_url: str
    shard: str | None
    #: The proxy the run went through, without credentials (`http://host:port`), or None.
    proxy: str | None = None
    superseded_to: str | None


def run_counts(
    plan: PlanCounts, exported: int, failures: Mapping[str, int], stats: FetchStats
) -> dict[str, int]:
    """The per-run counts, also logged in the checkpoint's end entry."""
    invalid = failures.get(Reason.INVALID_ID, 0) + failures.get(Reason.BAD_MANIFEST_LINE, 0)
    not_found = failures.get(Reason.NOT_FOUND, 0)
    failed = sum(failures.values()) - invalid - not_found
    fetched_failures = sum(failures.values()) - invalid - plan.known_missing
    return {
        "manifest_entries": plan.entries,
        "exported": exported,
        "already_archived": plan.already_archived,
        "duplicates": plan.duplicates,
        "not_found": not_found,
        "invalid": invalid,
        "failed": failed,
        "other_shard": plan.other_shard,
        "not_attempted": max(0, plan.to_fetch - exported - fetched_failures),
        "requests": stats.requests,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
    }


def pacing_report(report: PacingReport) -> dict[str, Any]:
    """How the API's limits shaped the run: seconds held by reason, rate cuts, the pace at the end,
    outages and the checks that told them from broken ids, and why the pool halted (`halt`: its
    reason, what it blames, the line the user saw, when the API said to come back; or null)."""
    halt = report.halt
    return {
        "paused_s": dict(report.paused_s),
        "rate_cuts": report.rate_cuts,
        "rate_per_s_at_end": None if math.isinf(report.rate_per_s) else round(report.rate_per_s, 3),
        "outages": report.outages,
        "outage_checks": report.outage_checks,
        "halt": None
        if halt is None
        else {
            "reason": halt.halt.value,
            "cause": halt.cause,
            "message": halt.message,
            "resume_at": halt.resume_at,
            "wait_s": None if halt.wait_s is None else round(halt.wait_s, 3),
        },
    }


def build_summary(
    facts: RunFacts,
    counts: Mapping[str, int],
    failures: Mapping[str, int],
    files: Sequence[FileReport],
    failed_lines: int,
    pacing: Mapping[str, Any] | None = None,
) -> Summary:
    """The summary of the run `facts` tells of."""
    elapsed = max(facts.elapsed_s, 1e-9)
    return Summary(
        run=facts.run,
        status=run_status(facts.exit_code),
        exit_code=facts.exit_code,
        started_at=facts.started_at,
        finished_at=facts.finished_at,
        elapsed_s=round(facts.elapsed_s, 3),
        records_per_s=round(counts.get("exported", 0) / elapsed, 2),
        manifest=facts.manifest,
        base_url=facts.base_url,
        proxy=facts.proxy,
        shard=facts.shard,
        counts=dict(counts),
        failed_by_reason={str(k): v for k, v in sorted(failures.items()) if v},
        pacing=dict(pacing) if pacing is not None else {"paused_s": {}, "rate_cuts": 0},
        records=sum(f.lines for f in files),
        bytes=sum(f.bytes for f in files),
        files=tuple(files),
        failed_listed=failed_lines,
        superseded_to=facts.superseded_to,
    )
