"""The checkpoint's format: entries for what each commit made durable, and the state they add up to.

The checkpoint (`checkpoint.ndjson` in the archive) is an append-only log, one
JSON object a line, written by the archive's single writer after the records
it describes are on disk (fsync'd). A records file is trusted exactly up to the
`end` of its last `commit` entry: on start-up the archive cuts it back to that
length, so a crash between writing records and logging them leaves neither a
partial line nor a record that the checkpoint does not list.

Entries (`t` is the type):

    {"t":"run","run":3,"at":"...","refetch":false,"manifest":"ids.txt","shard":null,"version":1}
    {"t":"commit","file":"records-00001.ndjson","end":81234,"lines":812,"crc32":1234567,"ids":["a","b"]}
    {"t":"close","file":"records-00001.ndjson","bytes":536870912,"lines":51234,"sha256":"..."}
    {"t":"end","run":3,"at":"...","exit":0,"status":"complete","counts":{...},"message":null}
    {"t":"shipped","file":"records-00001.ndjson","key":"exports/records-00001.ndjson","bytes":536870912,
     "checksum":"<x-amz-checksum-sha256 read back>","etag":"...","version":"..."}

A `shipped` entry (only with `--out s3://...`) says a closed file is in object
storage under `key`, as a HEAD read it back after the upload; such a file may
be missing from the directory (the work dir drops it once shipped).

`end` and `lines` are the file's totals after the commit, so the last commit of
a file alone says how long it is; `crc32` covers the bytes that commit appended,
so `exporter verify` can check an open file (not yet sealed by a sha256) chunk
by chunk and say which commit holds damaged bytes; a commit without one is
damage, like any other malformed entry. Only the final line may be torn (the crash
happened while it was written); any other unreadable line means damage, and
the archive refuses to guess.

No entry is longer than `layout.CHECKPOINT_LINE_BYTES`: `commit_groups` splits
a commit whose ids would make one longer into several commits, so a reader
holds one bounded line at a time, and a longer line (which the reader hands
over as an `Overlong`, never whole) is damage like any other.

This module is pure: it turns entries into bytes and lines into state, and
says what that state means for the next run (`resumes_refetch`,
`check_same_shard`). The file I/O is `writer.py`'s and `reader.py`'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from exporter.bounded import Overlong, capped
from exporter.errors import ArchiveCorrupt, UsageError

from .layout import CHECKPOINT_LINE_BYTES, CHECKPOINT_NAME, stored_name, too_long

FORMAT_VERSION = 1
_CRC32_MAX = 0xFFFFFFFF


def run_entry(*, run: int, at: str, refetch: bool, manifest: str, shard: str | None) -> bytes:
    """The line that opens run number `run`."""
    return _line(
        {
            "t": "run",
            "run": run,
            "at": at,
            "refetch": refetch,
            "manifest": stored_name(manifest),
            "shard": shard,
            "version": FORMAT_VERSION,
        }
    )


def commit_entry(*, file: str, end: int, lines: int, crc32: int, ids: Sequence[str]) -> bytes:
    """The line that makes `ids` (in file order) part of the archive; see `commit_groups` for its length."""
    return _line({"t": "commit", "file": file, "end": end, "lines": lines, "crc32": crc32, "ids": list(ids)})


#: Bytes of a commit entry besides its ids: the keys, a records file's name and three integers.
_COMMIT_FRAME_BYTES = 512


def commit_groups(ids: Sequence[str], limit: int = CHECKPOINT_LINE_BYTES) -> list[slice]:
    """`ids` cut into consecutive runs whose commit entries are at most `limit` bytes each.

    Nearly always one run: `limit` holds some 25,000 ids of 36 characters.
    An id that could not fit in an entry of its own (over 1,000 times the
    longest valid one) is a ValueError: the writer never commits one.
    """
    room = limit - _COMMIT_FRAME_BYTES
    if len(orjson.dumps(list(ids))) <= room:
        return [slice(0, len(ids))]
    groups: list[slice] = []
    start = used = 0
    for index, record_id in enumerate(ids):
        size = len(orjson.dumps(record_id)) + 1  # and a comma
        if size > room:
            raise ValueError(f"an id of {size:,} bytes in JSON cannot be committed (at most {room:,})")
        if used + size > room:
            groups.append(slice(start, index))
            start, used = index, 0
        used += size
    groups.append(slice(start, len(ids)))
    return groups


def close_entry(*, file: str, size: int, lines: int, sha256: str) -> bytes:
    """The line that seals a records file: never written again."""
    return _line({"t": "close", "file": file, "bytes": size, "lines": lines, "sha256": sha256})


def end_entry(
    *, run: int, at: str, exit_code: int, status: str, counts: dict[str, int], message: str | None = None
) -> bytes:
    """The line that closes run number `run` (absent when the run was killed); `message` is capped."""
    return _line(
        {
            "t": "end",
            "run": run,
            "at": at,
            "exit": exit_code,
            "status": status,
            "counts": counts,
            "message": None if message is None else capped(message),
        }
    )


def shipped_entry(*, file: str, key: str, size: int, checksum: str, etag: str, version: str | None) -> bytes:
    """The line that says a closed file is in object storage, as read back from there."""
    return _line(
        {
            "t": "shipped",
            "file": file,
            "key": key,
            "bytes": size,
            "checksum": checksum,
            "etag": etag,
            "version": version,
        }
    )


def _line(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


@dataclass(frozen=True, slots=True)
class ShippedCopy:
    """Where a closed file was shipped (`--out s3://...`), and what its read-back said."""

    key: str
    checksum: str
    etag: str
    version: str | None


@dataclass(slots=True)
class FileState:
    """One records file as the checkpoint knows it."""

    name: str
    size: int = 0
    lines: int = 0
    closed: bool = False
    sha256: str | None = None
    shipped: ShippedCopy | None = None


@dataclass(slots=True)
class RunState:
    """One run as the checkpoint knows it; `exit_code` None means it never ended."""

    run: int
    started_at: str
    refetch: bool = False
    manifest: str = ""
    shard: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    status: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    message: str | None = None


@dataclass(slots=True)
class CheckpointState:
    """Everything the checkpoint says, except the ids themselves (`replay` and `commits` stream them)."""

    files: dict[str, FileState] = field(default_factory=dict)
    runs: list[RunState] = field(default_factory=list)
    ids: int = 0
    #: Bytes of the checkpoint that hold whole, valid entries; the rest is a torn tail.
    valid_bytes: int = 0
    torn_tail: bool = False

    @property
    def open_file(self) -> FileState | None:
        """The records file new commits go to, if one is open."""
        if not self.files:
            return None
        last = next(reversed(self.files.values()))
        return None if last.closed else last

    @property
    def next_run(self) -> int:
        return self.runs[-1].run + 1 if self.runs else 1


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit entry that replay accepted, with where its bytes and lines begin.

    `start` and `lines_before` are the file's committed size and line count
    before this commit (the entry itself only gives the totals after it), so a
    reader can check exactly the bytes and lines this commit appended.
    """

    file: str
    start: int
    end: int
    lines_before: int
    lines: int
    crc32: int
    ids: list[str]

    @property
    def first_line(self) -> int:
        """The number of the first line this commit appended (1-based)."""
        return self.lines_before + 1


