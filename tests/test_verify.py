"""verify: healthy archives of every shape pass; each kind of damage fails, located by file and line."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from archive_runs import T0, export_run, ids, line_of, only
from runs import cli

from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, Compression
from exporter.errors import UsageError
from exporter.offline.verify import verify_archives
from exporter.offline.verify_report import DETAIL_LIMIT, print_report


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    """Two runs over a rotated plain archive (47-byte lines): records-00001..3 closed, records-00004 open.

    Commits 1..3 fill and close one file each; commits 4 and 5 (d000, e000) are in the open file.
    """
    out = tmp_path / "rotated"
    export_run(out, [ids("a", 2), ids("b", 2), ids("c", 2)], max_file_bytes=90)
    export_run(out, [ids("d", 1), ids("e", 1)], max_file_bytes=100)
    return out


# -- healthy archives -------------------------------------------------------------


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("max_file_bytes", [None, 50])
def test_healthy_archives_pass(tmp_path: Path, compress: Compression, max_file_bytes: int | None) -> None:
    """Plain, gzip and zstd archives, one growing file or rotated, over two runs, verify with no findings."""
    out = tmp_path / "out"
    export_run(out, [ids("a", 3), ids("b", 4)], compress=compress, max_file_bytes=max_file_bytes)
    export_run(out, [ids("c", 2), ids("d", 5)], compress=compress, max_file_bytes=max_file_bytes)
    report = verify_archives([out])
    assert report.findings == []
    assert (report.exit_code, report.records, report.archives) == (0, 14, 1)
    assert report.files == len(list(out.glob("records-*")))
    if max_file_bytes is not None:
        assert report.files > 2


def test_exact_values_and_integer_ids_verify(tmp_path: Path) -> None:
    """Values orjson refuses (1e400, 5000 digits) verify; integer ids of any width count as their digits."""
    wide = "123456789012345678901234567890"
    raw = [
        ("inf", b'{"id":"inf","x":1e400}\n'),
        ("42", b'{"id":42,"x":-0.0,"wide":' + b"7" * 5000 + b"}\n"),
        (wide, b'{"id":' + wide.encode() + b"}\n"),
    ]
    export_run(tmp_path, [["a"]], raw=raw)
    report = verify_archives([tmp_path])
    assert report.findings == []
    assert report.records == 4


def test_crash_leftovers_are_notes_not_problems(rotated: Path) -> None:
    """An uncommitted tail, a torn checkpoint line, a stray next file and a stale summary are only notes."""
    export_run(rotated, [ids("f", 1)], max_file_bytes=1000, finish=False)  # killed: no end, no summary
    with open(rotated / "records-00004.ndjson", "ab") as handle:
        handle.write(b'{"id":"g000","text":"half')
    with open(rotated / "checkpoint.ndjson", "ab") as handle:
        handle.write(b'{"t":"commit","file":"records-00004.ndjson","end":')
    (rotated / "records-00005.ndjson").write_bytes(b'{"id":"h000"}\n')
    report = verify_archives([rotated])
    assert report.problems == [], [str(p) for p in report.findings]
    assert report.exit_code == 0
    notes = "\n".join(str(n) for n in report.notes)
    assert "records-00004.ndjson: 25 bytes after the last commit" in notes
    assert "checkpoint.ndjson:" in notes
    assert "killed mid-commit" in notes
    assert "records-00005.ndjson: not in the checkpoint" in notes
    assert "summary.json: is from run 2 but the checkpoint's last run is 3" in notes


def test_torn_checkpoint_line_is_located(tmp_path: Path) -> None:
    """The note about a torn checkpoint line gives that line's number."""
    export_run(tmp_path, [["a"], ["b"]])
    lines = (tmp_path / "checkpoint.ndjson").read_bytes().count(b"\n")
    with open(tmp_path / "checkpoint.ndjson", "ab") as handle:
        handle.write(b'{"t":"comm')
    (note,) = verify_archives([tmp_path]).notes
    assert note.line == lines + 1


def test_checkpoint_commit_without_crc32_is_damage(tmp_path: Path) -> None:
    """A commit entry without crc32 is a damaged checkpoint line, named by its number, not an older format."""
    export_run(tmp_path, [["a"], ["b"]])
    path = tmp_path / "checkpoint.ndjson"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    first_commit = next(n for n, e in enumerate(entries, 1) if e["t"] == "commit")
    for entry in entries:
        entry.pop("crc32", None)
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    report = verify_archives([tmp_path])
    (problem,) = report.problems
    assert (problem.path, problem.line) == (str(path), first_commit)
    assert "damaged entry ('crc32' is None, not a count) before the last line" in problem.message
    assert report.exit_code == 1


def test_run_in_progress_is_a_note(tmp_path: Path) -> None:
    """Verifying while an export holds the archive says so, and still checks what is committed."""
    export_run(tmp_path, [["a"]])
    holder = Archive.open(
        ArchiveSettings(out_dir=tmp_path), RunRequest(started_at=T0, refetch=False, manifest="m", shard=None)
    )
    try:
        report = verify_archives([tmp_path])
    finally:
        holder.close()
    assert report.problems == []
    assert f"a run is in progress (pid {os.getpid()})" in report.notes[0].message
    assert report.records == 1


