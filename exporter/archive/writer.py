"""The archive's one writer: opening a run (lock, recovery), group commits, rotation, and the run's end.

Layout and formats are `layout.py`'s; this module decides when they are
written. Opening an archive for a run takes the lock (`lock.py`), refuses a
planted link, finishes an interrupted --refetch move or starts one
(`generations.py`), replays the checkpoint and recovers the records files;
at the end of a run it merges failed.ndjson (`failures.py`), logs the run's
end and replaces summary.json.

Nothing here opens a path: every file is opened, created, renamed and removed
through one `SafeDir` (safe_fs.py), relative to the directory's descriptor and
never through a link; before anything is written, `reader.unsafe_entries`
turns away a link, FIFO, device or hard link in any place an archive file goes.

Exactly-once is this module's job alone. A commit appends a batch of lines to
the current records file, fsyncs it, then appends one checkpoint entry listing
those ids and the file's new length, and fsyncs that. A batch whose ids would
make an entry longer than `layout.CHECKPOINT_LINE_BYTES` (which readers refuse
as damage) is written as several commits, each its own entry and (compressed)
its own frame, with the same two fsyncs; so any batch size is safe. Opening the archive cuts
the current records file back to the length the checkpoint last recorded, so
whatever a crash left behind (a partial line, whole lines never logged) is gone
and will be fetched again; nothing committed is ever rewritten.

`Archive` is synchronous and not thread-safe on purpose: the pipeline calls it
from a single writer thread, so no lock is needed and the event loop never
waits on a disk. The one exception is deflate: a large gzip commit is deflated
in pieces by the writer thread and helper threads at once (`framing.DeflatePool`),
before the writer writes it; the helpers touch no file.

Why one module of this size: exactly-once is this module's job alone; opening (recovery),
committing, rotating and ending a run all move the same files and checkpoint, and keeping
them together keeps the one writer one.
"""

from __future__ import annotations

import copy
import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from exporter.config import ArchiveSettings
from exporter.digests import ArchivedLookup, DigestSet
from exporter.errors import ArchiveCorrupt, ArchiveError
from exporter.payload import Record

from . import checkpoint
from .archived import ArchivedIds
from .checkpoint import CheckpointState, FileState, check_same_shard, resumes_refetch
from .failures import FailureJournal, known_missing
from .framing import Codec, DeflatePool, codec_for, codec_of_file
from .generations import finish_superseding, interrupted_move, supersede
from .index import IndexKeeper, checkpoint_state
from .layout import (
    CHECKPOINT_NAME,
    FAILED_NAME,
    SUMMARY_NAME,
    FileReport,
    Summary,
    file_number,
    is_report_temp,
)
from .lock import locked_directory
from .reader import RESTORE_OR_REFETCH, check_records_files, refuse_records_only, unsafe_entries
from .safe_fs import SafeDir, os_error, refused, write_all

# Hash at most this much of a file's backlog per commit when resuming, so a
# resumed run over a large open file is not held up at start-up (see _RecordsFile).
_HASH_CATCH_UP_BYTES = 32 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRequest:
    """What the run about to start says about itself in the checkpoint."""

    started_at: str
    refetch: bool
    manifest: str
    shard: str | None