def replay(
    lines: Iterable[bytes | Overlong],
    on_ids: Callable[[list[str]], None] | None = None,
    *,
    name: str = CHECKPOINT_NAME,
) -> CheckpointState:
    """Fold checkpoint lines (each with its newline; one too long as an `Overlong`) into a state.

    Each accepted commit's ids go to `on_ids` (resuming needs the ids alone);
    `commits` is the same fold as a stream of `Commit`s. Raises ArchiveCorrupt,
    with the line's number, for damage anywhere but in the last line.
    """
    state = CheckpointState()
    for entry, _, _ in _fold(lines, state, name):
        if on_ids is not None:
            on_ids(entry["ids"])
    return state


def commits(
    lines: Iterable[bytes | Overlong], state: CheckpointState | None = None, *, name: str = CHECKPOINT_NAME
) -> Iterator[Commit]:
    """Each commit `replay` would accept, in order, with where its bytes and lines begin.

    `state` (a fresh one when not given) is folded up to each commit as it is
    yielded, and whole once the stream ends. Raises ArchiveCorrupt as `replay` does.
    """
    for entry, start, lines_before in _fold(lines, CheckpointState() if state is None else state, name):
        yield Commit(
            file=entry["file"],
            start=start,
            end=entry["end"],
            lines_before=lines_before,
            lines=entry["lines"],
            crc32=entry["crc32"],
            ids=entry["ids"],
        )


