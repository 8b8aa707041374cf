"""`exporter status`: what an archive holds and how its runs went, for a person or a script.

Read-only and quick: it reads the checkpoint's state from the archive's index
(replaying only the part of the checkpoint the index does not cover; never
the records), stats the records files, reads failed.ndjson and summary.json, and asks whether a run
holds the archive's lock right now. A link, FIFO or device where the archive
keeps a file is listed as refused and never opened. A failed.ndjson line or a
summary.json that is not what the writer writes (too long, not JSON) is listed
as skipped; the checkpoint is the truth, and damage in it is exit 4.
`exporter verify` is the one that reads every byte.

`gather_status` builds an `ArchiveStatus`; `render_text` and `to_json` show it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from exporter.archive.index import IndexReport, open_view
from exporter.archive.layout import (
    CHECKPOINT_NAME,
    FAILED_NAME,
    SUMMARY_NAME,
    SUPERSEDED_DIR,
    ArchiveKind,
    FileReport,
    archive_kind,
    checkpoint_path,
    failed_path,
    file_number,
    not_an_archive,
    summary_path,
)
from exporter.archive.reader import (
    LockState,
    RunState,
    Unreadable,
    open_directory,
    probe_lock,
    read_failed,
    read_summary,
    refuse_unsafe,
    size_on_disk,
    unsafe_entries_at,
)
from exporter.display import escape, json_text
from exporter.errors import ArchiveError

#: Failed ids shown per reason.
FIRST_IDS = 3
#: Runs and files listed in the text view (the newest); --json lists all.
TEXT_ROWS = 10
#: Lines of failed.ndjson that are not entries listed (the first); the rest are counted.
SKIPPED_ROWS = 10
#: Reasons counted apart (the exporter writes nine); lines of any further reason are counted as one group,
#: so a failed.ndjson of a million made-up reasons costs no more than one of nine.
MAX_REASONS = 16
OTHER_REASONS = "(other reasons)"


@dataclass(frozen=True, kw_only=True, slots=True)
class FileStatus(FileReport):
    """One records file as summary.json lists it (committed size and lines), and what the disk holds.

    `sha256` is from the close entry, or for the open file from a summary.json that matches it.
    """

    #: Bytes on disk; None when the file is missing.
    disk_bytes: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class FailureGroup:
    """The failed ids of one reason."""

    reason: str
    count: int
    first_ids: list[str]


class Skipped(NamedTuple):
    """A report file, or one line of it, that status did not read: it is not what the writer writes."""

    name: str
    line: int | None
    problem: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Generation:
    """An earlier generation set aside by --refetch."""

    name: str
    files: int
    bytes: int
    records: int | None


@dataclass(kw_only=True, slots=True)
class ArchiveStatus:
    """Everything `exporter status` shows."""

    #: The archive as shown: its directory, or the s3:// URL of one read from a private copy.
    archive: str
    lock: LockState
    runs: list[RunState] = field(default_factory=list)
    files: list[FileStatus] = field(default_factory=list)
    records: int = 0
    failures: list[FailureGroup] = field(default_factory=list)
    last_error: str | None = None
    superseded: list[Generation] = field(default_factory=list)
    #: The last checkpoint line is torn: the last run was killed mid-commit.
    torn_tail: bool = False
    #: (name, what it is) of links, FIFOs, ... where the archive keeps a file: not read.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: The index: its runs and how much of the checkpoint they cover.
    index: IndexReport = field(default_factory=IndexReport)
    #: summary.json if it is not a summary, and the first `SKIPPED_ROWS` failed.ndjson lines not entries.
    skipped: list[Skipped] = field(default_factory=list)
    #: How many there were in all.
    skipped_total: int = 0

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def failed(self) -> int:
        return sum(g.count for g in self.failures)


def gather_status(root: Path) -> ArchiveStatus:
    """Read what `exporter status` shows about the archive in `root`."""
    ckpt = checkpoint_path(root)
    if archive_kind(root) is not ArchiveKind.ARCHIVE:
        raise not_an_archive(root)
    unsafe = unsafe_entries_at(root)
    skipped = {name for name, _ in unsafe}
    refuse_unsafe(root, unsafe, CHECKPOINT_NAME)
    try:
        with open_directory(root) as directory, open_view(directory) as index:
            # The index's state plus the checkpoint after it (see `archive/index.py`), not a replay.
            state, index_report = index.state, index.report
    except OSError as exc:
        raise ArchiveError(f"cannot read {ckpt}: {exc.strerror}") from exc
    not_read: list[Skipped] = []
    summary_files = {} if SUMMARY_NAME in skipped else _summary_files(root, len(state.files), not_read)
    files = []
    for fs in state.files.values():
        disk = size_on_disk(root / fs.name)
        sha = fs.sha256
        listed = summary_files.get(fs.name)
        if sha is None and listed is not None and listed.bytes == fs.size and listed.sha256 is not None:
            sha = listed.sha256
        files.append(
            FileStatus(
                name=fs.name, bytes=fs.size, lines=fs.lines, closed=fs.closed, sha256=sha, disk_bytes=disk
            )
        )
    failures, newest_error, skipped_lines = (
        ([], None, 0) if FAILED_NAME in skipped else _failures(failed_path(root), not_read)
    )
    last_message = state.runs[-1].message if state.runs else None
    return ArchiveStatus(
        archive=str(root),
        lock=probe_lock(root),
        runs=state.runs,
        files=files,
        records=state.ids,
        failures=failures,
        last_error=last_message or newest_error,
        superseded=[] if SUPERSEDED_DIR in skipped else _generations(root / SUPERSEDED_DIR),
        torn_tail=state.torn_tail,
        refused=unsafe,
        index=index_report,
        skipped=not_read,
        skipped_total=len(not_read) + max(0, skipped_lines - SKIPPED_ROWS),
    )


def _summary_files(root: Path, files: int, not_read: list[Skipped]) -> dict[str, FileReport]:
    try:
        summary = read_summary(summary_path(root), files=files)
    except ValueError as exc:  # too long, or not JSON: the checkpoint has the truth
        not_read.append(Skipped(SUMMARY_NAME, None, f"not a summary this exporter writes ({exc})"))
        return {}
    except (OSError, ArchiveError):
        return {}
    return {} if summary is None else {f.name: f for f in summary.files}


def _failures(path: Path, not_read: list[Skipped]) -> tuple[list[FailureGroup], str | None, int]:
    """failed.ndjson by reason (in order of first appearance), the newest failure's error, and how
    many lines are not entries (the first `SKIPPED_ROWS` go to `not_read`)."""
    counts: dict[str, int] = {}
    first: dict[str, list[str]] = {}
    newest: tuple[str, str] | None = None
    unreadable = 0
    if not os.path.lexists(path):
        return [], None, 0
    for entry in read_failed(path):
        if isinstance(entry, Unreadable):
            unreadable += 1
            if unreadable <= SKIPPED_ROWS:
                not_read.append(Skipped(FAILED_NAME, entry.line, entry.why))
            continue
        reason, record_id = entry.reason, entry.id
        if reason not in counts and len(counts) >= MAX_REASONS:
            reason = OTHER_REASONS
        counts[reason] = counts.get(reason, 0) + 1
        ids = first.setdefault(reason, [])
        if len(ids) < FIRST_IDS:
            ids.append(record_id)
        at, error = entry.at, entry.error
        if at is not None and error is not None and (newest is None or at >= newest[0]):
            newest = (at, f"{record_id}: {error} ({reason})")
    groups = [FailureGroup(reason=r, count=counts[r], first_ids=first[r]) for r in counts]
    return groups, None if newest is None else newest[1], unreadable


def _generations(path: Path) -> list[Generation]:
    if not path.is_dir():
        return []
    generations = []
    for directory in sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink()):
        records_files = [p for p in directory.iterdir() if file_number(p.name) is not None]
        records = _summary_records(directory / SUMMARY_NAME, len(records_files))
        generations.append(
            Generation(
                name=str(directory.relative_to(path.parent)),
                files=len(records_files),
                bytes=sum(p.lstat().st_size for p in records_files),
                records=records,
            )
        )
    return generations


def _summary_records(path: Path, files: int) -> int | None:
    try:
        summary = read_summary(path, files=files)
    except (OSError, ArchiveError, ValueError):
        return None
    return None if summary is None else summary.records


# -- showing it ----------------------------------------------------------------


def to_json(status: ArchiveStatus) -> dict[str, Any]:
    """The status as one JSON-ready object (the shape `--json` prints)."""
    return {
        "archive": status.archive,
        "running": status.lock.held,
        "running_pid": status.lock.pid,
        "runs": [
            {
                "run": r.run,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "finished": r.ended_at is not None,
                "status": r.status,
                "exit_code": r.exit_code,
                "manifest": r.manifest,
                "shard": r.shard,
                "refetch": r.refetch,
                "counts": r.counts,
                "message": r.message,
            }
            for r in status.runs
        ],
        "files": [
            {
                "name": f.name,
                "bytes": f.bytes,
                "lines": f.lines,
                "closed": f.closed,
                "sha256": f.sha256,
                "disk_bytes": f.disk_bytes,
            }
            for f in status.files
        ],
        "totals": {"records": status.records, "bytes": status.bytes, "files": len(status.files)},
        "failed": {
            "total": status.failed,
            "by_reason": {g.reason: {"count": g.count, "first_ids": g.first_ids} for g in status.failures},
        },
        "last_error": status.last_error,
        "superseded": [
            {"name": g.name, "files": g.files, "bytes": g.bytes, "records": g.records}
            for g in status.superseded
        ],
        "torn_tail": status.torn_tail,
        "refused": [{"name": name, "problem": why} for name, why in status.refused],
        "index": {
            "runs": status.index.runs,
            "bytes": status.index.index_bytes,
            "covered_ids": status.index.covered_ids,
            "ids": status.index.ids,
        },
        "skipped": {
            "total": status.skipped_total,
            "first": [{"name": s.name, "line": s.line, "problem": s.problem} for s in status.skipped],
        },
    }


def render_text(status: ArchiveStatus) -> str:
    """The status for a person: runs, files, totals, failures, the last error, the lock.

    Ids, messages and names come from files anyone who could write the archive
    chose: each line is escaped (`display.escape`), so none can reach the
    terminal as a control sequence or a line break of its own.
    """
    out = [f"archive {status.archive}"]
    if status.lock.held:
        out.append(f"  a run is in progress (pid {status.lock.pid or 'unknown'})")
    elif status.lock.held is None:
        out.append("  cannot tell whether a run is in progress (the lock file is not readable)")
    else:
        out.append("  no run in progress")
    if status.torn_tail:
        out.append("  the last run was killed mid-commit; the next export run drops its torn checkpoint line")
    for name, why in status.refused:
        out.append(f"  REFUSED {name} {why}: not read, and an export refuses to run until it is removed")
    for skipped in status.skipped:
        where = skipped.name if skipped.line is None else f"{skipped.name} line {skipped.line}"
        out.append(f"  SKIPPED {where}: {skipped.problem}")
    if status.skipped_total > len(status.skipped):
        out.append(f"  ({status.skipped_total - len(status.skipped)} more lines of {FAILED_NAME} skipped)")

    out.append(f"runs: {len(status.runs)}")
    out += _hidden(len(status.runs), "runs")
    for run in status.runs[-TEXT_ROWS:]:
        out += _run_lines(run, running=bool(status.lock.held) and run is status.runs[-1])

    refused_names = {name for name, _ in status.refused}
    out.append(f"files: {len(status.files)}")
    out += _hidden(len(status.files), "files")
    for f in status.files[-TEXT_ROWS:]:
        sha = f"sha256 {f.sha256[:12]}" if f.sha256 else "sha256 -"
        state = "closed" if f.closed else "open"
        lines = f"{f.lines} line{'' if f.lines == 1 else 's'}"
        note = "  REFUSED (see above)" if f.name in refused_names else _disk_note(f)
        out.append(f"  {f.name}  {human_bytes(f.bytes)}  {lines}  {state}  {sha}{note}")
    files = f"{len(status.files)} file{'' if len(status.files) == 1 else 's'}"
    out.append(f"total: {status.records} records, {human_bytes(status.bytes)} in {files}")
    out.append(_index_line(status.index))

    out.append(f"failed: {status.failed} ids" + (f" ({FAILED_NAME})" if status.failed else ""))
    for group in status.failures:
        more = ", ..." if group.count > len(group.first_ids) else ""
        out.append(f"  {group.reason}: {group.count}  ({', '.join(group.first_ids)}{more})")
    out.append(f"last error: {status.last_error or 'none'}")
    if status.superseded:
        out.append(f"superseded generations: {len(status.superseded)}")
        for g in status.superseded:
            records = "? records" if g.records is None else f"{g.records} records"
            out.append(f"  {g.name}  {records}, {human_bytes(g.bytes)} in {g.files} files")
    return "".join(escape(line) + "\n" for line in out)


def _index_line(index: IndexReport) -> str:
    runs = (
        f"{len(index.runs)} run file{'' if len(index.runs) == 1 else 's'}, {human_bytes(index.index_bytes)}"
    )
    if index.covered_ids == index.ids:
        return f"index: {runs}, covers every record"
    return (
        f"index: {runs}, covers {index.covered_ids} of {index.ids} records; "
        "the next export run (or `exporter index`) brings it up to date"
    )


def _run_lines(run: RunState, *, running: bool) -> list[str]:
    if run.ended_at is not None:
        ended = f"-> {run.ended_at}  {run.status or 'error'} (exit {run.exit_code})"
    elif running:
        ended = "running now"
    else:
        ended = "did not finish (killed?)"
    shard = f", shard {run.shard}" if run.shard else ""
    lines = [f"  run {run.run}  {run.started_at} {ended}  manifest {run.manifest or '-'}{shard}"]
    if run.counts:
        counts = run.counts
        lines.append(
            f"      exported {counts.get('exported', 0)}, failed {counts.get('failed', 0)}, "
            f"not found {counts.get('not_found', 0)}"
        )
    if run.message:
        lines.append(f"      {run.message}")
    return lines


def _hidden(count: int, what: str) -> list[str]:
    if count <= TEXT_ROWS:
        return []
    return [f"  ({count - TEXT_ROWS} earlier {what} not shown; --json lists all)"]


def _disk_note(f: FileStatus) -> str:
    if f.disk_bytes is None:
        return "  MISSING (run `exporter verify`)"
    if f.disk_bytes < f.bytes:
        return f"  SHORTER than committed: {f.disk_bytes} bytes (run `exporter verify`)"
    if f.disk_bytes > f.bytes:
        return f"  +{f.disk_bytes - f.bytes} uncommitted bytes (the next run cuts them)"
    return ""


def human_bytes(count: int) -> str:
    """`count` bytes in binary units, e.g. `512 B`, `1.5 KiB`, `20.0 MiB`."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- the command ---------------------------------------------------------------


def status_command(archive: str, *, as_json: bool) -> int:
    """`exporter status`: show the archive (a directory or s3://BUCKET/PREFIX) as text or JSON."""
    remote = archive.startswith("s3://")
    if remote:
        from exporter.remote.verify import remote_status  # the S3 client only for s3:// archives

        status = remote_status(archive)
    else:
        status = gather_status(Path(archive))
    text = json_text(to_json(status), indent=True) + "\n" if as_json else render_text(status)
    if remote:  # read from a copy of its metadata: whether a run holds its work dir is not known
        text = text.replace("  no run in progress\n", "")
    sys.stdout.write(text)
    return 0
