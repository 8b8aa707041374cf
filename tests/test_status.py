"""status: runs, files, failures, the last error and the lock, as text and as JSON, without the records."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from exporter.archive.layout import Summary
from exporter.archive.lock import probe_lock
from exporter.archive.writer import Archive, RunRequest
from exporter.cli import main
from exporter.config import ArchiveSettings
from exporter.digests import DigestSet
from exporter.offline.status import (
    MAX_REASONS,
    OTHER_REASONS,
    gather_status,
    human_bytes,
    render_text,
    to_json,
)

T0 = "2026-01-01T00:00:00.000Z"
REFUSED = "the API refused the token (HTTP 401); set EXPORTER_TOKEN to a valid token and run again"


def open_archive(out: Path, *, refetch: bool = False, max_file_bytes: int | None = None) -> Archive:
    settings = ArchiveSettings(out_dir=out, max_file_bytes=max_file_bytes)
    return Archive.open(settings, RunRequest(started_at=T0, refetch=refetch, manifest="ids.txt", shard=None))


def run(
    out: Path,
    batch: Sequence[str],
    *,
    failures: Sequence[tuple[str, str, str]] = (),
    exit_code: int | None = 0,
    message: str | None = None,
    max_file_bytes: int | None = None,
) -> None:
    """One run: commit `batch`, note `failures` (id, reason, at), end with `exit_code` (None: killed)."""
    archive = open_archive(out, max_file_bytes=max_file_bytes)
    try:
        archive.commit([(i, json.dumps({"id": i}).encode()) for i in batch])
        if exit_code is None:
            return
        archive.record_failures(
            [
                json.dumps({"id": i, "reason": r, "error": f"error of {i}", "at": at}).encode() + b"\n"
                for i, r, at in failures
            ]
        )
        archive.write_failed(DigestSet())
        files = archive.files_report()
        counts = {"exported": len(batch), "failed": 0, "not_found": len(failures)}
        status = {0: "complete", 1: "incomplete", 3: "auth_refused"}[exit_code]
        archive.end_run(at=T0, exit_code=exit_code, status=status, counts=counts, message=message)
        records = sum(f.lines for f in files)
        archive.write_summary(Summary(run=archive.run, records=records, files=tuple(files)))
    finally:
        archive.close()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """Run 1 complete with failures, rotated into two files; run 2 stopped by a refused token."""
    out = tmp_path / "out"
    failures = [
        ("gone-1", "not_found", "2026-01-01T00:00:01.000Z"),
        ("gone-2", "not_found", "2026-01-01T00:00:03.000Z"),
        ("gone-3", "not_found", "2026-01-01T00:00:01.500Z"),
        ("gone-4", "not_found", "2026-01-01T00:00:01.700Z"),
        ("flaky", "http_error", "2026-01-01T00:00:02.000Z"),
    ]
    run(out, ["a", "b", "c"], failures=failures, exit_code=1, max_file_bytes=20)
    run(out, ["d"], exit_code=3, message=REFUSED)
    return out


def test_text_shows_runs_files_failures_and_the_refusal(archive: Path) -> None:
    """The text names each run's outcome and counts, every file, failures by reason and the refused token."""
    text = render_text(gather_status(archive))
    assert "no run in progress" in text
    assert "run 1  2026-01-01T00:00:00.000Z -> 2026-01-01T00:00:00.000Z  incomplete (exit 1)" in text
    assert "exported 3, failed 0, not found 5" in text
    assert "auth_refused (exit 3)" in text
    assert f"      {REFUSED}" in text
    assert "records-00001.ndjson  36 B  3 lines  closed  sha256 " in text
    assert "records-00002.ndjson  12 B  1 line  open  sha256 " in text
    assert "total: 4 records, 48 B in 2 files" in text
    assert "failed: 5 ids" in text
    assert "  not_found: 4  (gone-1, gone-2, gone-3, ...)" in text
    assert "  http_error: 1  (flaky)" in text
    assert f"last error: {REFUSED}" in text


def test_killed_run_and_newest_failure(archive: Path) -> None:
    """A run without an end entry did not finish; with no message the last error is the newest failure's."""
    run(archive, ["e"], exit_code=None)
    status = gather_status(archive)
    text = render_text(status)
    assert "run 3  2026-01-01T00:00:00.000Z did not finish (killed?)" in text
    assert status.last_error == "gone-2: error of gone-2 (not_found)"
    assert "+0 uncommitted" not in text


