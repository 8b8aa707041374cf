"""Unit tests for `exporter.archive.checkpoint`: entry encoding and replaying the log into state."""

from __future__ import annotations

import io

import orjson
import pytest

from exporter.archive.checkpoint import (
    FORMAT_VERSION,
    CheckpointState,
    Commit,
    FileState,
    RunState,
    close_entry,
    commit_entry,
    commit_groups,
    commits,
    end_entry,
    replay,
    run_entry,
)
from exporter.archive.layout import CHECKPOINT_LINE_BYTES, CHECKPOINT_NAME
from exporter.bounded import Overlong
from exporter.errors import ArchiveCorrupt

SHA = "ab" * 32
R1 = "records-00001.ndjson"
R2 = "records-00002.ndjson"
T1 = "2024-05-01T10:00:00Z"
T2 = "2024-05-01T11:00:00Z"


def do_replay(data: bytes, *, name: str = CHECKPOINT_NAME) -> tuple[CheckpointState, list[list[str]]]:
    """Replay `data` split the way a file object splits it, collecting the `on_ids` calls."""
    calls: list[list[str]] = []
    state = replay(io.BytesIO(data), calls.append, name=name)
    return state, calls


def line(entry: dict[str, object]) -> bytes:
    return orjson.dumps(entry) + b"\n"


def commit(*, file: str, end: int, lines: int, ids: list[str]) -> bytes:
    """A commit entry; replay checks that it has a crc32, not its value (the records are not read)."""
    return commit_entry(file=file, end=end, lines=lines, crc32=0xDEADBEEF, ids=ids)


#: One run that committed two ids to the first records file.
PREFIX = run_entry(run=1, at=T1, refetch=False, manifest="ids.txt", shard=None) + commit(
    file=R1, end=100, lines=2, ids=["a", "b"]
)


# --- encoders ------------------------------------------------------------------------------------


def test_encoders_write_one_line_each_with_the_documented_keys() -> None:
    """Each encoder produces a single newline-terminated JSON object with the documented field names."""
    entries = [
        run_entry(run=3, at=T1, refetch=True, manifest="m.csv", shard="2/4"),
        commit_entry(file=R1, end=81234, lines=812, crc32=1234567, ids=("a", "b")),
        close_entry(file=R1, size=536870912, lines=51234, sha256=SHA),
        end_entry(run=3, at=T2, exit_code=0, status="complete", counts={"archived": 2}),
    ]
    for raw in entries:
        assert raw.endswith(b"\n")
        assert raw.count(b"\n") == 1
    assert [orjson.loads(raw) for raw in entries] == [
        {
            "t": "run",
            "run": 3,
            "at": T1,
            "refetch": True,
            "manifest": "m.csv",
            "shard": "2/4",
            "version": FORMAT_VERSION,
        },
        {"t": "commit", "file": R1, "end": 81234, "lines": 812, "crc32": 1234567, "ids": ["a", "b"]},
        {"t": "close", "file": R1, "bytes": 536870912, "lines": 51234, "sha256": SHA},
        {
            "t": "end",
            "run": 3,
            "at": T2,
            "exit": 0,
            "status": "complete",
            "counts": {"archived": 2},
            "message": None,
        },
    ]
    assert FORMAT_VERSION == 1


def test_ids_with_newlines_and_unicode_stay_on_one_line() -> None:
    """Ids are JSON-escaped, so an odd id can never split a checkpoint entry in two."""
    ids = ["a\nb", "café", 'q"uote', "\u2028"]
    raw = commit(file=R1, end=10, lines=4, ids=ids)
    assert raw.count(b"\n") == 1
    state, calls = do_replay(raw)
    assert calls == [ids]
    assert state.ids == 4