class Archive:
    """An open archive: replayed checkpoint, recovered files, the lock held."""

    __slots__ = (
        "_checkpoint_bytes",
        "_checkpoint_fd",
        "_codec",
        "_current",
        "_deflaters",
        "_dir",
        "_index",
        "_journal",
        "_lock_fd",
        "_settings",
        "archived",
        "committed",
        "known_missing",
        "root",
        "run",
        "state",
        "superseded_to",
        "written_bytes",
    )

    def __init__(self, settings: ArchiveSettings, directory: SafeDir, lock_fd: int) -> None:
        self._settings = settings
        self._dir = directory
        self._lock_fd = lock_fd
        self._codec = codec_for(settings.compress, settings.compress_level)
        self._deflaters = _deflate_pool(settings)
        self._current: _RecordsFile | None = None
        self._checkpoint_fd = -1
        #: The checkpoint's length as this process wrote it (whole entries only).
        self._checkpoint_bytes = 0
        self._journal = FailureJournal(directory)
        self._index: IndexKeeper | None = None
        self.root = settings.out_dir
        #: Every id the archive held when it was opened (looked up in its index).
        self.archived: ArchivedLookup = DigestSet()
        #: Digests of ids an earlier run found missing (404): not asked again by default.
        self.known_missing = DigestSet()
        self.state = CheckpointState()
        self.committed = 0
        #: Bytes this run appended to records files, as stored (compressed or not).
        self.written_bytes = 0
        self.run = 0
        self.superseded_to: Path | None = None

    # -- how a person is told of it ---------------------------------------------

    @property
    def where(self) -> str:
        """The archive as a message, a log event or a report names it: its directory.

        A `RemoteArchive` is the s3:// URL: its directory is only a stage in
        the work dir, and whoever reads the line looks for the archive there.
        """
        return str(self.root)

    def where_file(self, name: str) -> str:
        """The file `name` of the directory, as an error about that file names it (its path).

        A `RemoteArchive` says the path and the archive it stages: the local
        file is the one to fix, the URL says whose it is.
        """
        return str(self.root / name)

    @property
    def repair_advice(self) -> str:
        """What to do about a records file that lost records the checkpoint lists (missing, cut short)."""
        return RESTORE_OR_REFETCH

    @property
    def failed_list(self) -> str:
        """Where a person reads the ids this archive lists as failed, once the run's reports are written."""
        return self.where_file(FAILED_NAME)

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, settings: ArchiveSettings, request: RunRequest) -> Archive:
        """Lock, recover and open the archive in `settings.out_dir` for one run."""
        directory, lock_fd = locked_directory(settings.out_dir)
        return cls(settings, directory, lock_fd)._recovered(request)

    def _recovered(self, request: RunRequest) -> Self:
        """This archive, recovered for the run `request` describes; closed if that fails."""
        try:
            self._recover(request)
        except BaseException:
            self.close()
            raise
        return self

    def _recover(self, request: RunRequest) -> None:
        directory = self._dir
        # Refuse a planted link before anything is written, not at the first write through it.
        unsafe = unsafe_entries(directory)
        if unsafe:
            name, why = unsafe[0]
            raise refused(self.where_file(name), why)
        for name in directory.names():  # left by a run killed while it replaced a report
            if is_report_temp(name):
                directory.unlink(name)
        generation = interrupted_move(directory)
        if generation is not None:
            finish_superseding(directory, generation)
        ckpt = CHECKPOINT_NAME
        exists = directory.lstat(ckpt) is not None
        if exists and request.refetch and not resumes_refetch(checkpoint_state(directory).runs):
            self.superseded_to = supersede(directory, request.started_at)
        self.state = self._open_index()
        check_same_shard(self.where, self.state, request.shard)
        self._recover_records_files()
        known_missing(directory, self.known_missing)
        self._checkpoint_fd = directory.open(ckpt, os.O_WRONLY | os.O_APPEND, create=True)
        if self.state.torn_tail:
            try:
                os.ftruncate(self._checkpoint_fd, self.state.valid_bytes)
            except OSError as exc:
                raise os_error(self.where_file(ckpt), exc, "cut the torn last line of") from exc
        self._checkpoint_bytes = self.state.valid_bytes
        self.run = self.state.next_run
        self._log(
            checkpoint.run_entry(
                run=self.run,
                at=request.started_at,
                refetch=request.refetch,
                manifest=request.manifest,
                shard=request.shard,
            )
        )
        self._journal.start()

    def _open_index(self) -> CheckpointState:
        """The checkpoint's state, from its index (caught up first: see `index.py`)."""
        refuse_records_only(self.root, self._dir)
        self._index = IndexKeeper.open(self._dir)
        self.archived = ArchivedIds(self._index.view)
        return copy.deepcopy(self._index.state)

    def _recover_records_files(self) -> None:
        """Cut the open file back to its committed length; check the closed ones; drop strays."""
        for name in check_records_files(self.where_file, self._dir, self.state, repair=self.repair_advice):
            self._dir.unlink(name)  # created by a run that died before its first commit to it
        open_state = self.state.open_file
        if open_state is not None:
            self._current = _RecordsFile.reopen(self._dir, open_state)

    # -- writing ---------------------------------------------------------------

    def commit(self, records: Sequence[tuple[str, Record]]) -> None:
        """Make `records` (id, line without its newline) durable and part of the archive.

        One commit, or several when their ids would not fit in one checkpoint
        entry (`checkpoint.commit_groups`): all appended, then one fsync of
        the records file, then their entries in one write and one fsync.
        """
        if not records:
            return
        current = self._writable_file()
        ids = [record_id for record_id, _ in records]
        size_before = current.size
        entries = []
        try:
            for group in checkpoint.commit_groups(ids):
                chunks = current.codec.frame([line for _, line in records[group]], self._deflaters)
                crc = current.append(chunks, group.stop - group.start)
                entries.append(
                    checkpoint.commit_entry(
                        file=current.name, end=current.size, lines=current.lines, crc32=crc, ids=ids[group]
                    )
                )
            os.fdatasync(current.fd)
            self._log(b"".join(entries))
        except OSError as exc:
            raise ArchiveError(
                f"cannot write to {self.where_file(current.name)}: {exc.strerror}; the records committed so "
                "far are safe: fix the cause and run the same command again to continue"
            ) from exc
        self.committed += len(records)
        self.written_bytes += current.size - size_before
        current.catch_up(_HASH_CATCH_UP_BYTES)
        if self._is_full(current):
            self._close_current()

    def record_failures(self, lines: Sequence[bytes]) -> None:
        """Note ids that did not export in this run (failed.ndjson lines, merged into it at the end)."""
        self._journal.append(lines)

    def _writable_file(self) -> _RecordsFile:
        current = self._current
        if current is not None and (current.codec.name != self._codec.name or self._is_full(current)):
            self._close_current()
            current = None
        if current is None:
            number = 1 + max((file_number(n) or 0 for n in self.state.files), default=0)
            name = self._codec.file_name(number)
            current = _RecordsFile.create(self._dir, name, self._codec)
            self.state.files[name] = FileState(name)
            self._current = current
        return current

    def _is_full(self, current: _RecordsFile) -> bool:
        limit = self._settings.max_file_bytes
        return limit is not None and current.size >= limit

    def _close_current(self) -> None:
        current = self._current
        if current is None:
            return
        digest = current.sha256()
        self._log(
            checkpoint.close_entry(file=current.name, size=current.size, lines=current.lines, sha256=digest)
        )
        state = self.state.files[current.name]
        state.size, state.lines, state.closed, state.sha256 = (
            current.size,
            current.lines,
            True,
            digest,
        )
        current.close()
        self._current = None

    def _log(self, entry: bytes) -> None:
        try:
            write_all(self._checkpoint_fd, entry)
            os.fdatasync(self._checkpoint_fd)
        except OSError as exc:
            raise os_error(self.where_file(CHECKPOINT_NAME), exc, "write") from exc
        self._checkpoint_bytes += len(entry)
        if self._index is not None:
            self._index.logged(entry)  # durable now: the index may cover it

    # -- shipping to object storage (exporter/remote/) ---------------------------

    def seal(self) -> str | None:
        """Close the open records file now, before it is full (rotation early); its name, if one was open."""
        current = self._current
        if current is None:
            return None
        self._close_current()
        return current.name

    def log_shipped(self, name: str, *, key: str, checksum: str, etag: str, version: str | None) -> int:
        """Log that closed file `name` is in object storage under `key`; the checkpoint's length after it."""
        state = self.state.files[name]
        self._log(
            checkpoint.shipped_entry(
                file=name, key=key, size=state.size, checksum=checksum, etag=etag, version=version
            )
        )
        state.shipped = checkpoint.ShippedCopy(key=key, checksum=checksum, etag=etag, version=version)
        return self._checkpoint_bytes

    def drop_shipped(self, name: str) -> None:
        """Remove the local copy of a shipped file (the work dir is a staging area, not the archive)."""
        state = self.state.files[name]
        if state.shipped is None or not state.closed:
            raise ValueError(f"{name} is not shipped")
        if self._dir.lstat(name) is not None:
            self._dir.unlink(name)

    @property
    def checkpoint_bytes(self) -> int:
        """The checkpoint's length: the entries written so far, whole."""
        return self._checkpoint_bytes

    # -- the end of a run ------------------------------------------------------

    def files_report(self) -> list[FileReport]:
        """Name, bytes, lines, sha256 and state of every records file, for summary.json."""
        report = []
        for state in self.state.files.values():
            current = self._current
            if current is not None and current.name == state.name:
                report.append(
                    FileReport(
                        name=state.name,
                        bytes=current.size,
                        lines=current.lines,
                        sha256=current.sha256(),
                        closed=False,
                    )
                )
            else:
                report.append(
                    FileReport(
                        name=state.name,
                        bytes=state.size,
                        lines=state.lines,
                        sha256=state.sha256,
                        closed=state.closed,
                    )
                )
        return report

    def write_failed(self, handled: DigestSet) -> int:
        """Rewrite failed.ndjson (see `FailureJournal.merge`); the number of lines written."""
        return self._journal.merge(handled, self.archived)

    def end_run(
        self, *, at: str, exit_code: int, status: str, counts: dict[str, int], message: str | None = None
    ) -> None:
        """Log the end of this run in the checkpoint (with the user-facing message, if any)."""
        self._log(
            checkpoint.end_entry(
                run=self.run, at=at, exit_code=exit_code, status=status, counts=counts, message=message
            )
        )

    def write_summary(self, summary: Summary) -> None:
        """Replace summary.json atomically."""
        self._dir.write_whole(SUMMARY_NAME, [summary.to_bytes()])

    def close(self) -> None:
        """Close every file and release the lock; safe to call twice."""
        if self._index is not None:
            index, self._index = self._index, None
            index.close()  # writes what this run logged as a run of the index
        if self._current is not None:
            self._current.close()
            self._current = None
        if self._checkpoint_fd >= 0:
            os.close(self._checkpoint_fd)
            self._checkpoint_fd = -1
        # The journal only matters until write_failed has merged it; a run that
        # dies before that retries its failed ids next time anyway.
        self._journal.close()
        if self._deflaters is not None:
            self._deflaters.close()
            self._deflaters = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
        self._dir.close()

    def __repr__(self) -> str:
        current = self._current
        where = f"{current.name}@{current.size}" if current is not None else "no open file"
        return (
            f"<Archive {self.root} run={self.run} archived={len(self.archived)} "
            f"committed={self.committed} {where}>"
        )


