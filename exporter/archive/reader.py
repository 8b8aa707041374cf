"""The archive's read side: everything `offline/` and the writer's recovery read, trusting none of it.

With `layout.py`, this is all the read-only commands (`verify`, `status`,
`completeness`, `--dry-run`) import from the archive.

`writer.py` is the archive's only writer; this module only reads it, trusts
nothing it reads (every file is opened through `safe_fs`: never through a
link, never a FIFO or device), and keeps memory bounded (one commit's ids and
bytes at a time) for archives of millions of records. The checkpoint and
failed.ndjson are cut into lines by `bounded.LineCutter`, as manifests are: a
line longer than `layout` says the writer writes streams past and is handed on
as damage (an `Overlong` checkpoint line, an `Unreadable` failed.ndjson line),
and summary.json is read only up to `layout.summary_max_bytes`:

    open_directory      the archive directory, for reading its files relative to it
    unsafe_entries      links, FIFOs, ... where the archive keeps a file (never opened)
    refuse_unsafe       the error a run (or a dry run) stops with for one of them
    probe_lock          whether an export holds the archive now (`lock.py`)
    resumes_refetch,    what the checkpoint means for the next run (`checkpoint.py`)
    check_same_shard
    has_checkpoint      whether the directory is an archive yet
    refuse_records_only, the errors a run (or a dry run) stops with for records files it cannot add
    check_records_files to: records without a checkpoint; one missing, cut short or not listed
    replay_checkpoint   the checkpoint's state from a path (`checkpoint.replay` on the file, or on the
                        segments of checkpoint.d/ in the remote form, as one stream)
    replay_commits      its commits once more, numbered, one at a time, up to the bytes replayed
    checkpoint_lines    the checkpoint's lines, bounded, as `checkpoint.replay` takes them
    failed_entries,     failed.ndjson as `layout.FailedEntry` records, and `Unreadable` for a
    read_failed         line that is not one (`warned` logs those and drops them)
    read_summary        summary.json as a `layout.Summary`
    read_records        every listed records file, read commit by commit, as a stream of events:
                        `FileStart` (or `FileRefused`), then per commit a `Chunk` (the bytes it
                        appended, their crc32 checked and decoded on their own, so damage stays
                        in its commit) and the `Line`s it completed, then `FileEnd`
    line_id             a records line's id, exactly as the exporter keeps it (any width)
    Alignment           a file's line ids matched against the ids its commits list, in order
    line_at             which line of a file starts at a byte offset

Everything here is a generator or returns its findings: the caller reads an
archive with one `for` loop and stops it with `break`, which closes the files.

Why one module of this size: it is the archive's one reader; every check of what is read
(links, FIFOs, bounded lines, crc32 against the checkpoint) is made here once, so the
offline commands cannot each read the archive their own way.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import zstandard

from exporter.bounded import LineCutter, Overlong
from exporter.errors import ArchiveCorrupt

from . import checkpoint
from .checkpoint import CheckpointState as CheckpointState
from .checkpoint import Commit as Commit
from .checkpoint import FileState
from .checkpoint import RunState as RunState
from .checkpoint import check_same_shard as check_same_shard
from .checkpoint import resumes_refetch as resumes_refetch
from .framing import codec_of_file, decompressed_lines
from .layout import (
    CHECKPOINT_LINE_BYTES,
    CHECKPOINT_NAME,
    FAILED_LINE_BYTES,
    FAILED_NAME,
    SEGMENTS_DIR,
    SUPERSEDED_DIR,
    EntryKind,
    FailedEntry,
    Summary,
    checkpoint_path,
    entry_kind,
    file_number,
    segment_number,
    summary_max_bytes,
    too_long,
    unlisted_records_files,
)
from .lock import LockState as LockState
from .lock import probe_lock as probe_lock
from .safe_fs import SafeDir as SafeDir
from .safe_fs import entry_problem, open_regular, os_error, refused

#: Ids a file's lines may lag behind its commits before the oldest are given up as missing.
_ALIGN_WINDOW = 100_000
_DECODE_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)
_READ_BYTES = 1 << 16
#: Unreadable failed.ndjson lines `warned` logs one by one before it only counts them.
_WARNED_LINES = 5

log = logging.getLogger(__name__)


def open_directory(root: Path) -> SafeDir:
    """The existing archive directory `root`, open for reading the files in it."""
    return SafeDir.open_existing(root)


def unsafe_entries(directory: SafeDir) -> list[tuple[str, str]]:
    """(name, what is wrong) for each entry where the archive keeps a file but finds a link, FIFO, ...

    Checked before a run writes anything, and reported by `verify` and
    `status`; the opens themselves check again (O_NOFOLLOW, fstat), so an entry
    swapped in after this look is refused too.
    """
    found = []
    for name in sorted(directory.names()):
        kind = entry_kind(name)
        if kind is None:
            continue
        st = directory.lstat(name)
        if st is None:
            continue
        problem = entry_problem(
            st, directory=kind is EntryKind.DIRECTORY, written=kind is EntryKind.WRITTEN_IN_PLACE
        )
        if problem is not None:
            found.append((name, problem))
    return found


def unsafe_entries_at(root: Path) -> list[tuple[str, str]]:
    """`unsafe_entries` of the archive directory `root`."""
    with open_directory(root) as directory:
        return unsafe_entries(directory)


def refuse_unsafe(root: Path, unsafe: list[tuple[str, str]], name: str | None = None) -> None:
    """Raise `ArchiveUnsafe` for the first of `unsafe` (or for `name`, if it is among them)."""
    for entry, why in unsafe:
        if name is None or entry == name:
            raise refused(root / entry, why)


def has_checkpoint(directory: SafeDir) -> bool:
    """Whether `directory` holds a checkpoint (an archive, or the start of one)."""
    return directory.lstat(CHECKPOINT_NAME) is not None


def refuse_records_only(root: Path, directory: SafeDir) -> None:
    """ArchiveCorrupt when `directory` holds records files but no checkpoint (a lost checkpoint).

    A run cannot tell which of those records it would fetch again, so it
    refuses; a dry run says so too, rather than counting every id as new.
    """
    if has_checkpoint(directory):
        return
    leftovers = [name for name in directory.names() if file_number(name) is not None]
    if leftovers:
        raise ArchiveCorrupt(
            f"{root} holds {sorted(leftovers)[0]} but no {CHECKPOINT_NAME}: "
            "it is not an archive this exporter can add to without risking duplicates; "
            "move those files away or choose another --out"
        )


#: What to do about a records file that lost committed records, for an archive in a directory.
RESTORE_OR_REFETCH = (
    "restore it from a backup, or start over with --refetch "
    f"(the current files are kept under {SUPERSEDED_DIR}/)"
)


def check_records_files(
    named: Callable[[str], str],
    directory: SafeDir,
    state: CheckpointState,
    *,
    repair: str = RESTORE_OR_REFETCH,
) -> list[str]:
    """The records files a run would remove (created by a run killed before its first commit to it).

    Raises what a run stops with before it writes (`ArchiveCorrupt`,
    `ArchiveUnsafe`) for a records file the checkpoint does not list, or one it
    lists that is missing, not a regular file, or shorter than committed (or,
    closed, of another size): the writer's recovery and the dry run both ask here.
    `named` is how a message names a file of the directory (`Archive.where_file`),
    `repair` what to do about one that lost records (`Archive.repair_advice`).
    """
    leftover, foreign = unlisted_records_files(directory.names(), state.files)
    if foreign:
        raise ArchiveCorrupt(
            f"{named(foreign[0])} is not listed in the checkpoint; move it away "
            "(run `exporter verify` to see what the archive holds)"
        )
    for file in state.files.values():
        path = named(file.name)
        st = directory.lstat(file.name)
        if st is None and file.shipped is not None:
            continue  # in object storage (--out s3://...): the work dir keeps no copy
        if st is None:
            raise ArchiveCorrupt(
                f"{path} is missing but the checkpoint lists {file.lines} records in it; {repair}"
            )
        problem = entry_problem(st)
        if problem is not None:
            raise refused(path, problem)
        size = st.st_size
        if size < file.size or (file.closed and size != file.size):
            raise ArchiveCorrupt(f"{path} is {size} bytes but {file.size} were committed to it; {repair}")
    return leftover


def checkpoint_lines(handle: BinaryIO) -> Iterator[bytes | Overlong]:
    """The lines of an open checkpoint as `checkpoint.replay` takes them, none held whole over the cap.

    Each line keeps its newline (a torn last line has none, which is how
    replay tells it); one longer than `layout.CHECKPOINT_LINE_BYTES` is an
    `Overlong`, whatever its end.
    """
    source = _CountedChunks(handle)
    end = 0  # where the line just cut ends, its newline included
    for _, line in LineCutter(CHECKPOINT_LINE_BYTES).cut(source):
        if isinstance(line, Overlong):
            end += line.size + 1
            yield line
            continue
        end += len(line) + 1
        # The cutter hands a line over once its newline is read, or once the file has ended without one.
        yield line + b"\n" if end <= source.read else line


class _CountedChunks:
    """The chunks of an open file, counting the bytes read so far."""

    __slots__ = ("_handle", "read")

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._handle.read(_READ_BYTES):
            self.read += len(chunk)
            yield chunk


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line of failed.ndjson that is not an entry this exporter writes: where, and what is wrong."""

    path: Path
    line: int
    #: e.g. "a line of 104,857,812 bytes, over the 65,536-byte limit"
    why: str
    #: Longer than any line the writer writes (rather than a short line that does not parse).
    overlong: bool

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.why}"


