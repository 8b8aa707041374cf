"""`exporter export --dry-run`: what a run would do, from the manifest and the archive alone.

Read-only by construction: it opens the archive directory read-only
(`SafeDir.open_existing`), reads the index, the checkpoint and failed.ndjson
through it (never through a link), takes no lock and writes nothing, so it
answers while another run holds the archive; a line that run is appending
shows as a torn tail and is left out. No request is sent: the token is not
even read. The archived ids come from the archive's index (`archive/index.py`),
the part of the checkpoint it does not cover replayed into memory. It reads
them as a run does, a bounded line at a time: damage in the checkpoint is
exit 4, a failed.ndjson line that is not an entry a warning. Records files a
run would refuse to add to (missing, cut short, not listed, records without a
checkpoint) are exit 4 too, with the run's own message
(`reader.check_records_files`).

The counts come from the same `Planner` a run uses, over the same archived
and known-missing sets, so the dry run and the run cannot disagree on what
is skipped. When nothing but the manifest's repeats is left to decide (no
archive yet, no shard, no earlier failures), the planner counts them for the
whole manifest at its end instead of deciding each id (`counts_only`,
`distinct.py`): a fresh dry run of ten million ids in 9 s rather than 25.

The time is the shortest the fetch can take at `--rate` (one request per id,
no retry, no 429), and what `--max-requests` and `--max-duration` leave for a
later run.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from exporter.archive.archived import ArchivedIds
from exporter.archive.index import open_view
from exporter.archive.layout import FAILED_NAME, SUPERSEDED_DIR
from exporter.archive.reader import (
    check_records_files,
    check_same_shard,
    failed_entries,
    has_checkpoint,
    open_directory,
    refuse_records_only,
    refuse_unsafe,
    resumes_refetch,
    unsafe_entries,
    warned,
)
from exporter.config import ManifestSource, Shard
from exporter.digests import ArchivedLookup, DigestSet, id_digest
from exporter.display import escape
from exporter.errors import Reason
from exporter.manifest import open_manifest
from exporter.plan import Planner

_PLAN_BATCH = 4096
#: failed.ndjson reasons a run decides again from the manifest itself, not from the report.
_DECIDED_AGAIN = frozenset({Reason.INVALID_ID, Reason.BAD_MANIFEST_LINE, Reason.NOT_FOUND})


@dataclass(frozen=True, kw_only=True, slots=True)
class DryRunRequest:
    """The options of the run that would be made."""

    manifest: ManifestSource
    out_dir: Path
    shard: Shard | None = None
    retry_failed: bool = False
    refetch: bool = False
    rate_per_s: float = 10.0
    max_requests: int | None = None
    max_duration_s: float | None = None
    #: How the report and its errors name the archive when `out_dir` is only a private copy of it
    #: (an s3:// URL); None: `out_dir` is the archive.
    shown: str | None = None

    @property
    def archive(self) -> str:
        return str(self.out_dir) if self.shown is None else self.shown


@dataclass(frozen=True, kw_only=True, slots=True)
class DryRunReport:
    """What the run would do; `to_json` is `--json`'s object."""

    manifest: str
    out: str
    archive_exists: bool
    #: --refetch would set the archive aside and start a new one.
    starts_over: bool
    manifest_entries: int
    to_fetch: int
    already_archived: int
    duplicates: int
    #: Invalid ids and bad manifest lines (recorded as failures without a request).
    invalid: int
    other_shard: int
    #: Found missing (404) by an earlier run and skipped (without --retry-failed).
    not_found_skipped: int
    #: Found missing by an earlier run and asked again (--retry-failed); part of `to_fetch`.
    not_found_retried: int
    #: Failed for another reason in an earlier run and tried again; part of `to_fetch`.
    failed_retried: int
    rate_per_s: float | None
    #: At --rate, one request per id: the fetch cannot be shorter (None: no --rate ceiling).
    min_fetch_s: float | None
    max_requests: int | None
    max_duration_s: float | None
    #: Requests --max-requests and --max-duration (at --rate) allow; None: no budget bounds them.
    requests_allowed: int | None
    #: Ids a budget leaves for the next run (exit 5), counted at one request each.
    left_for_next_run: int