# -- damage ------------------------------------------------------------------------


def test_flipped_byte_in_closed_file(rotated: Path) -> None:
    """A changed byte in a sealed file fails its commit's crc32 and the close entry's sha256."""
    path = rotated / "records-00002.ndjson"
    flip(path, path.read_bytes().index(b"payload-b001"))
    report = verify_archives([rotated])
    assert report.exit_code == 1
    crc = only(report, "crc mismatch")
    assert crc.path == str(path)
    assert crc.message.startswith("bytes 0..")
    assert "lines 1..2): crc mismatch" in crc.message
    assert only(report, "sha256 is").path == str(path)


def test_flipped_byte_in_open_file(rotated: Path) -> None:
    """A changed byte in the open file (not sealed yet) fails its commit's crc32 and summary.json's sha256."""
    path = rotated / "records-00004.ndjson"
    data = path.read_bytes()
    flip(path, data.index(b"payload-e000"))
    report = verify_archives([rotated])
    first_commit = data.index(b'{"id": "e000"')
    crc = only(report, "crc mismatch")
    assert crc.message == f"bytes {first_commit}..{len(data)} (commit 5, lines 2..2): crc mismatch"
    assert only(report, "has sha256").path == str(rotated / "summary.json")
    assert len(report.problems) == 2


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_flipped_byte_in_compressed_file(tmp_path: Path, compress: Compression) -> None:
    """Damage inside one gzip member / zstd frame is pinned to its commit; the other commits still verify."""
    export_run(tmp_path, [ids("a", 3), ids("b", 3), ids("c", 3)], compress=compress)
    path = next(tmp_path.glob("records-*"))
    entries = [json.loads(x) for x in (tmp_path / "checkpoint.ndjson").read_text().splitlines()]
    commits = [e for e in entries if e["t"] == "commit"]
    start, end = commits[0]["end"], commits[1]["end"]
    flip(path, (start + end) // 2)
    report = verify_archives([tmp_path])
    assert report.exit_code == 1
    crc = only(report, "crc mismatch")
    assert crc.message.startswith(f"bytes {start}..{end} (commit 2, lines 4..6): crc mismatch")
    assert only(report, "has sha256").path == str(tmp_path / "summary.json")
    assert len(report.problems) == 2, [str(p) for p in report.problems]
    assert report.records >= 6  # the commits before and after the damaged one were read


def test_bytes_added_to_a_closed_file(rotated: Path) -> None:
    """A sealed file that grew is a problem, not an uncommitted tail; its committed bytes still hash."""
    path = rotated / "records-00001.ndjson"
    with open(path, "ab") as handle:
        handle.write(line_of("x999"))
    problem = only(verify_archives([rotated]), "after it was sealed")
    assert problem.message.startswith("is 141 bytes but was closed at 94")


def test_truncated_file(rotated: Path) -> None:
    """A records file shorter than its committed length is reported with the lines it lost."""
    path = rotated / "records-00004.ndjson"
    path.write_bytes(path.read_bytes()[:-10])
    report = verify_archives([rotated])
    problem = only(report, "truncated")
    assert problem.path == str(path)
    assert problem.message.startswith(
        "truncated: 84 bytes on disk but 94 were committed: lines 2..2 (commit 5 on)"
    )
    assert len(report.problems) == 1


def test_deleted_file(rotated: Path) -> None:
    """A listed records file that is gone is one problem naming how many records it held."""
    path = rotated / "records-00003.ndjson"
    path.unlink()
    report = verify_archives([rotated])
    problem = only(report, "missing")
    assert (problem.path, problem.line) == (str(path), None)
    assert "lists 2 records" in problem.message
    assert len(report.problems) == 1


def test_duplicated_line(tmp_path: Path) -> None:
    """A line written twice is a duplicate at its line number, naming the first copy."""
    export_run(tmp_path, [ids("a", 4)])
    path = tmp_path / "records-00001.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[1:]))
    report = verify_archives([tmp_path])
    dup = only(report, "duplicate of")
    assert (dup.path, dup.line, dup.message) == (str(path), 3, "duplicate of line 2 (id 'a001')")
    missing = only(report, "is missing")  # the last line was pushed past the committed length
    assert missing.line == 4
    assert "'a003'" in missing.message


def test_line_replaced_by_unknown_id(tmp_path: Path) -> None:
    """A record whose id the checkpoint does not list is reported at its line, with the record it replaced."""
    export_run(tmp_path, [ids("a", 3)])
    path = tmp_path / "records-00001.ndjson"
    path.write_bytes(path.read_bytes().replace(line_of("a001"), line_of("z999")))
    report = verify_archives([tmp_path])
    stranger = only(report, "not in the checkpoint")
    assert (stranger.path, stranger.line) == (str(path), 2)
    assert "'z999'" in stranger.message
    missing = only(report, "is missing")
    assert missing.line == 2
    assert "'a001'" in missing.message


def test_swapped_lines_are_out_of_place(tmp_path: Path) -> None:
    """Two records in the wrong order are reported as out of place, not as strangers."""
    export_run(tmp_path, [ids("a", 3)])
    path = tmp_path / "records-00001.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[1] + lines[0] + lines[2])
    report = verify_archives([tmp_path])
    misplaced = only(report, "out of place")
    assert misplaced.line == 2
    assert "line 1" in misplaced.message
    assert not [p for p in report.problems if "not in the checkpoint" in p.message]


def test_unparseable_line(tmp_path: Path) -> None:
    """A committed line that is not JSON, or has no id, is reported at its line number."""
    export_run(tmp_path, [ids("a", 3)])
    path = tmp_path / "records-00001.ndjson"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'{"id": "a002"', b'["id", "a002"'))
    problem = only(verify_archives([tmp_path]), "is not JSON")
    assert problem.line == 3