def failed_entries(directory: SafeDir) -> Iterator[FailedEntry | Unreadable]:
    """The lines of the failed.ndjson in `directory`, if any, as entries or `Unreadable`s."""
    handle = directory.reader(FAILED_NAME)
    if handle is None:
        return
    try:
        with handle:
            yield from _failed_lines(handle, directory.path / FAILED_NAME)
    except OSError as exc:
        raise os_error(directory.path / FAILED_NAME, exc, "read") from exc


def read_failed(path: Path) -> Iterator[FailedEntry | Unreadable]:
    """Each line of the failed.ndjson at `path` as an entry, or an `Unreadable` when it is not one.

    The file is opened at once (ArchiveError when it cannot be, or is not a
    regular file), and read as the result is iterated.
    """
    handle = open_regular(path)

    def lines() -> Iterator[FailedEntry | Unreadable]:
        with handle:
            yield from _failed_lines(handle, path)

    return lines()


def _failed_lines(handle: BinaryIO, path: Path) -> Iterator[FailedEntry | Unreadable]:
    for number, raw in LineCutter(FAILED_LINE_BYTES).cut(_CountedChunks(handle)):
        if isinstance(raw, Overlong):
            yield Unreadable(path, number, f"a line of {too_long(raw.size, raw.limit)}", overlong=True)
            continue
        try:
            yield FailedEntry.from_json_line(raw)
        except ValueError as exc:
            yield Unreadable(path, number, f"not an entry ({exc})", overlong=False)


