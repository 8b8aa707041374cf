"""archive/layout.py: the file names, "is this an archive", and failed.ndjson and summary.json as records."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from exporter.archive.layout import (
    ArchiveKind,
    EntryKind,
    FailedEntry,
    FileReport,
    Summary,
    archive_kind,
    compression_of,
    entry_kind,
    file_number,
    records_name,
    temp_name,
)
from exporter.config import Compression
from exporter.errors import Reason
from exporter.outcomes import Failure
from exporter.run.committer import failed_entry

T0 = "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "failure",
    [
        Failure("a", Reason.NOT_FOUND, "404 Not Found", status=404, attempts=1),
        Failure("b", Reason.TIMEOUT, "no answer in 30 s", attempts=5),
        Failure("x" * 80, Reason.BAD_MANIFEST_LINE, "not UTF-8", line=7),
        Failure("é" * 2000, Reason.INVALID_ID, "over 256 characters", line=2),
    ],
)
def test_a_failed_line_reads_back_as_the_same_entry(failure: Failure) -> None:
    """Every failed.ndjson line the exporter writes reads back into a record that writes the same bytes."""
    line = failed_entry(failure, run=3, at=T0).to_json_line()
    entry = FailedEntry.from_json_line(line)
    assert entry.to_json_line() == line
    assert (entry.reason, entry.run, entry.at, entry.line) == (failure.reason.value, 3, T0, failure.line)
    assert entry.cut == (len(failure.id.encode()) > 1024)


def test_a_failed_entry_caps_its_error_however_it_is_made() -> None:
    """An error of 50 MB (a server's member name went into it) is stored cut, with its length, whether the
    entry is made for a failure, read back from an older archive's line, or built directly."""
    error = "no data member: " + "k" * 50_000_000
    capped = error[:512] + "… (50,000,016 bytes)"
    made = failed_entry(Failure("a", Reason.BAD_RESPONSE, error, attempts=1), run=1, at=T0).to_json_line()
    assert len(made) < 1024
    assert orjson.loads(made)["error"] == capped
    old_line = orjson.dumps({"id": "a", "reason": "bad_response", "error": error})
    assert FailedEntry.from_json_line(old_line).error == capped
    assert FailedEntry(id="a", reason="bad_response", error=error).error == capped


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b'{"id": 5, "reason": "timeout"}', b'{"id": "a"}', b'{"reason": "x"}']
)
def test_a_line_without_a_string_id_and_reason_is_no_entry(raw: bytes) -> None:
    """A line that is not a JSON object with a string id and reason is refused, not guessed at."""
    with pytest.raises(ValueError, match=r"JSON|object|string|unexpected|expected|invalid"):
        FailedEntry.from_json_line(raw)


#: A summary.json as a run writes it (the README's *The archive* lists these keys), every field set.
SUMMARY_DOC = {
    "summary_version": 1,
    "run": 2,
    "status": "incomplete",
    "exit_code": 1,
    "started_at": T0,
    "finished_at": T0,
    "elapsed_s": 1.5,
    "records_per_s": 2.67,
    "manifest": "ids.txt",
    "base_url": "http://api",
    "proxy": "http://proxy:3128",
    "shard": "0/2",
    "counts": {"manifest_entries": 5, "exported": 4, "not_found": 1},
    "failed_by_reason": {"not_found": 1},
    "pacing": {"paused_s": {"quota": 1.0}, "rate_cuts": 2, "rate_per_s_at_end": None, "outages": 0},
    "archive": {
        "records": 4,
        "bytes": 160,
        "files": [
            {"name": "records-00001.ndjson", "bytes": 120, "lines": 3, "sha256": "ab" * 32, "closed": True},
            {"name": "records-00002.ndjson.zst", "bytes": 40, "lines": 1, "sha256": None, "closed": False},
        ],
        "failed_listed": 1,
        "superseded_to": "superseded/x",
    },
}