def dry_run(request: DryRunRequest, stdin: BinaryIO | None = None) -> DryRunReport:
    """Plan the run without running it; raises ManifestError (exit 2) or ArchiveError (exit 4)."""
    with contextlib.ExitStack() as stack:
        view = _read_archive(request, stack)
        return _plan(request, view, stdin)


def _plan(request: DryRunRequest, view: _ArchiveView, stdin: BinaryIO | None) -> DryRunReport:
    known_missing, failed_before = view.known_missing, view.failed_before
    not_found_retried = failed_retried = 0
    check_missing = request.retry_failed and len(known_missing) > 0
    check_failed = len(failed_before) > 0
    with open_manifest(request.manifest, stdin) as entries:
        planner = Planner(
            entries,
            archived=view.archived,
            known_missing=known_missing,
            retry_failed=request.retry_failed,
            shard=request.shard,
            # Only these two need the ids to fetch; otherwise the counts alone do.
            counts_only=not (check_missing or check_failed),
        )
        while (batch := planner.next_batch(_PLAN_BATCH)) is not None:
            if not (check_missing or check_failed):
                continue
            for record_id in batch.fetch:
                digest = id_digest(record_id)
                if check_missing and digest in known_missing:
                    not_found_retried += 1
                elif check_failed and digest in failed_before:
                    failed_retried += 1
    counts = planner.counts
    rate = request.rate_per_s if request.rate_per_s > 0 else None
    allowed = _requests_allowed(rate, request.max_requests, request.max_duration_s)
    return DryRunReport(
        manifest=request.manifest.display,
        out=request.archive,
        archive_exists=view.exists,
        starts_over=view.starts_over,
        manifest_entries=counts.entries,
        to_fetch=counts.to_fetch,
        already_archived=counts.already_archived,
        duplicates=counts.duplicates,
        invalid=counts.invalid + counts.bad_lines,
        other_shard=counts.other_shard,
        not_found_skipped=counts.known_missing,
        not_found_retried=not_found_retried,
        failed_retried=failed_retried,
        rate_per_s=rate,
        min_fetch_s=round(counts.to_fetch / rate, 3) if rate is not None else None,
        max_requests=request.max_requests,
        max_duration_s=request.max_duration_s,
        requests_allowed=allowed,
        left_for_next_run=max(0, counts.to_fetch - allowed) if allowed is not None else 0,
    )


def _requests_allowed(
    rate: float | None, max_requests: int | None, max_duration_s: float | None
) -> int | None:
    bounds = []
    if max_requests is not None:
        bounds.append(max_requests)
    if max_duration_s is not None and rate is not None:
        bounds.append(math.floor(rate * max_duration_s))
    return min(bounds) if bounds else None


@dataclass(slots=True)
class _ArchiveView:
    """The archive as the run would find it."""

    exists: bool = False
    #: --refetch would set the archive aside: nothing of it counts.
    starts_over: bool = False
    archived: ArchivedLookup = field(default_factory=DigestSet)
    known_missing: DigestSet = field(default_factory=DigestSet)
    failed_before: DigestSet = field(default_factory=DigestSet)