def warned(lines: Iterable[FailedEntry | Unreadable]) -> Iterator[FailedEntry]:
    """The entries of `lines`; each `Unreadable` is logged as a warning (the first few, then a count)."""
    skipped = 0
    last: Unreadable | None = None
    for entry in lines:
        if isinstance(entry, FailedEntry):
            yield entry
            continue
        skipped += 1
        last = entry
        if skipped <= _WARNED_LINES:
            log.warning("%s: skipped (a run leaves it out of the %s it writes)", entry, FAILED_NAME)
    if last is not None and skipped > _WARNED_LINES:
        log.warning("%s: %d more lines that are not entries skipped", last.path, skipped - _WARNED_LINES)


def read_summary(path: Path, *, files: int) -> Summary | None:
    """The summary.json at `path` of an archive of `files` records files; None when there is none.

    ValueError when it is not one this exporter writes: among them, one longer
    than `layout.summary_max_bytes(files)`, which is not read. ArchiveError (or
    OSError) when it cannot be read or is not a regular file.
    """
    if not os.path.lexists(path):
        return None
    limit = summary_max_bytes(files)
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
        if len(data) > limit:
            raise ValueError(too_long(os.fstat(handle.fileno()).st_size, limit))
    return Summary.from_bytes(data)


def size_on_disk(path: Path) -> int | None:
    """The size of the records file at `path`; None when it is missing or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return None if entry_problem(st) else st.st_size


def replay_checkpoint(path: Path) -> CheckpointState:
    """The state of the checkpoint at `path`; raises OSError, ArchiveCorrupt (with the line), ArchiveError."""
    with open_checkpoint(path) as handle:
        return checkpoint.replay(checkpoint_lines(handle), name=path.name)


def open_checkpoint(path: Path) -> BinaryIO:
    """The checkpoint at `path` for reading: the file, or (a `checkpoint.d` directory) its segments in order.

    The remote form keeps the checkpoint as consecutive segments, each ending
    with a whole entry, so their concatenation reads as one checkpoint.ndjson;
    a gap in their numbering is ArchiveCorrupt.
    """
    if not path.is_dir() or path.is_symlink():
        return open_regular(path)
    numbered = sorted(
        (number, name)
        for name in os.listdir(path)
        if (number := segment_number(f"{SEGMENTS_DIR}/{name}")) is not None
    )
    for expected, (number, name) in enumerate(numbered, 1):
        if number != expected:
            raise ArchiveCorrupt(
                f"segment {expected} is missing (the next is {name}): the checkpoint cannot be read past "
                "it; download it again, or restore it from the bucket's versions"
            )
    return io.BufferedReader(_Concatenated([path / name for _, name in numbered]))


class _Concatenated(io.RawIOBase):
    """Files read one after the other as one stream, each opened (safely) only when reached."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._current is None:
                if not self._paths:
                    return 0
                self._current = open_regular(self._paths.pop(0))
            chunk = self._current.read(len(buffer))
            count = len(chunk)
            if count:
                buffer[:count] = chunk
                return count
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


