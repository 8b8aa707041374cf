"""The archive index on disk: found, checked against the checkpoint, caught up, kept, merged.

The checkpoint stays the truth; the index (`index_format.py`) is a cache of it
that lets a run start, and `exporter get` find a record, without replaying the
whole checkpoint. So nothing here ever trusts an index file over the checkpoint:

- **Which runs.** Run files are named by the checkpoint bytes they cover
  (`layout.index_run_name`). From byte 0, the run reaching furthest that opens
  cleanly (magic, version, sizes, crc32, state) and links to the one before
  (its start, first ordinal and `sha_start` equal the previous run's end) is
  taken, and so on: the *chain*. A damaged or foreign file simply ends it.
- **Against the checkpoint.** The checkpoint is read from its first byte
  through sha256 (1.7 GB/s here), and each run of the chain must find its
  `sha_end` at its `ckpt_end`; the chain is cut at the first that does not.
  An index from another generation, a restored checkpoint, or damage in the
  checkpoint's covered part therefore costs speed, never correctness.
- **The tail.** The checkpoint after the chain is replayed from the last run's
  state, as `checkpoint.replay` would replay it from the start (damage there
  is `ArchiveCorrupt`, as before). A reader keeps the tail's ids in memory
  (`IndexView`); the writer writes them as a new run at once (`IndexKeeper`),
  so the next start replays nothing.
- **Kept as the archive grows.** The writer hands every checkpoint entry it
  made durable to `IndexKeeper.logged`, which folds it exactly as a replay
  would and adds the commits' ids to a builder; every `FLUSH_IDS` ids, and at
  the end of the run, the builder becomes a run file (written under a temporary
  name, fsync'd, renamed: a kill at any instant leaves the old chain or the new
  one). Runs of similar size are then merged (`MERGE_RATIO`), so there are a
  handful at any size, and run files off the chain (merged away, damaged,
  of another version, a killed merge's) are removed.

Readers (`exporter get`, `--dry-run`, `status`, `verify`) take no lock: a
merge may remove a run they were about to open, in which case they look again.

Why one module of this size: finding, checking, catching up, keeping and merging runs
are one protocol over the same files (which run reaches furthest, what it links to, what a
merge may replace); split, each half would have to re-derive the other's invariants, and a
kill -9 at any step is tested against all of them together (tests/test_index_crash.py).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import mmap
import os
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from exporter.bounded import Overlong
from exporter.errors import ArchiveCorrupt, ArchiveError

from . import checkpoint, index_format, layout
from .checkpoint import CheckpointState
from .index_format import (
    TRAILER_BYTES,
    CommitPlace,
    IndexFormatError,
    Run,
    RunBuilder,
    bucket_bits,
    empty_sha,
    merged_by_ranges,
    merged_parts,
    sorting_is_cheaper,
    trailer,
)
from .reader import checkpoint_lines, open_checkpoint
from .safe_fs import SafeDir, os_error, pwrite_all

log = logging.getLogger(__name__)

#: A builder becomes a run file after this many ids (bounds the writer's memory: about 31 bytes an
#: id held, and some 60 more while one is sorted; and the checkpoint a reader replays while a run
#: is going on).
FLUSH_IDS = 1 << 16
#: A catch-up (or a rebuild) writes runs of this many times FLUSH_IDS ids (fewer files; a run killed
#: loses at most one), each laid out for its own size, and merges them by ranges (`merged_by_ranges`).
CATCH_UP_FACTOR = 4
#: The two newest runs are merged while the older holds at most this many times the newer's ids...
MERGE_RATIO = 4
#: ... counting a run of fewer ids as this many, so small runs (one per finished export) merge.
MERGE_FLOOR = 1 << 16
_READ_BYTES = 1 << 20
_CRC_READ_BYTES = 4 << 20
_FORGET_BYTES = 16 << 20
#: `IndexView.ids_from` hands out ids this many ID_POINTs at a time.
_ID_STRETCH = 8
_OPEN_ATTEMPTS = 3
#: What a merge yields: bytes in file order (`merged_parts`), or placed at an offset (`merged_by_ranges`).
_Part = TypeVar("_Part", bytes, tuple[int, bytes])


@dataclass(slots=True)
class _Opened:
    """A run file of the chain, mapped."""

    name: str
    run: Run
    mapped: mmap.mmap

    def close(self) -> None:
        self.run.release()
        self.mapped.close()


@dataclass(slots=True)
class IndexReport:
    """What was found, for `exporter index`, `status` and `verify`."""

    runs: list[str] = field(default_factory=list)
    #: Run files not on the chain, with why (damaged, another version, off the chain).
    ignored: list[tuple[str, str]] = field(default_factory=list)
    #: Checkpoint bytes the chain covers, of `checkpoint_bytes` valid ones.
    covered_bytes: int = 0
    checkpoint_bytes: int = 0
    #: Ids the chain holds, of `ids` the checkpoint lists.
    covered_ids: int = 0
    ids: int = 0
    index_bytes: int = 0
    #: The chain reached further, but the checkpoint differs there: the index was cut back.
    disagreed_at: int | None = None


class IndexView:
    """The archive as of one checkpoint length: its state, and which ids it holds where.

    Built by `open_view` (read-only) or `IndexKeeper.open` (the writer's, which
    has written the tail as a run first). Lookups go through the chain's mapped
    runs, then the in-memory run of the tail; ordinals number the ids in
    checkpoint order.
    """

    __slots__ = ("_directory", "_opened", "_runs", "report", "state")

    def __init__(
        self,
        state: CheckpointState,
        opened: list[_Opened],
        tail: list[Run],
        report: IndexReport,
        directory: SafeDir | None = None,
    ) -> None:
        self.state = state
        self._opened = opened
        self._runs = [o.run for o in opened] + tail
        self.report = report
        self._directory = directory

    @property
    def ids(self) -> int:
        """Ids the archive holds (every id of every commit, in checkpoint order)."""
        return self.state.ids

    def lookup(self, digest: bytes) -> int | None:
        """The ordinal of the first place of the id with this digest, or None when it is not archived.

        Raises ArchiveCorrupt for a run that answers an ordinal it does not
        cover: every check at open passed, so only a forged file (or a writer's
        bug) gets here, and no caller may index its marks or commits with it.
        """
        for run in self._runs:
            found = run.lookup(digest)
            if found is not None:
                if not run.holds(found):
                    raise self._misplaced(run, found)
                return found
        return None

    def _misplaced(self, run: Run, ordinal: int) -> ArchiveCorrupt:
        name = next((opened.name for opened in self._opened if opened.run is run), "its index")
        where = self._directory.path / name if self._directory is not None else Path(name)
        header = run.header
        return ArchiveCorrupt(
            f"{where} is damaged: it places an id at ordinal {ordinal}, outside the ids it covers "
            f"({header.first_ordinal}..{header.end_ordinal}); remove it, or run `exporter index "
            f"{where.parent} --rebuild` to make the index again from the checkpoint"
        )

    def place(self, ordinal: int) -> CommitPlace:
        """The commit holding `ordinal`: its file, bytes, crc32 and the line's position in it."""
        files = list(self.state.files)
        for run in self._runs:
            if run.holds(ordinal):
                return run.place(ordinal, files)
        raise IndexFormatError(f"no run holds ordinal {ordinal}")

    def runs(self) -> list[Run]:
        return list(self._runs)

    def forget_pages(self) -> None:
        """Give the pages of the mapped runs read so far back to the page cache.

        They count in the process's RSS while mapped, and a planner reading the
        whole ids section and a bucket per lookup would otherwise hold most of
        the index resident: memory that grows with the archive. A page needed
        again is mapped again from the page cache (a minor fault).
        """
        for opened in self._opened:
            with contextlib.suppress(OSError, ValueError):
                opened.mapped.madvise(mmap.MADV_DONTNEED)

    def ids_from(self, ordinal: int) -> Iterator[tuple[int, list[bytes]]]:
        """The archived ids (UTF-8) from about `ordinal` on, a stretch at a time, with its first ordinal.

        The first stretch starts at the closest ordinal at or before `ordinal`
        that the runs mark (`ID_POINT`). For the planner, which checks whole
        chunks of manifest lines against the ids archived near them.
        """
        for run in self._runs:
            header = run.header
            if header.end_ordinal <= ordinal:
                continue
            point = index_format.ID_POINT
            start = max(header.first_ordinal, ordinal - ordinal % point)
            while start < header.end_ordinal:
                stop = min(header.end_ordinal, (start // point + _ID_STRETCH) * point)
                yield start, run.ids_between(start, stop)
                start = stop
            ordinal = header.end_ordinal

    def close(self) -> None:
        for opened in self._opened:
            opened.close()
        self._opened = []
        self._runs = []

    def __enter__(self) -> IndexView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<IndexView ids={self.ids} runs={len(self._runs)} covered={self.report.covered_bytes}>"


# -- finding and checking the chain --------------------------------------------------------------


def _open_run(directory: SafeDir, name: str) -> _Opened:
    """Map and check the run file `name`; IndexFormatError (or ArchiveError) when it cannot be used.

    The crc32 is computed by reading the file, not the mapping: pages read
    through a mapping count in the process's RSS, those read into a buffer
    only in the page cache.
    """
    fd = directory.open(name, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size <= TRAILER_BYTES:
            raise IndexFormatError("shorter than a run")
        crc = _file_crc32(fd, size - TRAILER_BYTES)
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise os_error(directory.path / name, exc, "read") from exc
    finally:
        os.close(fd)
    try:
        run = Run.open(mapped, crc_of_body=crc)
    except BaseException:
        mapped.close()
        raise
    return _Opened(name, run, mapped)


def _file_crc32(fd: int, size: int) -> int:
    crc = 0
    buffer = bytearray(_CRC_READ_BYTES)
    view = memoryview(buffer)
    at = 0
    while at < size:
        got = os.preadv(fd, [view[: min(_CRC_READ_BYTES, size - at)]], at)
        if not got:
            raise IndexFormatError("shorter than its header says")
        crc = zlib.crc32(view[:got], crc)
        at += got
    return crc


def _find_chain(directory: SafeDir, report: IndexReport) -> tuple[list[_Opened], bool]:
    """The longest chain of linked, intact runs from checkpoint byte 0 (not yet checked against it).

    Also says whether a run went away while it was looked at (a merge removed
    it): the caller then looks again.
    """
    by_start: dict[int, list[tuple[int, str]]] = {}
    for name in directory.names():
        span = layout.index_run_span(name)
        if span is not None:
            by_start.setdefault(span[0], []).append((span[1], name))
    chain: list[_Opened] = []
    used: set[str] = set()
    vanished = False
    at, ordinal, sha = 0, 0, empty_sha()
    while at in by_start:
        for end, name in sorted(by_start[at], reverse=True):
            used.add(name)
            try:
                opened = _open_run(directory, name)
            except (IndexFormatError, ArchiveError) as exc:
                vanished = vanished or directory.lstat(name) is None
                report.ignored.append((name, str(exc)))
                continue
            header = opened.run.header
            if (header.ckpt_start, header.ckpt_end) != (at, end):
                report.ignored.append((name, "its name and its header disagree"))
            elif header.first_ordinal != ordinal or header.sha_start != sha:
                report.ignored.append((name, "it does not continue the run before it"))
            else:
                chain.append(opened)
                at, ordinal, sha = end, header.end_ordinal, header.sha_end
                break
            opened.close()
        else:
            break
    for starts in by_start.values():
        report.ignored.extend((name, "not on the chain") for _, name in starts if name not in used)
    return chain, vanished


class _PrefixHashes(threading.Thread):
    """The sha256 of the checkpoint's first N bytes for each N where a run file says it ends.

    Hashed in a thread while the runs themselves are checked (sha256 and crc32
    both let go of the GIL): on a 10-million-id archive the two reads cost
    about as much, and two cores do them at once.
    """

    def __init__(self, directory: SafeDir, ends: list[int]) -> None:
        super().__init__(name="index-checkpoint-hash", daemon=True)
        self._directory = directory
        self._ends = sorted(set(ends))
        #: sha256 objects, as they stood after the checkpoint's first `end` bytes.
        self.hashed: dict[int, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            handle = self._directory.reader(layout.CHECKPOINT_NAME)
            if handle is None:
                return
            with handle:
                hasher, read = hashlib.sha256(), 0
                for end in self._ends:
                    while read < end:
                        chunk = handle.read(min(_READ_BYTES, end - read))
                        if not chunk:
                            return  # the checkpoint is shorter: no run ends past here
                        hasher.update(chunk)
                        read += len(chunk)
                    self.hashed[end] = hasher.copy()
        except BaseException as exc:  # handed to the opener, which raises it
            self.error = exc

    def result(self) -> dict[int, Any]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.hashed


def _check_against(
    chain: list[_Opened], hashed: dict[int, Any], report: IndexReport
) -> tuple[list[_Opened], Any]:
    """Cut `chain` at the first run whose `sha_end` the checkpoint's own bytes do not give.

    Returns the runs kept (the others closed) and the sha256 of the bytes they
    cover, ready to go on hashing from there.
    """
    good = hashlib.sha256()
    for index, opened in enumerate(chain):
        hasher = hashed.get(opened.run.header.ckpt_end)
        if hasher is None or hasher.digest() != opened.run.header.sha_end:
            report.disagreed_at = opened.run.header.ckpt_start
            for dropped in chain[index:]:
                report.ignored.append((dropped.name, "does not match the checkpoint"))
                dropped.close()
            return chain[:index], good
        good = hasher.copy()
    return chain, good


class _Lines:
    """A checkpoint's lines from `start`, hashed one line late.

    When `checkpoint.commits` yields the commit of a line, the hasher holds
    exactly the bytes before that line, so a run may start there with that
    sha256; `finish` hashes the last line only if the replay accepted it.
    """

    __slots__ = ("_held", "_lines", "at", "hasher", "line_start")

    def __init__(self, lines: Iterable[bytes | Overlong], start: int, hasher: Any) -> None:
        self._lines = iter(lines)
        self._held: bytes | Overlong = b""
        self.hasher = hasher
        self.at = start
        self.line_start = start

    def __iter__(self) -> Iterator[bytes | Overlong]:
        for raw in self._lines:
            # A line over the cap is never held whole, nor hashed: it is damage, or the torn last line.
            if self._held and not isinstance(self._held, Overlong):
                self.hasher.update(self._held)
            self._held = raw
            self.line_start = self.at
            self.at += raw.size + 1 if isinstance(raw, Overlong) else len(raw)
            yield raw

    def digest_through_last(self) -> bytes:
        """The sha256 of the checkpoint up to the end of the line last handed out."""
        through = self.hasher.copy()
        if not isinstance(self._held, Overlong):
            through.update(self._held)
        digest: bytes = through.digest()
        return digest

    def finish(self, valid_bytes: int) -> None:
        held = self._held
        if held and not isinstance(held, Overlong) and self.line_start + len(held) <= valid_bytes:
            self.hasher.update(held)
        self._held = b""


@dataclass(slots=True)
class _Segment:
    """Part of the checkpoint after the chain, as a builder of one run, and its ends' sha256."""

    builder: RunBuilder
    sha_start: bytes
    end: int = 0
    sha_end: bytes = b""
    #: The checkpoint's state at `end`.
    state: CheckpointState = field(default_factory=CheckpointState)


@dataclass(slots=True)
class _Opening:
    """An index found, checked, and its checkpoint tail replayed into segments."""

    state: CheckpointState
    chain: list[_Opened]
    report: IndexReport
    #: sha256 of the checkpoint's valid bytes (`state.valid_bytes`), to go on hashing.
    hasher: Any

    def close(self) -> None:
        for opened in self.chain:
            opened.close()
        self.chain = []


#: What becomes of each segment of the checkpoint's tail, as soon as it is complete.
OnSegment = Callable[["_Segment"], None]


def _open_index(directory: SafeDir, *, flush_ids: int, on_segment: OnSegment | None) -> _Opening:
    """Find the chain, check it against the checkpoint, replay the rest (see the module docstring).

    The tail's ids go to `on_segment` a segment (`flush_ids` ids) at a time, so
    however far behind the index is, a segment's builder is all that is held;
    with None they are not even digested (only the state is wanted).
    """
    if remote_form(directory):
        # A copy of an s3:// archive: the checkpoint in segments, and no index (a remote archive's
        # index is kept in its work dir, never shipped). All of it is replayed.
        return _replay_tail(directory, [], IndexReport(), flush_ids, on_segment, {})
    for attempt in range(_OPEN_ATTEMPTS):
        report = IndexReport()
        ends = [span[1] for span in map(layout.index_run_span, directory.names()) if span is not None]
        hashes = _PrefixHashes(directory, ends)
        hashes.start()
        try:
            chain, vanished = _find_chain(directory, report)
        finally:
            hashed = hashes.result()
        if vanished and attempt < _OPEN_ATTEMPTS - 1:
            for opened in chain:
                opened.close()
            continue  # a run went away while the chain was read (a merge): look again
        return _replay_tail(directory, chain, report, flush_ids, on_segment, hashed)
    raise AssertionError("unreachable")


def _replay_whole(directory: SafeDir) -> None:
    """Replay the whole checkpoint, for its error: damage found in the tail, said with its line number.

    The index does not count the checkpoint's lines, and damage is rare enough
    to pay for reading the part it covers again.
    """
    handle = _checkpoint_reader(directory)
    if handle is not None:
        with handle:
            checkpoint.replay(checkpoint_lines(handle))


def remote_form(directory: SafeDir) -> bool:
    """Whether `directory` holds an archive in the remote form: its checkpoint as checkpoint.d/ segments."""
    if directory.lstat(layout.CHECKPOINT_NAME) is not None:
        return False
    info = directory.lstat(layout.SEGMENTS_DIR)
    return info is not None and stat.S_ISDIR(info.st_mode)


def _checkpoint_reader(directory: SafeDir) -> BinaryIO | None:
    """The checkpoint for reading: the file, or in the remote form its segments as one stream."""
    if remote_form(directory):
        return open_checkpoint(directory.path / layout.SEGMENTS_DIR)
    return directory.reader(layout.CHECKPOINT_NAME)


def _replay_tail(
    directory: SafeDir,
    chain: list[_Opened],
    report: IndexReport,
    flush_ids: int,
    on_segment: OnSegment | None,
    hashed: dict[int, Any],
) -> _Opening:
    handle = _checkpoint_reader(directory)
    opening = _Opening(CheckpointState(), chain, report, hashlib.sha256())
    if handle is None:
        opening.close()
        return opening
    try:
        with handle:
            chain, hasher = _check_against(chain, hashed, report)
            opening.chain = chain
            if chain:
                last = chain[-1].run
                state = copy.deepcopy(last.state)
                start, ordinal = last.header.ckpt_end, last.header.end_ordinal
            else:
                state, start, ordinal = CheckpointState(), 0, 0
            if start:
                handle.seek(start)
            lines = _Lines(checkpoint_lines(handle), start, hasher)
            segment = _Segment(RunBuilder(first_ordinal=ordinal, ckpt_start=start), hasher.copy().digest())
            files: dict[str, int] = {}
            for commit in checkpoint.commits(lines, state):
                if on_segment is None:
                    continue
                file_index = _file_index(files, state, commit.file)
                segment.builder.add(commit, file_index=file_index, ckpt_offset=lines.line_start)
                if len(segment.builder) >= flush_ids:
                    # Laid out for its own size: the segments are merged by ranges (a sort an id,
                    # whatever their bits), and a smaller fanout is cheaper to write and check.
                    segment.end, segment.sha_end = lines.at, lines.digest_through_last()
                    segment.state = copy.deepcopy(state)
                    on_segment(segment)
                    builder = RunBuilder(first_ordinal=segment.builder.next_ordinal, ckpt_start=lines.at)
                    segment = _Segment(builder, segment.sha_end)
            lines.finish(state.valid_bytes)
            segment.end, segment.sha_end, segment.state = state.valid_bytes, hasher.digest(), state
            if on_segment is not None and segment.end > segment.builder.ckpt_start:
                on_segment(segment)
    except OSError as exc:
        opening.close()
        raise os_error(directory.path / layout.CHECKPOINT_NAME, exc, "read") from exc
    except ArchiveCorrupt:
        opening.close()
        if chain and chain[-1].run.header.ckpt_end:  # the tail's lines were counted from there
            _replay_whole(directory)  # raises the same damage, named by its line in the whole file
        raise
    except BaseException:
        opening.close()
        raise
    opening.state, opening.hasher = state, hasher
    report.runs = [o.name for o in chain]
    report.covered_bytes = chain[-1].run.header.ckpt_end if chain else 0
    report.covered_ids = chain[-1].run.header.end_ordinal if chain else 0
    report.checkpoint_bytes = state.valid_bytes
    report.ids = state.ids
    report.index_bytes = sum(len(o.mapped) for o in chain)
    return opening


def _file_index(files: dict[str, int], state: CheckpointState, name: str) -> int:
    """The position of records file `name` in `state.files` (files are only ever added)."""
    found = files.get(name)
    if found is None:
        files.clear()
        files.update((file, number) for number, file in enumerate(state.files))
        found = files[name]
    return found


def _segment_parts(segment: _Segment) -> list[bytes]:
    return segment.builder.parts(
        ckpt_end=segment.end,
        sha_start=segment.sha_start,
        sha_end=segment.sha_end,
        state=segment.state,
    )


def open_view(directory: SafeDir, *, flush_ids: int | None = None) -> IndexView:
    """The archive in `directory` as the index and the checkpoint say, read-only (no lock, no writes).

    The part of the checkpoint the index does not cover is replayed into a run
    in memory. Raises ArchiveCorrupt for damage in that part, as a full replay
    would.
    """
    laid: list[Run] = []

    def lay_out(segment: _Segment) -> None:
        if len(segment.builder):
            laid.append(Run.open(b"".join(_segment_parts(segment)), check_crc=False))

    try:
        opening = _open_index(
            directory, flush_ids=flush_ids or FLUSH_IDS * CATCH_UP_FACTOR, on_segment=lay_out
        )
    except BaseException:
        for run in laid:
            run.release()
        raise
    tail = laid
    if len(laid) > 1:  # one run to probe, not one per segment
        if sorting_is_cheaper(laid):
            tail = [Run.open(_assembled(*merged_by_ranges(laid)), check_crc=False)]
        else:
            tail = [Run.open(b"".join(merged_parts(laid)), check_crc=False)]
        for run in laid:
            run.release()
    return IndexView(opening.state, opening.chain, tail, opening.report, directory)


def _assembled(size: int, placed: Iterable[tuple[int, bytes]]) -> mmap.mmap:
    """A run `merged_by_ranges` gives, in anonymous memory (read as a file's mapping is: slices are bytes)."""
    buf = mmap.mmap(-1, size)
    for at, piece in placed:
        buf[at : at + len(piece)] = piece
    body = size - TRAILER_BYTES
    view = memoryview(buf)
    try:
        crc = zlib.crc32(view[:body])
    finally:
        view.release()
    buf[body:] = trailer(crc)
    return buf


def checkpoint_state(directory: SafeDir) -> CheckpointState:
    """The checkpoint's state (files, runs, id count): the last run's, plus the tail replayed."""
    opening = _open_index(directory, flush_ids=FLUSH_IDS, on_segment=None)
    opening.close()
    return opening.state


# -- the writer's side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Link:
    """A run file of the keeper's chain."""

    name: str
    count: int
    ckpt_start: int
    ckpt_end: int
    sha_end: bytes


class IndexKeeper:
    """The index as the archive's writer keeps it: caught up at open, fed every entry, flushed, merged.

    Not thread-safe: the writer's thread calls it, after each checkpoint entry
    is durable. A failure to write the index is logged once and the keeper
    stops writing: the index is a cache, and the next run catches it up.
    """

    __slots__ = ("_builder", "_chain", "_dir", "_failed", "_files", "_flush_ids", "_hasher", "_state", "view")

    def __init__(self, directory: SafeDir, state: CheckpointState, hasher: Any, flush_ids: int) -> None:
        self._dir = directory
        self._flush_ids = flush_ids
        self._state = state
        self._hasher = hasher
        self._chain: list[_Link] = []
        self._builder = RunBuilder(first_ordinal=state.ids, ckpt_start=state.valid_bytes)
        self._files: dict[str, int] = {}
        self._failed = False
        #: The archive as it was when opened, all of it indexed: what the run's planner asks.
        self.view = IndexView(state, [], [], IndexReport())

    @classmethod
    def open(cls, directory: SafeDir, *, flush_ids: int | None = None) -> IndexKeeper:
        """Check the index, write the checkpoint's tail as runs, merge, and drop what is off the chain."""
        for name in directory.names():
            if layout.is_index_temp(name):
                directory.unlink(name)
        flush_ids = flush_ids or FLUSH_IDS
        catch_up_ids = flush_ids * CATCH_UP_FACTOR
        written: list[_Link] = []
        failure: list[Exception] = []

        def write(segment: _Segment) -> None:
            if failure:
                return
            try:
                written.append(
                    _write_run(directory, segment.builder.ckpt_start, segment.end, _segment_parts(segment))
                )
            except (ArchiveError, IndexFormatError) as exc:
                failure.append(exc)

        opening = _open_index(directory, flush_ids=catch_up_ids, on_segment=write)
        keeper = cls(directory, opening.state, opening.hasher, flush_ids)
        keeper._chain = [_link(o.name, o.run) for o in opening.chain] + written
        try:
            if failure:
                raise failure[0]
            keeper._compact()
            keeper._collect_garbage()
            keeper.view = _map_chain(directory, keeper._chain, keeper._state, opening)
        except (ArchiveError, IndexFormatError) as exc:
            opening.close()
            keeper._give_up(exc)
            keeper.view = open_view(directory, flush_ids=catch_up_ids)  # the tail in memory, as a reader
        return keeper

    @property
    def state(self) -> CheckpointState:
        """The checkpoint's state, kept up to date with every entry logged."""
        return self._state

    def logged(self, entries: bytes) -> None:
        """Checkpoint entries (whole lines, newlines included) are durable: fold them in, flush when due.

        A commit split by `checkpoint.commit_groups` is logged as several entries in one write.
        """
        for entry in entries.splitlines(keepends=True):
            self._logged(entry)

    def _logged(self, entry: bytes) -> None:
        if self._failed:
            return
        state = self._state
        start = state.valid_bytes
        try:
            for commit in checkpoint.commits([entry], state):
                file_index = _file_index(self._files, state, commit.file)
                self._builder.add(commit, file_index=file_index, ckpt_offset=start)
            if state.valid_bytes != start + len(entry):
                raise IndexFormatError("the writer logged an entry a replay would not accept")
        except IndexFormatError as exc:
            self._give_up(exc)
            return
        self._hasher.update(entry)
        if len(self._builder) >= self._flush_ids:
            self.flush()

    def flush(self) -> None:
        """Write what was logged since the last run as a run, then merge (nothing if nothing was)."""
        state = self._state
        builder = self._builder
        if self._failed or state.valid_bytes == builder.ckpt_start:
            return
        self._builder = RunBuilder(first_ordinal=state.ids, ckpt_start=state.valid_bytes)
        sha_start = self._chain[-1].sha_end if self._chain else empty_sha()
        # Laid out for the archive's whole size, as the runs it is merged into soon are: those merges
        # then re-lay nothing but, once each time the archive doubles, the oldest run.
        parts = builder.parts(
            ckpt_end=state.valid_bytes,
            sha_start=sha_start,
            sha_end=self._hasher.copy().digest(),
            state=state,
            bits=bucket_bits(state.ids),
        )
        try:
            self._chain.append(self._write(builder.ckpt_start, state.valid_bytes, parts))
            self._compact()
            self._collect_garbage()
        except (ArchiveError, IndexFormatError) as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        log.warning(
            "cannot keep the index of %s (%s); the export goes on, and the next run brings it up to date",
            self._dir.path,
            exc,
        )
        self._failed = True

    def close(self) -> None:
        """Flush what is left; the view's maps are let go."""
        try:
            self.flush()
        finally:
            self.view.close()

    def _write(self, start: int, end: int, parts: Iterable[bytes]) -> _Link:
        return _write_run(self._dir, start, end, parts)

    def _compact(self) -> None:
        """Merge runs until each holds more than MERGE_RATIO times the ids of the one after it.

        The first run that does not is merged with every run after it, at once
        (a catch-up writes many runs of one size: each id is copied once per
        merge), and so on until none is left; runs of fewer than MERGE_FLOOR ids
        count as that many, so the small run each export ends with is merged.
        """
        chain = self._chain
        while True:
            first = next(
                (
                    at
                    for at in range(len(chain) - 1)
                    if chain[at].count <= MERGE_RATIO * max(chain[at + 1].count, MERGE_FLOOR)
                ),
                None,
            )
            if first is None:
                return
            self._merge(first)

    def _merge(self, first: int) -> None:
        """Merge the runs from `first` to the newest into one: by ranges or by buckets, the cheaper."""
        chain = self._chain
        started = time.monotonic()
        inputs = chain[first:]
        opened: list[_Opened] = []
        try:
            opened.extend(_open_run(self._dir, link.name) for link in inputs)
            runs = [o.run for o in opened]
            start, end = inputs[0].ckpt_start, inputs[-1].ckpt_end
            if sorting_is_cheaper(runs):
                size, placed = merged_by_ranges(runs)
                result = _write_placed_run(self._dir, start, end, size, _forgetting(placed, opened))
            else:
                result = self._write(start, end, _forgetting(merged_parts(runs), opened))
        finally:
            for each in opened:
                each.close()
        chain[first:] = [result]
        for link in inputs:
            self._dir.unlink(link.name)
        log.debug(
            "%d index runs merged into %s in %.2f s", len(inputs), result.name, time.monotonic() - started
        )

    def _collect_garbage(self) -> None:
        """Remove run files off the chain: merged away, damaged, of another version, a killed merge's."""
        keep = {link.name for link in self._chain}
        for name in self._dir.names():
            if layout.is_index_file(name) and name not in keep:
                self._dir.unlink(name)

    def __repr__(self) -> str:
        return (
            f"<IndexKeeper runs={len(self._chain)} pending={len(self._builder)} at={self._state.valid_bytes}>"
        )


def _forgetting(parts: Iterable[_Part], inputs: list[_Opened]) -> Iterator[_Part]:
    """`parts`, giving the inputs' pages back every 16 MB written (a merge reads each once, in order)."""
    written = 0
    for part in parts:
        yield part
        written += len(part if isinstance(part, bytes) else part[1])
        if written >= _FORGET_BYTES:
            written = 0
            for each in inputs:
                with contextlib.suppress(OSError, ValueError):
                    each.mapped.madvise(mmap.MADV_DONTNEED)


def _write_run(directory: SafeDir, start: int, end: int, parts: Iterable[bytes]) -> _Link:
    """Write a run (temporary name, fsync, rename) and read it back: what the next reader will find."""
    name = layout.index_run_name(start, end)
    directory.write_whole(name, parts)
    opened = _open_run(directory, name)
    try:
        return _link(name, opened.run)
    finally:
        opened.close()


def _write_placed_run(
    directory: SafeDir, start: int, end: int, size: int, placed: Iterable[tuple[int, bytes]]
) -> _Link:
    """Write a run whose pieces come out of file order (`merged_by_ranges`), as `_write_run` does."""

    def seal(fd: int) -> None:
        body = size - TRAILER_BYTES
        pwrite_all(fd, trailer(_file_crc32(fd, body)), body)

    name = layout.index_run_name(start, end)
    directory.write_placed(name, size, placed, seal)
    opened = _open_run(directory, name)
    try:
        return _link(name, opened.run)
    finally:
        opened.close()


def _link(name: str, run: Run) -> _Link:
    h = run.header
    return _Link(name, h.count, h.ckpt_start, h.ckpt_end, h.sha_end)


def _map_chain(
    directory: SafeDir, chain: list[_Link], state: CheckpointState, opening: _Opening
) -> IndexView:
    """The view of the chain the keeper has just checked, written and merged: mapped.

    The runs the opening mapped (and checked) and still on the chain are kept;
    the others are let go, and the new ones mapped.
    """
    found = {opened.name: opened for opened in opening.chain}
    opening.chain = []
    mapped: list[_Opened] = []
    try:
        for link in chain:
            reused = found.pop(link.name, None)
            mapped.append(reused if reused is not None else _open_run(directory, link.name))
    except BaseException:
        for each in mapped:
            each.close()
        raise
    finally:
        for unused in found.values():
            unused.close()
    report = IndexReport(
        runs=[link.name for link in chain],
        ignored=opening.report.ignored,
        covered_bytes=state.valid_bytes,
        checkpoint_bytes=state.valid_bytes,
        covered_ids=state.ids,
        ids=state.ids,
        index_bytes=sum(len(o.mapped) for o in mapped),
        disagreed_at=opening.report.disagreed_at,
    )
    return IndexView(copy.deepcopy(state), mapped, [], report, directory)


def rebuild(directory: SafeDir, *, flush_ids: int | None = None) -> IndexReport:
    """Remove every index file and build the index again from the checkpoint (the caller holds the lock)."""
    for name in directory.names():
        if layout.is_index_file(name):
            directory.unlink(name)
    keeper = IndexKeeper.open(directory, flush_ids=flush_ids)
    report = keeper.view.report
    keeper.close()
    return report


def describe(root: Path, report: IndexReport) -> str:
    """One line about the index, for a person."""
    return (
        f"{root}: index of {len(report.runs)} run(s), {report.index_bytes:,} bytes, "
        f"covering {report.covered_ids:,} of {report.ids:,} ids"
    )
