"""archive/reader.py: the commit stream, records read commit by commit, line ids, and the id alignment."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import orjson
import pytest

from exporter.archive import reader as archive_reader
from exporter.archive.checkpoint import Commit, commit_entry, run_entry
from exporter.archive.layout import CHECKPOINT_LINE_BYTES, FAILED_LINE_BYTES, FailedEntry, Summary
from exporter.archive.reader import (
    Alignment,
    Chunk,
    Line,
    RecordsReader,
    Unreadable,
    checkpoint_lines,
    line_at,
    line_id,
    read_failed,
    read_summary,
    replay_checkpoint,
    replay_commits,
)
from exporter.bounded import Overlong
from exporter.errors import ArchiveCorrupt

R1 = "records-00001.ndjson"


def commit(start: int, end: int, lines_before: int, ids: list[str], data: bytes) -> Commit:
    return Commit(
        file=R1,
        start=start,
        end=end,
        lines_before=lines_before,
        lines=lines_before + len(ids),
        crc32=zlib.crc32(data[start:end]),
        ids=ids,
    )


def test_replay_commits_numbers_commits_and_stops_at_the_replayed_bytes(tmp_path: Path) -> None:
    """Commits come numbered from 1, and none past the bytes the first replay accepted."""
    path = tmp_path / "checkpoint.ndjson"
    path.write_bytes(
        run_entry(run=1, at="t", refetch=False, manifest="m", shard=None)
        + commit_entry(file=R1, end=10, lines=1, crc32=1, ids=["a"])
        + commit_entry(file=R1, end=20, lines=2, crc32=2, ids=["b"])
        + b'{"t":"commit","file":"records-00001.ndjson","end":30,"lines":3,"crc32":3,"ids":["c"]}'
    )
    state = replay_checkpoint(path)
    assert state.torn_tail is True
    seen = [(n, c.ids[0], c.start) for n, c in replay_commits(path, state.valid_bytes)]
    assert seen == [(1, "a", 0), (2, "b", 10)]
    with open(path, "ab") as handle:  # a run appending meanwhile adds nothing to what is read
        handle.write(b"\n" + commit_entry(file=R1, end=40, lines=4, crc32=4, ids=["d"]))
    seen = [(n, c.ids[0], c.start) for n, c in replay_commits(path, state.valid_bytes)]
    assert [n for n, _, _ in seen] == [1, 2]


@pytest.mark.parametrize("size", [1, (1 << 16) - 1, 1 << 16, (1 << 16) + 1])
def test_checkpoint_lines_keep_each_newline_and_tell_a_torn_last_line(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines come back exactly as written, wherever the reads fall, the last without its newline
    when it has none; a line over the cap comes back as an `Overlong`, never whole."""
    monkeypatch.setattr(archive_reader, "_READ_BYTES", size)
    lines = [b"x" * 10 + b"\n", b"y" * ((1 << 16) - 1) + b"\n", b"\n", b"z" * 100]
    assert list(checkpoint_lines(io.BytesIO(b"".join(lines)))) == lines
    assert list(checkpoint_lines(io.BytesIO(b"".join(lines[:3])))) == lines[:3]
    huge = b"h" * (CHECKPOINT_LINE_BYTES + 1)
    found = list(checkpoint_lines(io.BytesIO(lines[0] + huge + b"\n" + lines[0])))
    assert found[0] == found[2] == lines[0]
    assert isinstance(found[1], Overlong)
    assert found[1].size == len(huge)