def test_full_sequence_replays_into_state() -> None:
    """run/commit/commit/close/commit(new file)/end replays into the files, runs and counts they describe."""
    data = (
        run_entry(run=1, at=T1, refetch=False, manifest="ids.txt", shard=None)
        + commit(file=R1, end=100, lines=2, ids=["a", "b"])
        + commit(file=R1, end=250, lines=5, ids=["c", "d", "e"])
        + close_entry(file=R1, size=250, lines=5, sha256=SHA)
        + commit(file=R2, end=40, lines=1, ids=["f"])
        + end_entry(run=1, at=T2, exit_code=1, status="incomplete", counts={"archived": 6, "failed": 2})
    )
    state, calls = do_replay(data)

    assert list(state.files.values()) == [
        FileState(R1, size=250, lines=5, closed=True, sha256=SHA),
        FileState(R2, size=40, lines=1, closed=False, sha256=None),
    ]
    assert list(state.files) == [R1, R2]
    assert state.ids == 6
    assert state.open_file == FileState(R2, size=40, lines=1)
    assert state.open_file is state.files[R2]
    assert state.next_run == 2
    assert state.runs == [
        RunState(
            run=1,
            started_at=T1,
            refetch=False,
            manifest="ids.txt",
            shard=None,
            ended_at=T2,
            exit_code=1,
            status="incomplete",
            counts={"archived": 6, "failed": 2},
        )
    ]
    assert state.valid_bytes == len(data)
    assert state.torn_tail is False
    assert calls == [["a", "b"], ["c", "d", "e"], ["f"]]


def test_second_run_continues_the_open_file() -> None:
    """A later run's commits extend the file left open, and an unfinished run has no exit code."""
    data = PREFIX + (
        end_entry(run=1, at=T2, exit_code=130, status="interrupted", counts={})
        + run_entry(run=2, at=T2, refetch=True, manifest="more.csv", shard="1/4")
        + commit(file=R1, end=180, lines=3, ids=["g"])
    )
    state, calls = do_replay(data)
    assert state.files == {R1: FileState(R1, size=180, lines=3)}
    assert state.runs[1] == RunState(run=2, started_at=T2, refetch=True, manifest="more.csv", shard="1/4")
    assert state.runs[1].exit_code is None
    assert state.runs[0].exit_code == 130
    assert state.next_run == 3
    assert state.ids == 3
    assert calls == [["a", "b"], ["g"]]


def test_end_message_is_replayed() -> None:
    """The end entry's message reaches the run's state; a missing or non-string message reads as None."""
    data = PREFIX + end_entry(
        run=1, at=T2, exit_code=3, status="auth", counts={"archived": 2}, message="the API refused the token"
    )
    state, _ = do_replay(data)
    assert state.runs[0].message == "the API refused the token"
    assert state.runs[0].status == "auth"
    for odd in (
        line({"t": "end", "run": 1, "at": T2, "exit": 0, "status": "complete", "counts": {}}),
        line({"t": "end", "run": 1, "at": T2, "exit": 0, "status": "complete", "counts": {}, "message": 5}),
    ):
        state, _ = do_replay(PREFIX + odd)
        assert state.runs[0].message is None
        assert state.runs[0].exit_code == 0


def test_commit_without_crc32_is_damage() -> None:
    """A commit with no crc32 is a damaged entry: a torn tail when last, else ArchiveCorrupt."""
    old = line({"t": "commit", "file": R1, "end": 150, "lines": 3, "ids": ["c"]})
    state, calls = do_replay(PREFIX + old)
    assert state.torn_tail is True
    assert state.files[R1] == FileState(R1, size=100, lines=2)
    assert calls == [["a", "b"]]
    with pytest.raises(ArchiveCorrupt, match="crc32") as caught:
        do_replay(PREFIX + old + commit(file=R1, end=200, lines=4, ids=["d"]))
    assert caught.value.line == PREFIX.count(b"\n") + 1


def test_commits_yields_each_commit_with_where_it_starts() -> None:
    """`commits` yields every accepted commit with the size and lines before it, as `replay` folds them."""
    data = (
        PREFIX
        + commit(file=R1, end=150, lines=3, ids=["c"])
        + close_entry(file=R1, size=150, lines=3, sha256=SHA)
        + commit_entry(file=R2, end=40, lines=1, crc32=7, ids=["d"])
        + b'{"t":"commit","fi'
    )
    ids: list[list[str]] = []
    state = CheckpointState()
    found = list(commits(io.BytesIO(data), state))
    assert found == [
        Commit(file=R1, start=0, end=100, lines_before=0, lines=2, crc32=0xDEADBEEF, ids=["a", "b"]),
        Commit(file=R1, start=100, end=150, lines_before=2, lines=3, crc32=0xDEADBEEF, ids=["c"]),
        Commit(file=R2, start=0, end=40, lines_before=0, lines=1, crc32=7, ids=["d"]),
    ]
    assert [c.first_line for c in found] == [1, 3, 1]
    assert state == replay(io.BytesIO(data), ids.append)
    assert ids == [c.ids for c in found]
    assert state.torn_tail is True