def _fold(
    lines: Iterable[bytes | Overlong], state: CheckpointState, name: str
) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Apply each line to `state`; yield each accepted commit entry with its file's size and lines before it.

    What the caller does with a commit happens outside the checks, so an error
    of its own is never mistaken for a damaged line.
    """
    pending_error: str | None = None
    for number, raw in enumerate(lines, 1):
        if pending_error is not None:
            raise ArchiveCorrupt(
                f"{name} line {number - 1} is damaged ({pending_error}) and is not the last line; "
                "the archive cannot be trusted as it is: run `exporter verify` on it, and "
                "restore the file from a backup or export into a new --out",
                line=number - 1,
                damage=pending_error,
            )
        if isinstance(raw, Overlong):
            pending_error = f"a line of {too_long(raw.size, CHECKPOINT_LINE_BYTES)}"
            continue
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("no newline at the end")
            entry = orjson.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            before = _apply(state, entry)
        except (ValueError, KeyError, TypeError) as exc:
            pending_error = capped(str(exc) or type(exc).__name__)  # it may quote a name of any length
            continue
        state.valid_bytes += len(raw)
        if before is not None:
            yield entry, *before
    if pending_error is not None:
        state.torn_tail = True


def _apply(state: CheckpointState, entry: dict[str, Any]) -> tuple[int, int] | None:
    """Check one entry against the state so far, then apply it.

    Every check comes before the first change, so an entry that is rejected
    (a torn last line that happens to parse) leaves the state untouched.
    For a commit, returns the file's size and line count before it.
    """
    kind = entry.get("t")
    before: tuple[int, int] | None = None
    if kind == "commit":
        name = _str(entry, "file")
        current = state.files.get(name)
        open_file = state.open_file
        if current is None and open_file is not None:
            raise ValueError(f"commit to {name} while {open_file.name} is still open")
        if current is not None and current.closed:
            raise ValueError(f"commit to {name}, which was closed")
        size, lines = (current.size, current.lines) if current is not None else (0, 0)
        end, total = _int(entry, "end"), _int(entry, "lines")
        ids = entry.get("ids")
        if not isinstance(ids, list) or not all(map(isinstance, ids, itertools.repeat(str))):
            raise ValueError("ids is not a list of strings")
        # What `get` and `exporter verify` check the commit's bytes against; the index keeps it in 32 bits.
        crc = _int(entry, "crc32")
        if crc > _CRC32_MAX:
            raise ValueError(f"'crc32' is {_shown(crc)}, not a crc32 (at most {_CRC32_MAX})")
        if end < size or total != lines + len(ids):
            raise ValueError(f"commit to {name} does not follow the previous one")
        if current is None:
            current = state.files[name] = FileState(name)
        current.size, current.lines = end, total
        state.ids += len(ids)
        before = size, lines
    elif kind == "close":
        name = _str(entry, "file")
        current = state.files.get(name)
        if current is None or current.closed:
            raise ValueError(f"close of {name}, which is not open")
        if _int(entry, "bytes") != current.size or _int(entry, "lines") != current.lines:
            raise ValueError(f"close of {name} disagrees with its last commit")
        digest = _str(entry, "sha256")
        current.closed = True
        current.sha256 = digest
    elif kind == "shipped":
        name = _str(entry, "file")
        current = state.files.get(name)
        if current is None or not current.closed:
            raise ValueError(f"shipped {name}, which is not closed")
        if _int(entry, "bytes") != current.size:
            raise ValueError(f"shipped {name} disagrees with its close entry")
        version = entry.get("version")
        current.shipped = ShippedCopy(
            key=_str(entry, "key"),
            checksum=_str(entry, "checksum"),
            etag=_str(entry, "etag"),
            version=version if isinstance(version, str) else None,
        )
    elif kind == "run":
        shard = entry.get("shard")
        state.runs.append(
            RunState(
                run=_int(entry, "run"),
                started_at=_str(entry, "at"),
                refetch=bool(entry.get("refetch", False)),
                manifest=str(entry.get("manifest", "")),
                shard=shard if isinstance(shard, str) else None,
            )
        )
    elif kind == "end":
        number, at, exit_code = _int(entry, "run"), _str(entry, "at"), _int(entry, "exit")
        if not state.runs or state.runs[-1].run != number:
            raise ValueError("end of a run that was not started")
        status = entry.get("status")
        counts = entry.get("counts") or {}
        if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
            raise ValueError("counts is not an object of numbers")
        parsed = {str(k): int(v) for k, v in counts.items()}
        message = entry.get("message")
        run = state.runs[-1]
        run.ended_at, run.exit_code = at, exit_code
        run.status = status if isinstance(status, str) else None
        run.counts = parsed
        run.message = message if isinstance(message, str) else None
    else:
        raise ValueError(f"unknown entry type {_shown(kind)}")
    return before


def _int(entry: dict[str, Any], key: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key!r} is {_shown(value)}, not a count")
    return value


def _str(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is {_shown(value)}, not a string")
    return value


def _shown(value: object) -> str:
    """A value of a damaged entry as its message quotes it: a list of a million ids is not quoted whole."""
    if isinstance(value, list | dict) and len(value) > 8:
        return f"a JSON {'array' if isinstance(value, list) else 'object'} of {len(value):,} items"
    return capped(repr(value), 80)


def resumes_refetch(runs: list[RunState]) -> bool:
    """Whether a --refetch run continues the last run instead of starting over.

    It does when the last run was itself a --refetch run that did not get to
    the end of its manifest (killed, interrupted, or stopped by a refused
    token): running the same command again must resume, not restart.
    """
    if not runs:
        return False
    last = runs[-1]
    return last.refetch and last.status not in ("complete", "incomplete")


def check_same_shard(archive: Path | str, state: CheckpointState, shard: str | None) -> None:
    """One archive holds one slice: mixing shards would break `verify` across the N archives.

    `archive` is how the message names it (a directory, or an s3:// URL).
    """
    if not state.ids or not state.runs:
        return
    previous = state.runs[-1].shard
    if previous != shard:
        raise UsageError(
            f"{archive} holds shard {previous or 'none (all ids)'} but this run is shard "
            f"{shard or 'none (all ids)'}; use the same --shard, or another --out"
        )