def _deflate_pool(settings: ArchiveSettings) -> DeflatePool | None:
    """Threads for deflating large gzip commits in pieces; None where the writer thread does it alone."""
    if settings.compress != "gzip":
        return None
    threads = settings.compress_threads or len(os.sched_getaffinity(0))
    return DeflatePool(threads) if threads >= 2 else None


class _RecordsFile:
    """One records file open for appending, with its running size, line count and sha256.

    The sha256 is fed from memory as commits are written. A file reopened by a
    later run has a committed prefix not yet hashed in this process; it is read
    back from disk a bounded amount per commit (and in full only when the hash
    is asked for), so a resume over a large file starts at once.
    """

    __slots__ = ("_hashed", "_hasher", "codec", "fd", "lines", "name", "path", "size")

    def __init__(self, path: Path, fd: int, codec: Codec, size: int, lines: int) -> None:
        self.path = path
        self.name = path.name
        self.fd = fd
        self.codec = codec
        self.size = size
        self.lines = lines
        self._hasher = hashlib.sha256()
        self._hashed = 0

    @classmethod
    def create(cls, directory: SafeDir, name: str, codec: Codec) -> _RecordsFile:
        fd = directory.open(name, os.O_RDWR | os.O_APPEND, create=True, exclusive=True)
        return cls(directory.path / name, fd, codec, 0, 0)

    @classmethod
    def reopen(cls, directory: SafeDir, state: FileState) -> _RecordsFile:
        path = directory.path / state.name
        fd = directory.open(state.name, os.O_RDWR | os.O_APPEND)
        try:
            if os.fstat(fd).st_size != state.size:
                os.ftruncate(fd, state.size)
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise os_error(path, exc, "cut back to its committed length") from exc
        return cls(path, fd, codec_of_file(state.name), state.size, state.lines)

    def append(self, chunks: Sequence[bytes | memoryview], lines: int) -> int:
        """Write `chunks` (one commit holding `lines` lines); returns their crc32."""
        in_step = self._hashed == self.size
        write_all(self.fd, chunks)
        crc = 0
        update = self._hasher.update
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            if in_step:
                update(chunk)
            self.size += len(chunk)
        self.lines += lines
        if in_step:
            self._hashed = self.size
        return crc

    def catch_up(self, budget: int) -> None:
        """Hash up to `budget` bytes of the part of the file not hashed yet."""
        while self._hashed < self.size and budget > 0:
            try:
                chunk = os.pread(self.fd, min(budget, 1 << 20, self.size - self._hashed), self._hashed)
            except OSError as exc:
                raise os_error(self.path, exc, "read") from exc
            if not chunk:
                raise ArchiveCorrupt(f"{self.path} is shorter than the {self.size} bytes committed")
            self._hasher.update(chunk)
            self._hashed += len(chunk)
            budget -= len(chunk)

    def sha256(self) -> str:
        self.catch_up(self.size)
        return self._hasher.hexdigest()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