def _read_archive(request: DryRunRequest, stack: contextlib.ExitStack) -> _ArchiveView:
    """The archived ids (from the index, open until `stack` closes) and earlier failures, as a run reads them.

    As `Archive.open` reads them, minus the lock and minus writing the index's
    tail: what the index does not cover is replayed into memory.
    """
    root = request.out_dir
    if not os.path.lexists(root):
        return _ArchiveView()
    view = _ArchiveView(exists=True)
    directory = stack.enter_context(open_directory(root))
    # A run would refuse any of them (exit 4) before reading anything.
    refuse_unsafe(root, unsafe_entries(directory))
    refuse_records_only(root, directory)
    if not has_checkpoint(directory):
        return view
    index = stack.enter_context(open_view(directory))
    state = index.state
    if request.refetch and not resumes_refetch(state.runs):
        return _ArchiveView(exists=True, starts_over=True)
    check_same_shard(request.archive, state, str(request.shard) if request.shard else None)
    if request.shown is None:  # as the run checks them before it writes (a copy of s3:// has none)
        check_records_files(lambda name: str(root / name), directory, state)
    view.archived = ArchivedIds(index)
    for entry in warned(failed_entries(directory)):
        if entry.cut:
            continue  # a cut id names no id of the manifest
        if entry.reason == Reason.NOT_FOUND:
            view.known_missing.add(id_digest(entry.id))
        elif entry.reason not in _DECIDED_AGAIN:
            view.failed_before.add(id_digest(entry.id))
    return view


def to_json(report: DryRunReport) -> dict[str, Any]:
    """`--dry-run --json`: one object, `dry_run: true` first."""
    return {"dry_run": True, **asdict(report)}


def render_text(report: DryRunReport) -> str:
    """The dry run for a person; each line escaped, since the manifest's and archive's names are anyone's."""
    lines = [f"dry run: nothing was sent and nothing written; manifest {report.manifest}"]
    if not report.archive_exists:
        lines.append(f"archive {report.out}: does not exist yet (a run creates it)")
    elif report.starts_over:
        lines.append(f"archive {report.out}: --refetch sets it aside under {SUPERSEDED_DIR}/ and starts over")
    else:
        lines.append(f"archive {report.out}")
    rows: list[tuple[str, int, str]] = [
        ("manifest entries", report.manifest_entries, ""),
        ("would fetch", report.to_fetch, _fetch_note(report)),
        ("already archived", report.already_archived, ""),
        ("repeated in the manifest", report.duplicates, ""),
        ("invalid", report.invalid, f"recorded in {FAILED_NAME}, never sent"),
        ("in other shards", report.other_shard, ""),
        ("not found before", report.not_found_skipped, "skipped; --retry-failed asks again"),
    ]
    width = max(len(f"{count:,}") for _, count, _ in rows)
    for label, count, note in rows:
        if count or label in ("manifest entries", "would fetch"):
            lines.append(f"  {label:<25}{count:>{width},}" + (f"   {note}" if note and count else ""))
    lines.append(_time_line(report))
    if report.requests_allowed is not None:
        budget = " and ".join(
            part
            for part in (
                f"--max-requests {report.max_requests:,}" if report.max_requests is not None else "",
                f"--max-duration {_duration(report.max_duration_s)}"
                if report.max_duration_s is not None and report.rate_per_s is not None
                else "",
            )
            if part
        )
        if report.left_for_next_run:
            lines.append(
                f"{budget} allow{'s' if ' and ' not in budget else ''} at most "
                f"{report.requests_allowed:,} requests: {report.left_for_next_run:,} ids are left "
                "for the next run (exit 5)"
            )
        else:
            lines.append(f"{budget}: enough for every id, if few need a retry")
    return "".join(escape(line) + "\n" for line in lines)


def _fetch_note(report: DryRunReport) -> str:
    parts = []
    if report.failed_retried:
        parts.append(f"{report.failed_retried:,} failed before, tried again")
    if report.not_found_retried:
        parts.append(f"{report.not_found_retried:,} not found before, asked again (--retry-failed)")
    return "; ".join(parts)


def _time_line(report: DryRunReport) -> str:
    if report.to_fetch == 0:
        return "time: nothing to fetch"
    if report.min_fetch_s is None:
        return "time: no --rate ceiling: as fast as the API and --concurrency allow"
    return (
        f"time: at --rate {report.rate_per_s:g}/s, at least {_duration(report.min_fetch_s)} for "
        f"{report.to_fetch:,} requests (retries and the API's own limits add to it)"
    )


def _duration(seconds: float | None) -> str:
    """`2h 46m 40s`, `90s`, `0.5s`."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.3g}s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{secs}s" if secs else "")
    return " ".join(part for part in parts if part)