def test_a_summary_reads_back_as_written() -> None:
    """summary.json reads into a record that writes the same document, key for key and in order."""
    summary = Summary.from_bytes(orjson.dumps(SUMMARY_DOC))
    assert summary.files[1] == FileReport(
        name="records-00002.ndjson.zst", bytes=40, lines=1, sha256=None, closed=False
    )
    written = orjson.loads(summary.to_bytes())
    assert written == SUMMARY_DOC
    assert list(written) == list(SUMMARY_DOC)
    assert list(written["archive"]) == list(SUMMARY_DOC["archive"])  # type: ignore[call-overload]
    assert Summary.from_bytes(summary.to_bytes()) == summary


def test_an_older_summary_reads_and_a_foreign_one_does_not() -> None:
    """A summary lacking later fields still reads; one without run, records or files is not a summary."""
    old = {"run": 1, "archive": {"records": 0, "files": []}}
    assert Summary.from_bytes(orjson.dumps(old)) == Summary(run=1)
    for broken in (
        {"archive": {"records": 0, "files": []}},
        {"run": 1},
        {"run": 1, "archive": {"files": []}},
    ):
        with pytest.raises(ValueError, match=r'"run"|"records"|"archive"'):
            Summary.from_bytes(orjson.dumps(broken))
    with pytest.raises(ValueError, match="bytes"):
        Summary.from_bytes(orjson.dumps({"run": 1, "archive": {"records": 1, "files": [{"name": "r"}]}}))


def test_records_file_names() -> None:
    """Records files are numbered from 1 with five digits, and their names say how they are framed."""
    assert records_name(1, "none") == "records-00001.ndjson"
    assert records_name(12, "gzip") == "records-00012.ndjson.gz"
    assert records_name(123456, "zstd") == "records-123456.ndjson.zst"
    compressions: tuple[Compression, ...] = ("none", "gzip", "zstd")
    for compression in compressions:
        name = records_name(7, compression)
        assert (compression_of(name), file_number(name)) == (compression, 7)
    assert file_number("records-x.ndjson") is None
    assert file_number("failed.ndjson") is None


def test_entry_kinds() -> None:
    """Each name the archive keeps has the kind its writes need; anything else is not the archive's."""
    assert entry_kind("superseded") is EntryKind.DIRECTORY
    for name in (".lock", ".failed.partial", "checkpoint.ndjson"):
        assert entry_kind(name) is EntryKind.WRITTEN_IN_PLACE
    for name in ("failed.ndjson", "summary.json", ".superseding", "records-00003.ndjson.gz"):
        assert entry_kind(name) is EntryKind.FILE
    for name in ("failed.ndjson", "summary.json", ".superseding"):
        assert entry_kind(temp_name(name)) is EntryKind.FILE
    assert entry_kind("notes.txt") is None


def test_what_is_an_archive(tmp_path: Path) -> None:
    """A directory is an archive when it has a checkpoint (even a link); records alone are a damaged one."""
    assert archive_kind(tmp_path / "missing") is ArchiveKind.NOT_A_DIRECTORY
    (tmp_path / "file").write_text("")
    assert archive_kind(tmp_path / "file") is ArchiveKind.NOT_A_DIRECTORY
    assert archive_kind(tmp_path) is ArchiveKind.NOT_AN_ARCHIVE
    (tmp_path / "records-00001.ndjson").write_text("")
    assert archive_kind(tmp_path) is ArchiveKind.RECORDS_ONLY
    os.symlink("/nonexistent", tmp_path / "checkpoint.ndjson")
    assert archive_kind(tmp_path) is ArchiveKind.ARCHIVE


def test_unlisted_records_files_are_split_into_leftover_and_foreign() -> None:
    """The next-numbered unlisted file is a crash leftover; any other unlisted records file is foreign."""
    from exporter.archive.layout import unlisted_records_files

    names = [
        "records-00001.ndjson",
        "records-00002.ndjson.zst",
        "records-00003.ndjson",
        "records-00009.ndjson",
        "checkpoint.ndjson",
        "notes.txt",
    ]
    assert unlisted_records_files(names, ["records-00001.ndjson", "records-00002.ndjson.zst"]) == (
        ["records-00003.ndjson"],
        ["records-00009.ndjson"],
    )
    assert unlisted_records_files(["records-00001.ndjson"], []) == (["records-00001.ndjson"], [])
