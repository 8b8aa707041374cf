"""summary: the run's status word, counts and pacing as summary.json holds them, from plain values.

Pure: counts, facts and a pacing report in, a `layout.Summary` or a dict out.
"""

from __future__ import annotations

import json
import math

import pytest

from exporter.archive.layout import FileReport
from exporter.errors import ExitCode, Reason
from exporter.outcomes import FetchStats
from exporter.pacing import Halt, HaltDetail, PacingReport
from exporter.plan import PlanCounts
from exporter.summary import RunFacts, build_summary, pacing_report, run_counts, run_status


@pytest.mark.parametrize(
    ("exit_code", "status"),
    [
        (ExitCode.OK, "complete"),
        (ExitCode.INCOMPLETE, "incomplete"),
        (ExitCode.AUTH, "auth_refused"),
        (ExitCode.ARCHIVE, "archive_error"),
        (ExitCode.BUDGET, "budget_reached"),
        (ExitCode.API_UNAVAILABLE, "api_unavailable"),
        (ExitCode.SIGINT, "interrupted"),
        (ExitCode.SIGTERM, "interrupted"),
        (ExitCode.USAGE, "error"),
        (ExitCode.INTERNAL, "error"),
        (99, "error"),
        (-9, "error"),
    ],
)
def test_every_exit_code_has_its_status_word(exit_code: int, status: str) -> None:
    """Each way a run ends has one word; a code the exporter never uses is `error`, not an exception."""
    assert run_status(exit_code) == status


def test_counts_tell_failures_from_ids_never_sent_and_ids_not_reached() -> None:
    """404s, invalid ids and other failures are counted apart; what was planned and neither exported
    nor failed after a request is `not_attempted` (a stopped run's remainder)."""
    plan = PlanCounts(entries=100, to_fetch=80, duplicates=5, already_archived=10, known_missing=2, invalid=3)
    failures: dict[str, int] = {
        Reason.NOT_FOUND: 6,
        Reason.INVALID_ID: 3,
        Reason.TIMEOUT: 4,
        Reason.HTTP_ERROR: 1,
    }
    stats = FetchStats(requests=90, retries=7, rate_limited=2)
    counts = run_counts(plan, 60, failures, stats)
    assert counts == {
        "manifest_entries": 100,
        "exported": 60,
        "already_archived": 10,
        "duplicates": 5,
        "not_found": 6,
        "invalid": 3,
        "failed": 5,
        "other_shard": 0,
        # 80 planned; 60 exported; 14 failures less 3 invalid and 2 known missing (never sent) = 9.
        "not_attempted": 11,
        "requests": 90,
        "retries": 7,
        "rate_limited": 2,
    }


def test_not_attempted_is_never_negative() -> None:
    """Failures recorded without a request (known missing) never push not_attempted below zero."""
    counts = run_counts(PlanCounts(to_fetch=1), 1, {Reason.NOT_FOUND: 3}, FetchStats())
    assert counts["not_attempted"] == 0


def _report(**changes: object) -> PacingReport:
    values: dict[str, object] = {
        "paused_s": {"retry_after": 6.0},
        "rate_per_s": math.inf,
        "rate_cuts": 0,
        "outages": 0,
        "outage_checks": 0,
        "halt": None,
    }
    values.update(changes)
    return PacingReport(**values)  # type: ignore[arg-type]


def test_pacing_is_exact_json_without_infinities() -> None:
    """No limit at the end is null (JSON has no infinity); a pace and a wait are rounded to 1 ms."""
    assert pacing_report(_report()) == {
        "paused_s": {"retry_after": 6.0},
        "rate_cuts": 0,
        "rate_per_s_at_end": None,
        "outages": 0,
        "outage_checks": 0,
        "halt": None,
    }
    halt = HaltDetail(Halt.API_UNAVAILABLE, "api", "the API is down", "2027-01-01T00:00:00Z", 12.34567)
    written = pacing_report(_report(rate_per_s=2.71828, rate_cuts=3, halt=halt))
    assert written["rate_per_s_at_end"] == 2.718
    assert written["halt"] == {
        "reason": Halt.API_UNAVAILABLE.value,
        "cause": "api",
        "message": "the API is down",
        "resume_at": "2027-01-01T00:00:00Z",
        "wait_s": 12.346,
    }
    json.dumps(written, allow_nan=False)


def _facts(elapsed_s: float, exit_code: int = ExitCode.OK) -> RunFacts:
    return RunFacts(
        run=2,
        started_at="2026-12-02T22:00:00Z",
        finished_at="2026-12-02T22:00:10Z",
        elapsed_s=elapsed_s,
        exit_code=exit_code,
        manifest="ids.txt",
        base_url="https://api.example",
        shard="1/3",
        superseded_to=None,
    )


def test_the_summary_adds_up_its_files_and_drops_empty_reasons() -> None:
    """Records and bytes are the files' sums; failed_by_reason lists only reasons that happened, sorted."""
    files = (
        FileReport(name="records-00001.ndjson", bytes=1000, lines=10, sha256="ab" * 32, closed=True),
        FileReport(name="records-00002.ndjson", bytes=250, lines=3, sha256=None, closed=False),
    )
    failures: dict[str, int] = {Reason.TIMEOUT: 2, Reason.AUTH: 0, Reason.HTTP_ERROR: 1}
    summary = build_summary(_facts(2.0), {"exported": 13}, failures, files, 3)
    assert (summary.records, summary.bytes, summary.files) == (13, 1250, files)
    assert summary.failed_by_reason == {"http_error": 1, "timeout": 2}
    assert (summary.status, summary.records_per_s, summary.failed_listed) == ("complete", 6.5, 3)
    assert summary.pacing == {"paused_s": {}, "rate_cuts": 0}


def test_a_run_of_no_time_has_a_finite_rate() -> None:
    """An elapsed time of 0 (a run stopped at once) gives a rate JSON can hold, not a ZeroDivisionError."""
    summary = build_summary(_facts(0.0, ExitCode.SIGINT), {"exported": 0}, {}, (), 0)
    assert (summary.status, summary.records_per_s, summary.elapsed_s) == ("interrupted", 0.0, 0.0)