def test_made_up_reasons_and_lines_that_are_not_entries_cost_a_few_rows(archive: Path) -> None:
    """A failed.ndjson of 10,000 made-up reasons and 50 unreadable lines: 16 reasons and one group for the
    rest, the first 10 unreadable lines listed and the rest counted."""
    with open(archive / "failed.ndjson", "ab") as handle:
        handle.write(b"".join(b'{"id":"x%d","reason":"made-up-%d"}\n' % (n, n) for n in range(10_000)))
        handle.write(b"not json\n" * 50)
    status = gather_status(archive)
    assert len(status.failures) == MAX_REASONS + 1
    assert status.failures[-1].reason == OTHER_REASONS
    assert status.failed == 5 + 10_000
    assert len(status.skipped) == 10
    assert status.skipped_total == 50
    assert status.skipped[0].line == 5 + 10_000 + 1
    assert "(40 more lines of failed.ndjson skipped)" in render_text(status)


def test_json_has_the_counts(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`status --json` prints one JSON object with runs, totals, failures by reason and the last error."""
    assert main(["status", str(archive), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] == {"records": 4, "bytes": 48, "files": 2}
    assert doc["failed"]["total"] == 5
    assert doc["failed"]["by_reason"]["not_found"] == {
        "count": 4,
        "first_ids": ["gone-1", "gone-2", "gone-3"],
    }
    assert [(r["run"], r["exit_code"], r["status"]) for r in doc["runs"]] == [
        (1, 1, "incomplete"),
        (2, 3, "auth_refused"),
    ]
    assert doc["runs"][0]["counts"]["exported"] == 3
    assert doc["runs"][1]["message"] == REFUSED
    assert doc["running"] is False
    assert [f["closed"] for f in doc["files"]] == [True, False]
    assert all(len(f["sha256"]) == 64 for f in doc["files"])


def test_held_lock_is_reported_and_left_alone(archive: Path) -> None:
    """A run holding the lock is reported with its pid; the probe neither takes the lock over nor keeps it."""
    holder = open_archive(archive)
    try:
        status = gather_status(archive)
        assert (status.lock.held, status.lock.pid) == (True, os.getpid())
        text = render_text(status)
        assert f"a run is in progress (pid {os.getpid()})" in text
        assert "run 3  2026-01-01T00:00:00.000Z running now" in text
        assert probe_lock(archive).held is True
        fd = os.open(archive / ".lock", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        holder.close()
    assert probe_lock(archive).held is False
    open_archive(archive).close()  # the probe left nothing held behind


def test_uncommitted_tail_torn_checkpoint_and_superseded(archive: Path) -> None:
    """Crash leftovers are flagged, and generations set aside by --refetch are listed with their records."""
    with open(archive / "records-00002.ndjson", "ab") as handle:
        handle.write(b'{"id":"x')
    with open(archive / "checkpoint.ndjson", "ab") as handle:
        handle.write(b'{"t":"comm')
    text = render_text(gather_status(archive))
    assert "+8 uncommitted bytes" in text
    assert "killed mid-commit" in text
    open_archive(archive, refetch=True).close()
    status = gather_status(archive)
    ((generation),) = status.superseded
    assert generation.name.startswith("superseded/")
    assert generation.records == 4
    assert "superseded generations: 1" in render_text(status)
    assert to_json(status)["totals"]["records"] == 0


def test_not_an_archive_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory without a checkpoint is a usage error: exit 2 and one line saying so."""
    assert main(["status", str(tmp_path)]) == 2
    assert "is not an archive" in capsys.readouterr().err


def test_human_bytes() -> None:
    """Sizes are shown in binary units with one decimal, plain bytes below 1 KiB."""
    assert [human_bytes(n) for n in (0, 1023, 1536, 20 * 2**20, 3 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "20.0 MiB",
        "3.0 TiB",
    ]


def test_damaged_checkpoint_exits_4_pointing_at_verify(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint damaged before its last line cannot be summarised: exit 4, naming `exporter verify`."""
    path = archive / "checkpoint.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], b"{garbage\n", *lines[2:]]))
    assert main(["status", str(archive)]) == 4
    assert "exporter verify" in capsys.readouterr().err


def test_json_names_an_archive_whose_name_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory name holding bytes that are not UTF-8 is written as the value Python reads it as
    (a \\udcxx escape) in an object that still parses, not a traceback."""
    out = tmp_path / os.fsdecode(b"out\xff")
    run(out, ["a"])
    assert main(["status", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["archive"] == str(out)
    assert doc["totals"]["records"] == 1