def test_callback_errors_are_not_taken_for_damage() -> None:
    """An error raised by a callback propagates as it is, not as a damaged (or torn) checkpoint line."""

    def refuse(ids: list[str]) -> None:
        raise KeyError("callback bug")

    with pytest.raises(KeyError, match="callback bug"):
        replay(io.BytesIO(PREFIX), refuse)


def test_empty_checkpoint() -> None:
    """No lines means no files, no runs, run number 1 next and nothing torn."""
    state, calls = do_replay(b"")
    assert state == CheckpointState()
    assert state.open_file is None
    assert state.next_run == 1
    assert state.valid_bytes == 0
    assert state.torn_tail is False
    assert calls == []


def test_no_open_file_after_close() -> None:
    """Once the last records file is closed there is no file to commit to."""
    state, _ = do_replay(PREFIX + close_entry(file=R1, size=100, lines=2, sha256=SHA))
    assert state.open_file is None
    assert state.files[R1].closed is True


def test_empty_commit_is_allowed() -> None:
    """A commit with no ids that leaves the file as it was is valid (and reports no ids)."""
    state, calls = do_replay(PREFIX + commit(file=R1, end=100, lines=2, ids=[]))
    assert state.files[R1] == FileState(R1, size=100, lines=2)
    assert calls == [["a", "b"], []]


# --- torn tail -----------------------------------------------------------------------------------

_FULL_COMMIT = commit(file=R1, end=300, lines=3, ids=["c"])