def test_an_overlong_checkpoint_line_is_damage_unless_it_is_the_last(tmp_path: Path) -> None:
    """A checkpoint whose third line holds 196,608 ids: damage naming the line and its length; as the
    last line, a torn tail."""
    path = tmp_path / "checkpoint.ndjson"
    head = run_entry(run=1, at="t", refetch=False, manifest="m", shard=None) + commit_entry(
        file=R1, end=10, lines=1, crc32=1, ids=["a"]
    )
    ids = ["i"] * (3 * CHECKPOINT_LINE_BYTES // 4)
    huge = commit_entry(file=R1, end=20, lines=1 + len(ids), crc32=2, ids=ids)
    path.write_bytes(head + huge + run_entry(run=2, at="t", refetch=False, manifest="m", shard=None))
    damage = f"a line of {len(huge) - 1:,} bytes, over the {CHECKPOINT_LINE_BYTES:,}-byte limit"
    with pytest.raises(ArchiveCorrupt, match=rf"^checkpoint.ndjson line 3 is damaged \({damage}\)") as info:
        replay_checkpoint(path)
    assert (info.value.line, info.value.damage) == (3, damage)
    path.write_bytes(head + huge[:-1])
    state = replay_checkpoint(path)
    assert (state.torn_tail, state.valid_bytes, state.ids) == (True, len(head), 1)
    assert [c.ids for _, c in replay_commits(path, state.valid_bytes)] == [["a"]]


def test_failed_lines_that_are_not_entries_are_named_by_line(tmp_path: Path) -> None:
    """failed.ndjson: entries as entries; a line over the cap or one that does not parse, an `Unreadable`."""
    path = tmp_path / "failed.ndjson"
    entry = FailedEntry(id="a", reason="not_found", error="HTTP 404")
    path.write_bytes(
        entry.to_json_line()
        + b'{"id":"b","reason":"http_error","error":"'
        + b"e" * FAILED_LINE_BYTES
        + b'"}\n'
        + b"not json\n"
        + entry.to_json_line()
    )
    found = list(read_failed(path))
    assert found[0] == found[3] == entry
    assert isinstance(found[1], Unreadable)
    assert (found[1].line, found[1].overlong) == (2, True)
    assert (
        found[1].why
        == f"a line of {FAILED_LINE_BYTES + 43:,} bytes, over the {FAILED_LINE_BYTES:,}-byte limit"
    )
    assert isinstance(found[2], Unreadable)
    assert (found[2].line, found[2].overlong) == (3, False)


def test_a_summary_over_its_cap_is_not_read(tmp_path: Path) -> None:
    """summary.json may be as long as its files need, and is not read (ValueError) beyond that."""
    path = tmp_path / "summary.json"
    summary = Summary(run=1, records=0)
    path.write_bytes(summary.to_bytes())
    assert read_summary(path, files=0) == summary
    doc = summary.to_json()
    doc["pad"] = "p" * (2 << 20)
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(ValueError, match=r"^2,097,\d{3} bytes, over the 1,048,576-byte limit$"):
        read_summary(path, files=0)
    assert read_summary(path, files=4096) == summary  # the limit of an archive of 4,096 files


def test_reader_checks_crc_and_joins_a_line_split_across_commits(tmp_path: Path) -> None:
    """Each commit's bytes are crc-checked on their own; a line cut at a commit boundary is joined up."""
    data = b'{"id":"a"}\n{"id":' + b'"b"}\n{"id":"c"}'
    path = tmp_path / R1
    path.write_bytes(data)
    first = commit(0, 16, 0, ["a"], data)
    second = commit(16, len(data), 1, ["b", "c"], data)
    bad = Commit(second.file, second.start, second.end, 1, 3, second.crc32 ^ 1, second.ids)
    reader = RecordsReader(path, len(data))
    events = [*reader.read(1, first), *reader.read(2, bad), *reader.finish()]
    assert events == [
        Chunk(1, first, True, None),
        Line(1, b'{"id":"a"}\n'),
        Chunk(2, bad, False, None),
        Line(2, b'{"id":"b"}\n'),
        Line(3, b'{"id":"c"}'),  # no newline: the caller reports it cut off
    ]
    assert (reader.lines, reader.cut_at, reader.read_all) == (3, None, True)
    assert events[2] == Chunk(2, bad, False, None)
    assert Chunk(2, bad, False, None).describe() == "bytes 16..32 (commit 2, lines 2..3)"


def test_reader_stops_at_the_first_commit_the_file_is_too_short_for(tmp_path: Path) -> None:
    """A file shorter than its commits is cut at the first commit whose bytes are not all there."""
    data = b'{"id":"a"}\n{"id":"b"}\n'
    path = tmp_path / R1
    path.write_bytes(data[:15])
    first, second = commit(0, 11, 0, ["a"], data), commit(11, 22, 1, ["b"], data)
    reader = RecordsReader(path, 15)
    events = [*reader.read(1, first), *reader.read(2, second), *reader.finish()]
    assert events == [Chunk(1, first, True, None), Line(1, b'{"id":"a"}\n')]
    assert reader.cut_at == (2, second)


def test_line_id() -> None:
    """Ids are strings or integers of any width (as their digits); anything else says what is wrong."""
    wide = "1" * 30
    assert line_id(b'{"id":"a","x":1e400}\n') == ("a", "")
    assert line_id(b'{"id":' + wide.encode() + b"}\n") == (wide, "")
    assert line_id(b'{"id":' + b"7" * 5000 + b"}\n") == ("7" * 5000, "")
    assert line_id(b"[1]\n") == (None, "is a JSON list, not an object")
    assert line_id(b'{"x":1}\n') == (None, 'has no "id"')
    assert line_id(b'{"id":true}\n') == (None, 'has an "id" that is a bool, not a string')
    assert line_id(b"{oops\n")[1].startswith("is not JSON (")


def test_alignment_resyncs_and_reports_what_never_turned_up() -> None:
    """Ids skipped over or never seen are returned with their line and commit; strangers do not match."""
    align = Alignment()
    assert align.expect(1, Commit(R1, 0, 10, 0, 3, 0, ["a", "b", "c"])) == ()
    assert align.expect(2, Commit(R1, 10, 20, 3, 4, 0, ["d"])) == ()
    assert align.match("a") == ()
    assert align.match("z") is None
    assert align.match("c") == (("b", 2, 1),)  # b was skipped over
    assert align.finish() == (("d", 4, 2),)  # d never turned up
    assert align.finish() == ()


def test_alignment_gives_up_on_ids_pushed_out_of_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending ids are bounded: the oldest pushed out of the window are returned as missing."""
    monkeypatch.setattr(archive_reader, "_ALIGN_WINDOW", 2)
    align = Alignment()
    assert align.expect(1, Commit(R1, 0, 10, 0, 3, 0, ["a", "b", "c"])) == (("a", 1, 1),)
    assert align.match("a") is None
    assert align.match("b") == ()


def test_line_at(tmp_path: Path) -> None:
    """The line that starts at a byte offset is one after the newlines before it."""
    path = tmp_path / "f"
    path.write_bytes(b"ab\ncd\nef")
    assert [line_at(path, offset) for offset in (0, 3, 6)] == [1, 2, 3]