def replay_commits(path: Path, valid_bytes: int) -> Iterator[tuple[int, Commit]]:
    """Replay a checkpoint's first `valid_bytes` again: each commit, numbered from 1.

    `valid_bytes` comes from the replay that checked the checkpoint, so this one
    meets exactly the entries that one accepted (a run still appending cannot
    change them); one commit's ids are held at a time.
    """
    with open_checkpoint(path) as handle:
        lines = _first_bytes(checkpoint_lines(handle), valid_bytes)
        yield from enumerate(checkpoint.commits(lines, name=path.name), 1)


def _first_bytes(lines: Iterable[bytes | Overlong], limit: int) -> Iterator[bytes]:
    """The lines that end within the first `limit` bytes (none of which is over the cap)."""
    read = 0
    for raw in lines:
        if isinstance(raw, Overlong):
            return  # never among the lines a replay accepted
        read += len(raw)
        if read > limit:
            return
        yield raw


@dataclass(frozen=True, slots=True)
class Chunk:
    """The bytes one commit appended have been read: whether their crc32 holds, whether they decode."""

    ordinal: int  # the Nth commit entry of checkpoint.ndjson
    commit: Commit
    crc_ok: bool
    error: str | None

    def describe(self) -> str:
        commit = self.commit
        lines = f"lines {commit.first_line}..{commit.lines}"
        return f"bytes {commit.start}..{commit.end} (commit {self.ordinal}, {lines})"


@dataclass(frozen=True, slots=True)
class Line:
    """One committed line of a records file: its number (from 1) and its bytes, newline included."""

    number: int
    raw: bytes