@pytest.mark.parametrize(
    "tail",
    [
        _FULL_COMMIT[:-1],  # the whole object, but the newline never made it
        _FULL_COMMIT[: len(_FULL_COMMIT) // 2],  # half a JSON object
        b'{"t":"comm',
        b"\x00\x00\x00\x00",  # a block of zeros from a crash mid-allocation
        b'{"t":"com\n',  # half an object, then a newline
    ],
    ids=["no-newline", "half-object", "few-bytes", "zeros", "half-object-newline"],
)
def test_torn_last_line_is_ignored(tail: bytes) -> None:
    """A damaged final line is left out: torn_tail is set and valid_bytes stops just before it."""
    state, calls = do_replay(PREFIX + tail)
    clean, _ = do_replay(PREFIX)
    assert state.torn_tail is True
    assert state.valid_bytes == len(PREFIX)
    assert calls == [["a", "b"]]
    state.torn_tail = False
    assert state == clean


@pytest.mark.parametrize(
    "damaged",
    [b'{"t":"comm\n', b"\n", b"[1, 2]\n", b'"run"\n', b"\xff\xfe\n"],
    ids=["half-object", "blank", "array", "string", "not-utf8"],
)
def test_damage_before_the_last_line_is_corruption(damaged: bytes) -> None:
    """An unreadable line followed by another line raises ArchiveCorrupt naming the file and line."""
    data = PREFIX + damaged + commit(file=R1, end=200, lines=3, ids=["c"])
    with pytest.raises(ArchiveCorrupt, match=r"^ckpt-test line 3 is damaged \(") as info:
        do_replay(data, name="ckpt-test")
    assert "is not the last line" in str(info.value)
    assert "exporter verify" in str(info.value)
    assert info.value.line == 3
    assert info.value.damage is not None
    assert info.value.damage in str(info.value)


def test_an_overlong_line_is_damage_but_for_the_last_line() -> None:
    """A line over the cap (handed over by the reader as an `Overlong`) is damage before the last line,
    with its length in the message; as the last line it is a torn tail like any other."""
    lines = io.BytesIO(PREFIX).readlines()
    huge = Overlong(b'{"t":"commit","ids":["', 94_000_000, CHECKPOINT_LINE_BYTES)
    after = commit(file=R1, end=200, lines=3, ids=["c"])
    with pytest.raises(
        ArchiveCorrupt, match=r"line 3 is damaged \(a line of 94,000,000 bytes, over the"
    ) as info:
        replay([*lines, huge, after])
    assert info.value.line == 3
    state = replay([*lines, huge])
    assert (state.torn_tail, state.valid_bytes, state.ids) == (True, len(PREFIX), 2)


def test_damage_messages_quote_no_huge_value() -> None:
    """A damaged entry holding a list of a million items or a megabyte string is named, not quoted."""
    entries = [
        {"t": "commit", "file": R1, "end": [0] * 1_000_000, "lines": 1, "crc32": 0, "ids": ["a"]},
        {"t": "x" * 1_000_000},
        {"t": "commit", "file": "r" * 1_000_000, "end": 1, "lines": 1, "crc32": 0, "ids": ["a"]},
    ]
    for entry in entries:
        data = PREFIX + orjson.dumps(entry) + b"\n" + commit(file=R1, end=200, lines=3, ids=["c"])
        with pytest.raises(ArchiveCorrupt) as info:
            do_replay(data)
        assert len(str(info.value)) < 1000


def test_the_end_message_is_capped() -> None:
    """A run's message (it may quote what a server sent) is stored cut, with its length."""
    entry = orjson.loads(end_entry(run=1, at=T1, exit_code=4, status="error", counts={}, message="m" * 10**6))
    assert entry["message"] == "m" * 512 + "… (1,000,000 bytes)"


@pytest.mark.parametrize(
    ("ids", "limit", "groups"),
    [
        ([f"id-{i:04}" for i in range(10)], 1024, 1),  # fits: one commit, whatever the count
        (["a" * 200] * 10, 1024, 5),  # 203 bytes each, 512 for the rest of the entry: two a commit
        (["é" * 256] * 8, 2048, 4),  # 515 bytes each in UTF-8
        (['"' * 256] * 3, 1100, 3),  # escaped: 515 bytes each, one a commit
        ([], 1024, 1),
    ],
)
def test_commit_groups_keep_every_entry_under_the_limit(ids: list[str], limit: int, groups: int) -> None:
    """The ids are split into consecutive runs, in order, whose commit entries all fit in `limit`."""
    found = commit_groups(ids, limit)
    assert len(found) == groups
    assert [i for group in found for i in ids[group]] == ids
    big = 10**18  # the widest integers an entry may carry
    for group in found:
        name = "records-99999.ndjson.zst"
        assert len(commit_entry(file=name, end=big, lines=big, crc32=2**32 - 1, ids=ids[group])) <= limit


def test_commit_groups_refuse_an_id_that_fits_in_no_entry() -> None:
    """An id too long for an entry of its own cannot be committed (the writer never gets one)."""
    with pytest.raises(ValueError, match="cannot be committed"):
        commit_groups(["x" * 2000], 1024)


def test_the_cap_holds_a_commit_of_the_longest_valid_ids() -> None:
    """200 of the longest valid ids (256 characters of 4 bytes each) fit in one entry."""
    assert len(commit_groups(["\U0001f600" * 256] * 200)) == 1


def test_damage_followed_by_a_torn_line_is_still_corruption() -> None:
    """Two bad lines in a row cannot both be a torn tail."""
    with pytest.raises(ArchiveCorrupt, match="line 3 is damaged"):
        do_replay(PREFIX + b'{"t":"comm\n' + b'{"t":"co')


# --- lines that parse but do not follow ----------------------------------------------------------

_CLOSED = close_entry(file=R1, size=100, lines=2, sha256=SHA)

SEMANTIC_DAMAGE = [
    pytest.param(
        _CLOSED, commit(file=R1, end=150, lines=3, ids=["c"]), "which was closed", id="commit-to-closed"
    ),
    pytest.param(
        b"", commit(file=R1, end=150, lines=5, ids=["c"]), "does not follow", id="lines-do-not-add-up"
    ),
    pytest.param(b"", commit(file=R1, end=50, lines=3, ids=["c"]), "does not follow", id="end-shrinks"),
    pytest.param(
        b"", close_entry(file=R1, size=99, lines=2, sha256=SHA), "disagrees", id="close-size-differs"
    ),
    pytest.param(
        b"", close_entry(file=R1, size=100, lines=3, sha256=SHA), "disagrees", id="close-lines-differ"
    ),
    pytest.param(b"", close_entry(file=R2, size=0, lines=0, sha256=SHA), "not open", id="close-unknown-file"),
    pytest.param(_CLOSED, _CLOSED, "not open", id="close-twice"),
    pytest.param(b"", commit(file=R2, end=10, lines=1, ids=["x"]), "still open", id="second-file-while-open"),
    pytest.param(
        b"", line({"t": "snapshot", "files": []}), "unknown entry type 'snapshot'", id="unknown-type"
    ),
    pytest.param(b"", line({"file": R1}), "damaged (unknown entry type None)", id="no-type"),
    pytest.param(
        b"",
        line({"t": "commit", "file": R1, "end": 150, "lines": 3}),
        "damaged (ids is not a list of strings)",
        id="no-ids",
    ),
    pytest.param(
        b"", line({"t": "commit", "file": R1, "end": 150, "lines": 3, "ids": [7]}), "not a list", id="int-id"
    ),
    pytest.param(
        b"",
        line({"t": "commit", "file": R1, "end": -1, "lines": 3, "ids": ["c"]}),
        "not a count",
        id="negative",
    ),
    pytest.param(
        b"",
        line({"t": "commit", "file": R1, "end": True, "lines": 3, "ids": ["c"]}),
        "not a count",
        id="bool",
    ),
    pytest.param(
        b"",
        line({"t": "commit", "file": 5, "end": 150, "lines": 3, "ids": ["c"]}),
        "not a string",
        id="file-int",
    ),
    pytest.param(
        b"",
        line({"t": "commit", "file": R1, "end": 150, "lines": 3, "crc32": 2**32, "ids": ["c"]}),
        "not a crc32",
        id="crc32-over-32-bits",
    ),
    pytest.param(
        b"",
        end_entry(run=9, at=T2, exit_code=0, status="complete", counts={}),
        "run that was not started",
        id="end-of-unknown-run",
    ),
]


@pytest.mark.parametrize(("before", "bad", "message"), SEMANTIC_DAMAGE)
def test_inconsistent_entry_before_the_last_line_is_corruption(
    before: bytes, bad: bytes, message: str
) -> None:
    """An entry contradicting the ones before it raises ArchiveCorrupt, with the reason, if more follows."""
    data = PREFIX + before + bad + run_entry(run=2, at=T2, refetch=False, manifest="x", shard=None)
    with pytest.raises(ArchiveCorrupt) as info:
        do_replay(data)
    assert message in str(info.value)


@pytest.mark.parametrize(("before", "bad", "message"), SEMANTIC_DAMAGE)
def test_inconsistent_last_line_is_a_torn_tail(before: bytes, bad: bytes, message: str) -> None:
    """The same entry as the last line is treated as torn: excluded from valid_bytes, ids not reported."""
    state, calls = do_replay(PREFIX + before + bad)
    assert state.torn_tail is True
    assert state.valid_bytes == len(PREFIX + before)
    assert state.ids == 2
    assert calls == [["a", "b"]]


@pytest.mark.parametrize(
    ("before", "bad"),
    [
        pytest.param(
            b"",
            line({"t": "commit", "file": R1, "end": 150, "lines": 9, "ids": ["c"]}),
            id="commit-existing-file",
        ),
        pytest.param(b"", line({"t": "snapshot"}), id="unknown-type"),
        pytest.param(b"", commit(file=R2, end=10, lines=1, ids=["x"]), id="second-file-while-open"),
        pytest.param(b"", close_entry(file=R1, size=99, lines=2, sha256=SHA), id="close-size-differs"),
    ],
)
def test_rejected_last_line_leaves_the_state_untouched(before: bytes, bad: bytes) -> None:
    """A last line that is rejected has no effect at all: the state equals the replay without it."""
    state, _ = do_replay(PREFIX + before + bad)
    clean, _ = do_replay(PREFIX + before)
    state.torn_tail = False
    assert state == clean


@pytest.mark.parametrize(
    ("before", "bad"),
    [
        pytest.param(_CLOSED, commit(file=R2, end=10, lines=5, ids=["x"]), id="commit-new-file-bad-lines"),
        pytest.param(
            b"",
            line({"t": "close", "file": R1, "bytes": 100, "lines": 2, "sha256": None}),
            id="close-without-sha",
        ),
        pytest.param(
            b"",
            line({"t": "end", "run": 1, "at": T2, "exit": -1, "status": "complete", "counts": {}}),
            id="end-bad-exit",
        ),
        pytest.param(
            b"",
            line({"t": "end", "run": 1, "at": T2, "exit": 0, "status": "complete", "counts": {"a": "x"}}),
            id="end-bad-counts",
        ),
    ],
)
def test_rejected_last_line_leaves_no_partial_state(before: bytes, bad: bytes) -> None:
    """A last line rejected half-way through its checks has no effect: state equals the replay without it."""
    state, _ = do_replay(PREFIX + before + bad)
    clean, _ = do_replay(PREFIX + before)
    assert state.torn_tail is True
    state.torn_tail = False
    assert state == clean