def test_problems_per_file_are_capped(tmp_path: Path) -> None:
    """A file of garbage lists DETAIL_LIMIT line problems, counts the rest, and the totals include them."""
    export_run(tmp_path, [ids("a", 300)])
    path = tmp_path / "records-00001.ndjson"
    path.write_bytes(b"".join(b"x" * (len(line_of("a000")) - 1) + b"\n" for _ in range(300)))
    report = verify_archives([tmp_path])
    listed = [p for p in report.problems if p.line is not None]
    assert len(listed) == DETAIL_LIMIT
    assert report.unlisted == {str(path): 600 - DETAIL_LIMIT}  # 300 unreadable lines, 300 missing records
    assert report.summary_line().endswith(f"{len(report.problems) + 600 - DETAIL_LIMIT} problems")
    out = io.StringIO()
    print_report(report, out, quiet=True)
    assert (
        out.getvalue().splitlines()[-1]
        == f"{path}: {600 - DETAIL_LIMIT} more problems like the ones above, not listed"
    )


def test_unlisted_records_file(tmp_path: Path) -> None:
    """A records file the checkpoint does not list, out of sequence, is a problem."""
    export_run(tmp_path, [["a"]])
    stray = tmp_path / "records-00007.ndjson"
    stray.write_bytes(line_of("x"))
    problem = only(verify_archives([tmp_path]), "not listed in the checkpoint")
    assert problem.path == str(stray)


def test_summary_counts_disagree(rotated: Path) -> None:
    """A current summary.json that disagrees with the checkpoint on records or lines is a problem."""
    path = rotated / "summary.json"
    summary = json.loads(path.read_text())
    summary["archive"]["records"] += 1
    summary["archive"]["files"][0]["lines"] = 7
    path.write_text(json.dumps(summary))
    report = verify_archives([rotated])
    assert only(report, "records but the checkpoint lists").message == (
        "says 9 records but the checkpoint lists 8 ids"
    )
    assert only(report, "has 7 lines").path == str(path)


def test_damaged_checkpoint_line(tmp_path: Path) -> None:
    """Damage in a checkpoint line that is not the last is a problem at that line."""
    export_run(tmp_path, [["a"], ["b"]])
    path = tmp_path / "checkpoint.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"{garbage\n"
    path.write_bytes(b"".join(lines))
    (problem,) = verify_archives([tmp_path]).problems
    assert (problem.path, problem.line) == (str(path), 2)


def test_same_id_in_two_archives(tmp_path: Path) -> None:
    """An id archived in two of the given archives is reported with both places."""
    export_run(tmp_path / "s0", [["a", "b"]])
    export_run(tmp_path / "s1", [["c", "a"]])
    problem = only(verify_archives([tmp_path / "s0", tmp_path / "s1"]), "duplicate")
    assert (problem.path, problem.line) == (str(tmp_path / "s1" / "records-00001.ndjson"), 2)
    assert problem.message == f"duplicate of {tmp_path / 's0' / 'records-00001.ndjson'}:1 (id 'a')"


def test_not_an_archive_is_a_usage_error(tmp_path: Path) -> None:
    """A missing directory, one without a checkpoint or records, or one named twice is a usage error."""
    with pytest.raises(UsageError, match="not a directory"):
        verify_archives([tmp_path / "nope"])
    with pytest.raises(UsageError, match="not an archive"):
        verify_archives([tmp_path])
    export_run(tmp_path / "a", [["a"]])
    with pytest.raises(UsageError, match="given twice"):
        verify_archives([tmp_path / "a", tmp_path / "a" / ".." / "a"])


# -- the command -----------------------------------------------------------------------------


def test_command_exit_codes(rotated: Path, tmp_path: Path) -> None:
    """`python -m exporter verify` exits 0 when all holds, 1 on damage, 2 for a directory that is not one."""
    ok = cli("verify", str(rotated))
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.strip().endswith("verified 1 archive: 8 records in 4 files, 0 problems")
    os.truncate(rotated / "records-00001.ndjson", 3)
    bad = cli("verify", "--quiet", str(rotated))
    assert bad.returncode == 1
    assert bad.stdout.startswith(f"{rotated / 'records-00001.ndjson'}: ")
    usage = cli("verify", str(tmp_path / "nope"))
    assert usage.returncode == 2
    assert "not a directory" in usage.stderr