class RecordsReader:
    """The committed bytes of one records file, fed commit by commit, read back line by line.

    For each commit, in checkpoint order, `read` yields a `Chunk` followed by
    the lines the commit completed; `finish` yields a last line that has no
    newline. Each commit is read and decoded on its own (for compressed files
    it is one gzip member or zstd frame), so damage in one commit does not hide
    the rest of the file. A line that damage split across commits is joined up
    again.
    """

    __slots__ = (
        "_carry",
        "_codec",
        "_handle",
        "_number",
        "_sha",
        "cut_at",
        "lines",
        "path",
        "read_all",
        "size",
    )

    def __init__(self, path: Path, size: int) -> None:
        """Open `path`, which is `size` bytes on disk (read no further, though it may be growing)."""
        self.path = path
        self.size = size
        self._codec = codec_of_file(path.name)
        self._handle: BinaryIO | None = open_regular(path)
        self._sha = hashlib.sha256()
        self._carry = b""
        self._number = 0
        #: The first commit whose bytes are not all in the file (truncated), with its ordinal.
        self.cut_at: tuple[int, Commit] | None = None
        #: Every commit decoded; with `cut_at` None, `lines` is the file's line count.
        self.read_all = True
        #: Lines yielded so far.
        self.lines = 0

    def sha256(self) -> str:
        """The sha256 of the committed bytes read (all of them when `cut_at` is None)."""
        return self._sha.hexdigest()

    def read(self, ordinal: int, commit: Commit) -> Iterator[Chunk | Line]:
        """The chunk of `commit` (the `ordinal`th), then the lines it completed; nothing after a cut."""
        if self.cut_at is not None or self._handle is None:
            return
        size = commit.end - commit.start
        data = self._handle.read(size) if commit.end <= self.size else b""
        if len(data) != size:
            self.cut_at = (ordinal, commit)
            return
        self._sha.update(data)
        crc_ok = zlib.crc32(data) == commit.crc32
        try:
            lines = list(decompressed_lines(io.BytesIO(data), self._codec))
        except _DECODE_ERRORS as exc:
            self.read_all = False
            yield Chunk(ordinal, commit, crc_ok, f"cannot be decompressed ({exc or type(exc).__name__})")
            self._carry, self._number = b"", commit.lines
            return
        yield Chunk(ordinal, commit, crc_ok, None)
        if self._carry:
            lines[:1] = [self._carry + lines[0]] if lines else [self._carry]
            self._carry = b""
        if lines and not lines[-1].endswith(b"\n"):
            self._carry = lines.pop()
        for line in lines:
            yield self._line(line)

    def finish(self) -> Iterator[Line]:
        """The last committed line when it has no newline; the file is closed."""
        self.close()
        if self._carry:
            yield self._line(self._carry)
            self._carry = b""

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _line(self, raw: bytes) -> Line:
        self._number += 1
        self.lines += 1
        return Line(self._number, raw)


@dataclass(frozen=True, slots=True)
class FileStart:
    """A listed records file is next: `size` bytes on disk, or None when it is missing (then not read)."""

    path: Path
    state: FileState
    size: int | None


@dataclass(frozen=True, slots=True)
class FileRefused:
    """A listed file is not read: it is not a regular file (`why`: "is a symbolic link", ...)."""

    path: Path
    state: FileState
    why: str


@dataclass(frozen=True, slots=True)
class FileEnd:
    """The file's last commit and line were read (or it was found cut): `reader` has its totals."""

    path: Path
    state: FileState
    reader: RecordsReader


RecordsEvent = FileStart | FileRefused | Chunk | Line | FileEnd


def read_records(root: Path, state: CheckpointState) -> Iterator[RecordsEvent]:
    """Every listed records file of the archive in `root`, read commit by commit, as events.

    The checkpoint is replayed once more, up to `state.valid_bytes`, and each
    file is read as its commits come by: a file's commits are consecutive (only
    one file is open at a time), so one file is open at a time here too. A file
    that exists gets `FileStart`, its chunks and lines, then `FileEnd`; a missing
    one only `FileStart` (size None), a refused one only `FileRefused`.
    """
    current: FileState | None = None
    reader: RecordsReader | None = None
    try:
        for ordinal, commit in replay_commits(checkpoint_path(root), state.valid_bytes):
            if current is None or current.name != commit.file:
                if reader is not None and current is not None:
                    yield from _end_file(reader, current)
                current = state.files[commit.file]
                reader = None
                path = root / current.name
                try:
                    st: os.stat_result | None = os.lstat(path)
                except FileNotFoundError:
                    st = None
                problem = None if st is None else entry_problem(st)
                if problem is not None:
                    yield FileRefused(path, current, problem)
                    continue
                size = None if st is None else st.st_size
                yield FileStart(path, current, size)
                if size is not None:
                    reader = RecordsReader(path, size)
            if reader is not None:
                yield from reader.read(ordinal, commit)
        if reader is not None and current is not None:
            yield from _end_file(reader, current)
            reader = None
    finally:
        if reader is not None:
            reader.close()


