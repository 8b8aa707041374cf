"""The archive directory, and the one object that writes to it.

Layout of `--out DIR`:

    records-00001.ndjson[.gz|.zst]   recordings, one JSON object a line
    checkpoint.ndjson                what each commit made durable (checkpoint.py)
    failed.ndjson                    ids not archived, with the reason (rewritten per run)
    summary.json                     counts and file hashes (rewritten per run)
    superseded/<stamp>/              earlier generations set aside by --refetch
    .lock                            held while a run writes

Nothing here opens a path: every file is opened, created, renamed and removed
through one `SafeDir` (safe_fs.py), relative to the directory's descriptor and
never through a link; before anything is written, `unsafe_entries` turns away
a link, FIFO, device or hard link in any place an archive file goes.

Exactly-once is this module's job alone. A commit appends a batch of lines to
the current records file, fsyncs it, then appends one checkpoint entry listing
those ids and the file's new length, and fsyncs that. Opening the archive cuts
the current records file back to the length the checkpoint last recorded, so
whatever a crash left behind (a partial line, whole lines never logged) is gone
and will be fetched again; nothing committed is ever rewritten.

`Archive` is synchronous and not thread-safe on purpose: the pipeline calls it
from a single writer thread, so no lock is needed and the event loop never
waits on a disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import checkpoint
from .checkpoint import CheckpointState, FileState
from .codecs import Codec, codec_for, codec_of_file, file_number, unlisted_records_files
from .config import ArchiveSettings
from .digests import DigestSet, id_digest
from .errors import ArchiveCorrupt, ArchiveError, ArchiveLocked, Reason, UsageError
from .payload import Record
from .safe_fs import SafeDir, entry_problem, is_temp_of, open_regular_fd, os_error, refused

LOCK_NAME = ".lock"
FAILED_NAME = "failed.ndjson"
SUMMARY_NAME = "summary.json"
JOURNAL_NAME = ".failed.partial"
SUPERSEDED_DIR = "superseded"
SUPERSEDE_MARKER = ".superseding"
#: Files rewritten whole, through a temporary file renamed over them.
_REPLACED = (FAILED_NAME, SUMMARY_NAME, SUPERSEDE_MARKER)
#: Files appended to or truncated in place: they must have no other link.
_WRITTEN_IN_PLACE = (LOCK_NAME, JOURNAL_NAME, checkpoint.CHECKPOINT_NAME)
_GENERATION = re.compile(r"[A-Za-z0-9_-]{1,100}")
# Hash at most this much of a file's backlog per commit when resuming, so a
# resumed run over a large open file is not held up at start-up (see _RecordsFile).
_HASH_CATCH_UP_BYTES = 32 << 20
# Buffers per writev call (POSIX guarantees at least 16; Linux allows 1024).
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16)


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
        "_checkpoint_fd",
        "_codec",
        "_current",
        "_dir",
        "_journal_fd",
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
        self._current: _RecordsFile | None = None
        self._checkpoint_fd = -1
        self._journal_fd = -1
        self.root = settings.out_dir
        #: Digests of every id the archive held when it was opened.
        self.archived = DigestSet()
        #: Digests of ids an earlier run found missing (404): not asked again by default.
        self.known_missing = DigestSet()
        self.state = CheckpointState()
        self.committed = 0
        #: Bytes this run appended to records files, as stored (compressed or not).
        self.written_bytes = 0
        self.run = 0
        self.superseded_to: Path | None = None

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, settings: ArchiveSettings, request: RunRequest) -> Archive:
        """Lock, recover and open the archive in `settings.out_dir` for one run."""
        directory = SafeDir.open_archive(settings.out_dir)
        try:
            lock_fd = _lock(directory)
        except BaseException:
            directory.close()
            raise
        archive = cls(settings, directory, lock_fd)
        try:
            archive._recover(request)
        except BaseException:
            archive.close()
            raise
        return archive

    def _recover(self, request: RunRequest) -> None:
        directory = self._dir
        # Refuse a planted link before anything is written, not at the first write through it.
        unsafe = unsafe_entries(directory)
        if unsafe:
            name, why = unsafe[0]
            raise refused(self.root / name, why)
        for name in directory.names():  # left by a run killed while it replaced a report
            if any(is_temp_of(name, report) for report in _REPLACED):
                directory.unlink(name)
        generation = _marker_target(directory)
        if generation is not None:
            _finish_superseding(directory, generation)
        ckpt = checkpoint.CHECKPOINT_NAME
        exists = directory.lstat(ckpt) is not None
        if exists and request.refetch and not resumes_refetch(self._peek_runs()):
            self.superseded_to = _supersede(directory, request.started_at)
        self.state = self._replay()
        self._check_same_shard(request)
        self._recover_records_files()
        self._load_known_missing()
        self._checkpoint_fd = directory.open(ckpt, os.O_WRONLY | os.O_APPEND, create=True)
        if self.state.torn_tail:
            try:
                os.ftruncate(self._checkpoint_fd, self.state.valid_bytes)
            except OSError as exc:
                raise os_error(self.root / ckpt, exc, "cut the torn last line of") from exc
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
        directory.unlink(JOURNAL_NAME)
        self._journal_fd = directory.open(
            JOURNAL_NAME, os.O_WRONLY | os.O_APPEND, create=True, exclusive=True
        )

    def _check_same_shard(self, request: RunRequest) -> None:
        check_same_shard(self.root, self.state, request.shard)

    def _peek_runs(self) -> list[checkpoint.RunState]:
        """The runs of the current generation, without loading its ids."""
        return self._read_checkpoint(lambda ids: None).runs

    def _read_checkpoint(self, on_ids: Callable[[list[str]], None]) -> CheckpointState:
        name = checkpoint.CHECKPOINT_NAME
        handle = self._dir.reader(name)
        if handle is None:
            return CheckpointState()
        try:
            with handle:
                return checkpoint.replay(handle, on_ids)
        except OSError as exc:
            raise os_error(self.root / name, exc, "read") from exc

    def _replay(self) -> CheckpointState:
        if self._dir.lstat(checkpoint.CHECKPOINT_NAME) is None:
            leftovers = [n for n in self._dir.names() if file_number(n) is not None]
            if leftovers:
                raise ArchiveCorrupt(
                    f"{self.root} holds {sorted(leftovers)[0]} but no {checkpoint.CHECKPOINT_NAME}: "
                    "it is not an archive this exporter can add to without risking duplicates; "
                    "move those files away or choose another --out"
                )
            return CheckpointState()
        add = self.archived.add

        def remember(ids: list[str]) -> None:
            for record_id in ids:
                add(id_digest(record_id))

        return self._read_checkpoint(remember)

    def _recover_records_files(self) -> None:
        """Cut the open file back to its committed length; check the closed ones; drop strays."""
        known = self.state.files
        leftover, foreign = unlisted_records_files(self._dir.names(), known)
        if foreign:
            raise ArchiveCorrupt(
                f"{self.root / foreign[0]} is not listed in the checkpoint; move it away "
                "(run `exporter verify` to see what the archive holds)"
            )
        for name in leftover:  # created by a run that died before its first commit to it
            self._dir.unlink(name)
        for state in known.values():
            path = self.root / state.name
            st = self._dir.lstat(state.name)
            if st is None:
                raise ArchiveCorrupt(
                    f"{path} is missing but the checkpoint lists {state.lines} records in it; "
                    "restore it from a backup, or start over with --refetch "
                    "(the current files are kept under superseded/)"
                )
            problem = entry_problem(st)
            if problem is not None:
                raise refused(path, problem)
            size = st.st_size
            if size < state.size or (state.closed and size != state.size):
                raise ArchiveCorrupt(
                    f"{path} is {size} bytes but {state.size} were committed to it; restore it "
                    "from a backup, or start over with --refetch (the current files are kept)"
                )
        open_state = self.state.open_file
        if open_state is not None:
            self._current = _RecordsFile.reopen(self._dir, open_state)

    def _load_known_missing(self) -> None:
        for entry in failed_entries(self._dir):
            if entry.get("reason") == Reason.NOT_FOUND and isinstance(entry.get("id"), str):
                self.known_missing.add(id_digest(entry["id"]))

    # -- writing ---------------------------------------------------------------

    def commit(self, records: Sequence[tuple[str, Record]]) -> None:
        """Make `records` (id, line without its newline) durable and part of the archive, in one commit."""
        if not records:
            return
        current = self._writable_file()
        chunks = current.codec.frame([line for _, line in records])
        size_before = current.size
        try:
            crc = current.append(chunks, len(records))
            os.fdatasync(current.fd)
            self._log(
                checkpoint.commit_entry(
                    file=current.name,
                    end=current.size,
                    lines=current.lines,
                    crc32=crc,
                    ids=[record_id for record_id, _ in records],
                )
            )
        except OSError as exc:
            raise ArchiveError(
                f"cannot write to {current.path}: {exc.strerror}; the records committed so far "
                "are safe: fix the cause and run the same command again to continue"
            ) from exc
        self.committed += len(records)
        self.written_bytes += current.size - size_before
        current.catch_up(_HASH_CATCH_UP_BYTES)
        if self._is_full(current):
            self._close_current()

    def record_failures(self, lines: Sequence[bytes]) -> None:
        """Note ids that did not export in this run (merged into failed.ndjson at the end)."""
        if lines:
            try:
                _write_all(self._journal_fd, b"".join(lines))
            except OSError as exc:
                raise os_error(self.root / JOURNAL_NAME, exc, "write") from exc

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
            _write_all(self._checkpoint_fd, entry)
            os.fdatasync(self._checkpoint_fd)
        except OSError as exc:
            raise os_error(self.root / checkpoint.CHECKPOINT_NAME, exc, "write") from exc

    # -- the end of a run ------------------------------------------------------

    def files_report(self) -> list[dict[str, Any]]:
        """Name, bytes, lines, sha256 and state of every records file, for summary.json."""
        report = []
        for state in self.state.files.values():
            current = self._current
            digest: str | None
            if current is not None and current.name == state.name:
                size, lines, digest, closed = current.size, current.lines, current.sha256(), False
            else:
                size, lines, digest, closed = state.size, state.lines, state.sha256, state.closed
            report.append(
                {
                    "name": state.name,
                    "bytes": size,
                    "lines": lines,
                    "sha256": digest,
                    "closed": closed,
                }
            )
        return report

    def write_failed(self, handled: DigestSet) -> int:
        """Rewrite failed.ndjson: this run's failures, plus earlier ones this run did not touch.

        An earlier failure is dropped when this run handled its id (`handled`)
        or the archive holds it; earlier bad-manifest-line reports are dropped
        too, since they name a line of an earlier manifest, not an id, and so
        are reports of an id cut to its first KiB (`id_bytes`), which cannot
        be matched to this run's ids: a manifest that lists it reports it again.
        Returns the number of lines written.
        """
        count = 0

        def lines() -> Iterator[bytes]:
            nonlocal count
            for entry in failed_entries(self._dir):
                record_id = entry.get("id")
                if (
                    entry.get("reason") == Reason.BAD_MANIFEST_LINE
                    or "id_bytes" in entry
                    or not isinstance(record_id, str)
                ):
                    continue
                digest = id_digest(record_id)
                if digest in handled or digest in self.archived:
                    continue
                count += 1
                yield orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
            journal = self._dir.reader(JOURNAL_NAME)
            if journal is None:
                raise ArchiveError(f"{self.root / JOURNAL_NAME} was removed while the run wrote it")
            try:
                with journal:
                    for line in journal:
                        count += 1
                        yield line
            except OSError as exc:
                raise os_error(self.root / JOURNAL_NAME, exc, "read") from exc

        _atomic_write(self._dir, FAILED_NAME, lines())
        return count

    def end_run(
        self, *, at: str, exit_code: int, status: str, counts: dict[str, int], message: str | None = None
    ) -> None:
        """Log the end of this run in the checkpoint (with the user-facing message, if any)."""
        self._log(
            checkpoint.end_entry(
                run=self.run, at=at, exit_code=exit_code, status=status, counts=counts, message=message
            )
        )

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace summary.json atomically."""
        _atomic_write(self._dir, SUMMARY_NAME, [orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n"])

    def close(self) -> None:
        """Close every file and release the lock; safe to call twice."""
        if self._current is not None:
            self._current.close()
            self._current = None
        for fd in (self._checkpoint_fd, self._journal_fd):
            if fd >= 0:
                os.close(fd)
        self._checkpoint_fd = self._journal_fd = -1
        # The journal only matters until write_failed has merged it; a run that
        # dies before that retries its failed ids next time anyway.
        if self._dir.fd >= 0:
            with contextlib.suppress(ArchiveError):
                self._dir.unlink(JOURNAL_NAME)
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
        _write_all(self.fd, chunks)
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


# -- file system helpers -------------------------------------------------------


def entry_kind(name: str) -> str | None:
    """What the archive keeps under `name`: "dir", "written" (in place), "file", or None (not its)."""
    if name == SUPERSEDED_DIR:
        return "dir"
    if name in _WRITTEN_IN_PLACE:
        return "written"
    if name in _REPLACED or file_number(name) is not None or any(is_temp_of(name, r) for r in _REPLACED):
        return "file"
    return None


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
        problem = entry_problem(st, directory=kind == "dir", written=kind == "written")
        if problem is not None:
            found.append((name, problem))
    return found


def _write_all(fd: int, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write every byte of `data` (one buffer, or several with writev), however the kernel splits it."""
    if isinstance(data, bytes):
        data = [data]
    pending = [memoryview(chunk) for chunk in data if chunk]
    while pending:
        written = os.writev(fd, pending[:_IOV_MAX])
        while written and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if written:
            pending[0] = pending[0][written:]


def _atomic_write(directory: SafeDir, name: str, chunks: Iterable[bytes]) -> None:
    """Replace `name` with the concatenated `chunks`: all of it or none of it, mode 0600.

    Written to a new file of an unpredictable name first (created exclusively,
    so nothing planted there is written through), then renamed over `name`.
    """
    temp, fd = directory.create_temp(name)
    try:
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        directory.replace(temp, name)
    except OSError as exc:
        directory.unlink(temp)
        raise os_error(directory.path / name, exc, "write") from exc
    except BaseException:
        directory.unlink(temp)
        raise
    directory.fsync()


def _lock(directory: SafeDir) -> int:
    """Hold the archive's lock for this process's lifetime (released on close or exit)."""
    path = directory.path / LOCK_NAME
    fd = directory.open(LOCK_NAME, os.O_RDWR, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        os.close(fd)
        raise ArchiveLocked(
            f"another exporter (pid {holder}) is writing to {directory.path}; wait for it to finish, "
            "or stop it: it can be resumed later by running the same command"
        ) from None
    except OSError as exc:  # e.g. ENOLCK: a file system without locks
        os.close(fd)
        raise os_error(path, exc, "lock") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise os_error(path, exc, "write") from exc
    return fd


@dataclass(frozen=True, slots=True)
class LockState:
    """Whether an export holds the archive's lock; `held` None when it cannot be told."""

    held: bool | None
    pid: int | None = None


def probe_lock(root: Path) -> LockState:
    """Whether a run holds `root`'s lock right now, without ever keeping it.

    The lock file is opened read-only (never created) and a shared lock asked
    for without waiting: refused means an export holds its exclusive lock;
    granted is dropped at once, so a run starting in that microsecond is the
    only one that could notice (it would exit 4, "locked", and can be rerun).
    flock locks belong to the open file, so this works in the holder's own
    process too.
    """
    path = root / LOCK_NAME
    if not os.path.lexists(path):
        return LockState(held=False)
    try:
        fd = open_regular_fd(path)
    except ArchiveError:
        return LockState(held=None)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return LockState(held=True, pid=int(text) if text.isdigit() else None)
        except OSError:
            return LockState(held=None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState(held=False)
    finally:
        os.close(fd)


def check_same_shard(root: Path, state: CheckpointState, shard: str | None) -> None:
    """One archive holds one slice: mixing shards would break `verify` across the N archives."""
    if not state.ids or not state.runs:
        return
    previous = state.runs[-1].shard
    if previous != shard:
        raise UsageError(
            f"{root} holds shard {previous or 'none (all ids)'} but this run is shard "
            f"{shard or 'none (all ids)'}; use the same --shard, or another --out"
        )


def failed_entries(directory: SafeDir) -> Iterator[dict[str, Any]]:
    """The entries of an existing failed.ndjson; unreadable lines are skipped."""
    handle = directory.reader(FAILED_NAME)
    if handle is None:
        return
    try:
        with handle:
            for line in handle:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    yield entry
    except OSError as exc:
        raise os_error(directory.path / FAILED_NAME, exc, "read") from exc


def resumes_refetch(runs: list[checkpoint.RunState]) -> bool:
    """Whether a --refetch run continues the last run instead of starting over.

    It does when the last run was itself a --refetch run that did not get to
    the end of its manifest (killed, interrupted, or stopped by a refused
    token): running the same command again must resume, not restart.
    """
    if not runs:
        return False
    last = runs[-1]
    return last.refetch and last.status not in ("complete", "incomplete")


def _supersede(directory: SafeDir, stamp: str) -> Path:
    """Move the current generation aside into superseded/<stamp>/; crash-safe via a marker."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stamp)[:80] or "generation"
    with directory.subdir(SUPERSEDED_DIR) as superseded:
        name = safe
        suffix = 1
        while superseded.lstat(name) is not None:
            suffix += 1
            name = f"{safe}-{suffix}"
        superseded.subdir(name).close()
    _atomic_write(directory, SUPERSEDE_MARKER, [f"{SUPERSEDED_DIR}/{name}\n".encode()])
    _finish_superseding(directory, name)
    return directory.path / SUPERSEDED_DIR / name


def _marker_target(directory: SafeDir) -> str | None:
    """The generation a stopped --refetch was moving into (`superseded/<name>`), or None.

    Only a plain name under superseded/ is accepted: the marker is a file in a
    directory others may have prepared, and it decides where files are moved.
    """
    handle = directory.reader(SUPERSEDE_MARKER)
    if handle is None:
        return None
    with handle:
        text = handle.read(512).decode("utf-8", "replace").strip()
    prefix = SUPERSEDED_DIR + "/"
    name = text[len(prefix) :] if text.startswith(prefix) else ""
    if not _GENERATION.fullmatch(name):
        raise ArchiveCorrupt(
            f"{directory.path / SUPERSEDE_MARKER} names {text[:100]!r}, not a directory under "
            f"{SUPERSEDED_DIR}/: this exporter did not write it; remove it and check the archive "
            "with `exporter verify`"
        )
    return name


def _finish_superseding(directory: SafeDir, generation: str) -> None:
    """Move every generation file into superseded/`generation`, the checkpoint last, then drop the marker.

    Idempotent: after a crash part-way, the next open calls it again with the
    marker's target and it moves what is left.
    """
    with (
        directory.subdir(SUPERSEDED_DIR) as superseded,
        superseded.subdir(generation) as target,
    ):
        names = sorted(directory.names())
        movable = [n for n in names if file_number(n) is not None or n in (FAILED_NAME, SUMMARY_NAME)]
        if checkpoint.CHECKPOINT_NAME in names:
            movable.append(checkpoint.CHECKPOINT_NAME)
        for name in movable:
            directory.replace(name, name, into=target)
        target.fsync()
        directory.fsync()
    directory.unlink(SUPERSEDE_MARKER)
    directory.fsync()