def _end_file(reader: RecordsReader, state: FileState) -> Iterator[Line | FileEnd]:
    yield from reader.finish()
    yield FileEnd(reader.path, state, reader)


def line_id(raw: bytes) -> tuple[str | None, str]:
    """The record's id, or None and what is wrong with the line.

    orjson first; the standard library when orjson refuses valid JSON (`1e400`,
    integers wider than 64 bits) or turns a very wide integer id into a float.
    """
    try:
        record = orjson.loads(raw)
        if isinstance(record, dict) and isinstance(record.get("id"), float):
            raise ValueError("a wide integer id")
    except ValueError:
        try:
            record = json.loads(raw, parse_int=_json_int)
        except (ValueError, RecursionError) as exc:
            return None, f"is not JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"is a JSON {type(record).__name__}, not an object"
    value = record.get("id")
    if isinstance(value, str):
        return value, ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), ""
    if "id" not in record:
        return None, 'has no "id"'
    return None, f'has an "id" that is a {type(value).__name__}, not a string'


#: An id the checkpoint lists that the file's lines skipped over or never had: (id, line, commit ordinal).
Missing = tuple[str, int, int]
_NONE_MISSING: tuple[Missing, ...] = ()


class Alignment:
    """Matches a file's line ids against the ids its commits list, in order, resyncing after damage.

    Each method returns the expected ids it gave up on, with their line and
    their commit's ordinal: skipped over (a later expected id turned up first),
    pushed out of the window, or never seen by `finish`. A line id that is not
    pending here does not match, and the caller tells a duplicate from a
    stranger. At most `_ALIGN_WINDOW` ids are pending, so a file whose lines
    have all gone costs no more memory than a healthy one.
    """

    __slots__ = ("_expected", "_pending")

    def __init__(self) -> None:
        self._expected: deque[Missing] = deque()
        self._pending: dict[str, int] = {}

    def expect(self, ordinal: int, commit: Commit) -> tuple[Missing, ...]:
        """The ids of `commit`, the `ordinal`th, are the next ones the file's lines should have."""
        for offset, record_id in enumerate(commit.ids):
            self._expected.append((record_id, commit.first_line + offset, ordinal))
            self._pending[record_id] = self._pending.get(record_id, 0) + 1
        excess = len(self._expected) - _ALIGN_WINDOW
        return tuple(self._pop() for _ in range(excess)) if excess > 0 else _NONE_MISSING

    def match(self, record_id: str) -> tuple[Missing, ...] | None:
        """None when `record_id` is not pending; else the ids skipped over to reach it (usually none)."""
        if record_id not in self._pending:
            return None
        entry = self._pop()
        if entry[0] == record_id:
            return _NONE_MISSING
        skipped = [entry]
        while (entry := self._pop())[0] != record_id:
            skipped.append(entry)
        return tuple(skipped)

    def finish(self) -> tuple[Missing, ...]:
        """The ids still expected: none of them turned up."""
        return tuple(self._pop() for _ in range(len(self._expected)))

    def _pop(self) -> Missing:
        entry = self._expected.popleft()
        left = self._pending[entry[0]] - 1
        if left:
            self._pending[entry[0]] = left
        else:
            del self._pending[entry[0]]
        return entry


def _json_int(text: str) -> int | str:
    """An integer of the records, which the exporter keeps at any width; Python refuses over 4300 digits."""
    try:
        return int(text)
    except ValueError:
        return text


def line_at(path: Path, offset: int) -> int:
    """The number of the line that starts at byte `offset` of `path` (a torn checkpoint line's)."""
    newlines = 0
    with open_checkpoint(path) as handle:
        while offset > 0 and (chunk := handle.read(min(offset, 1 << 20))):
            newlines += chunk.count(b"\n")
            offset -= len(chunk)
    return newlines + 1
