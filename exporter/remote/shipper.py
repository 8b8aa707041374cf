"""`RemoteArchive`: the run's archive staged in --work-dir and shipped to object storage in sealed pieces.

It is the local `Archive` (`archive/writer.py`, the one writer: exactly-once
stays its job) in `WORK/stage/`, plus shipping. The pipeline cannot tell
them apart: it commits, and at the end logs and reports, as for a directory.

    commit ------> Archive.commit (fsync, checkpoint)          writer thread
      | open file older than --upload-every, or over --upload-bytes: seal it
      v
    sealed piece --queue--> ship: the records file (create-only, checksummed,
                             read back) -> its `shipped` entry in the local
                             checkpoint -> the checkpoint bytes since the last
                             segment up to the piece's `close` entry, as the
                             next segment -> the local copy    shipper thread
                             dropped                           (its own loop)

The remote checkpoint is the local one cut into segments that each end with a
`close` or an `end` entry, so a piece counts in the bucket exactly when the
segment closing it exists. A segment never ends at a `shipped` entry: by the
time a piece's upload is logged, commits to the next records file may stand
before it, and they must not reach the bucket before that file; the `shipped`
entry goes with the next segment. A piece uploaded by a run killed before its
segment is taken in by the next run (`prepare`). Every object is created
once, never replaced or deleted.

Opening (`open_remote`) happens before any request to the API: the Object
Lock preflight, then `prepare`: the prefix is listed, the segments read and
concatenated (R), the work dir's checkpoint (L) compared with it
(`state.standing`), and the work dir rebuilt from R when it is behind or was
overtaken; uploads of earlier runs that nobody will complete are aborted.

Threads: the pipeline's writer thread calls the `Archive` methods; all S3
I/O runs on one event loop in a thread of its own (`_LoopThread`), so the
API's event loop never waits on the store. One lock makes the two take turns
on the local archive. Sealed pieces waiting to ship are capped
(`max_pending_pieces`): past that, commits wait, which holds the workers
back instead of filling the disk.

Why one module of this size: preparing the stage from the bucket, sealing and shipping
are one state machine over the same work dir (what is staged, sealed, shipped and recorded
in the checkpoint); it is crash-tested as one (tests/test_s3_crash.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from exporter.archive import checkpoint
from exporter.archive.layout import (
    CHECKPOINT_NAME,
    FAILED_NAME,
    Summary,
    run_failed_name,
    run_summary_name,
    segment_name,
)
from exporter.archive.lock import locked_directory, take_lock
from exporter.archive.safe_fs import SafeDir, os_error
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, RemoteSettings
from exporter.errors import ArchiveCorrupt, ArchiveError, UsageError
from exporter.payload import Record

from .adopt import adopt
from .checksums import sha256_b64_of_hex
from .location import Location, staged_copy
from .multipart import UPLOADS_DIR, journaled_uploads, ship_file
from .options import REFETCH_REMOTE
from .remote_read import MAX_SMALL_OBJECT, read_segments, replay
from .state import Standing, sort_listing, standing, strays
from .store import ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")

STAGE_DIR = "stage"


class _LoopThread:
    """An event loop on a thread of its own: every S3 call of the run runs there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="object-store", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` there and wait for it (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True, slots=True)
class Prepared:
    """What `prepare` found: how much of the local checkpoint the bucket has, and the next segment."""

    shipped_bytes: int
    segments: int
    standing: Standing


async def prepare(store: ObjectStore, location: Location, work: SafeDir) -> Prepared:
    """Make the work dir's stage agree with the bucket (module docstring); before the archive is opened."""
    listing = sort_listing(location, [(o.key, o.size) for o in await store.list_keys(location.list_prefix)])
    remote = await read_segments(store, listing.segments)
    remote_state = replay(remote, location)
    if any(not f.closed for f in remote_state.files.values()):
        raise ArchiveCorrupt(
            f"{location.url}: the checkpoint segments end inside a records file; they are not ones "
            "this exporter writes"
        )
    stage = work.subdir(STAGE_DIR)
    try:
        handle = stage.reader(CHECKPOINT_NAME)
        local = b""
        if handle is not None:
            with handle:
                local = handle.read()
    finally:
        stage.close()
    where = standing(local, remote)
    local_files: dict[str, checkpoint.FileState] = {}
    if where is Standing.AHEAD:
        local_files = replay(local, None).files
    orphan, foreign = strays(location, listing, remote_state.files)
    if orphan is not None and orphan in local_files and not await _ours(store, location, local_files[orphan]):
        # Another run shipped this piece, other bytes, and was killed before its segment: this
        # work dir was overtaken, and its own piece of that number can never be shipped.
        where, local_files = Standing.DIVERGED, {}
    if foreign:
        raise ArchiveCorrupt(
            f"s3://{location.bucket}/{foreign[0]} is a records file that the archive's checkpoint "
            f"does not list: {location.url} holds objects that are not this archive's. Nothing was "
            "changed; export into a prefix of its own"
        )
    segments = len(listing.segments)
    if orphan is not None and orphan not in local_files:
        segment = await adopt(store, location, work, orphan, remote)
        segments += 1
        await store.put_new(location.key(segment_name(segments)), segment)
        remote += segment
        remote_state = replay(remote, location)
        where = standing(local, remote)
    if where is not Standing.AHEAD:
        if where is Standing.DIVERGED and local:
            log.warning(
                "the work dir %s held pieces another run overtook (it shipped to %s meanwhile); they "
                "were never shipped and are set aside: their ids are fetched again",
                work.path,
                location.url,
            )
        # A piece's segment ends with its close entry; its `shipped` entry comes in the next
        # one. Pieces whose next segment is not there yet are read back to write it here.
        shipped = [
            await _shipped_line(store, location, f) for f in remote_state.files.values() if not f.shipped
        ]
        failed = await store.get(listing.last_failed, MAX_SMALL_OBJECT) if listing.last_failed else None
        await asyncio.to_thread(_rebuild_stage, work, remote + b"".join(shipped), failed)
    await _abort_stale_uploads(store, location, work)
    return Prepared(shipped_bytes=len(remote), segments=segments, standing=where)


async def _ours(store: ObjectStore, location: Location, state: checkpoint.FileState) -> bool:
    """Whether the piece in the bucket is the work dir's own (by checksum); True when that cannot be told."""
    facts = await store.head(location.key(state.name))
    if facts is None or facts.checksum_sha256 is None:
        return True
    if state.shipped is not None and state.shipped.checksum:
        return facts.checksum_sha256 == state.shipped.checksum
    if "-" in facts.checksum_sha256 or state.sha256 is None:
        return True  # a multipart composite: the upload itself will tell (412 with another checksum)
    return facts.checksum_sha256 == sha256_b64_of_hex(state.sha256) and facts.size == state.size


async def _shipped_line(store: ObjectStore, location: Location, state: checkpoint.FileState) -> bytes:
    """The `shipped` entry of a piece the remote checkpoint lists, from a HEAD of it."""
    key = location.key(state.name)
    facts = await store.head(key)
    if facts is None or facts.size != state.size:
        raise ArchiveCorrupt(
            f"s3://{store.bucket}/{key} is {'missing' if facts is None else f'{facts.size} bytes'} but the "
            f"checkpoint segments list it with {state.size}: restore it from the bucket's versions"
        )
    single = facts.checksum_sha256 is not None and "-" not in facts.checksum_sha256
    if single and state.sha256 is not None and facts.checksum_sha256 != sha256_b64_of_hex(state.sha256):
        raise ArchiveCorrupt(f"s3://{store.bucket}/{key} does not have the sha256 its close entry records")
    return checkpoint.shipped_entry(
        file=state.name,
        key=key,
        size=facts.size,
        checksum=facts.checksum_sha256 or "",
        etag=facts.etag,
        version=facts.version_id,
    )


def _rebuild_stage(work: SafeDir, remote: bytes, failed: bytes | None) -> None:
    """Replace the stage with one whose checkpoint is the bucket's: everything in it is shipped."""
    names = work.names()
    for name in names:
        if name.startswith(STAGE_DIR + ".old-"):
            shutil.rmtree(work.path / name, ignore_errors=True)
    if STAGE_DIR in names:
        old = f"{STAGE_DIR}.old-{secrets.token_hex(4)}"
        work.replace(STAGE_DIR, old)
        shutil.rmtree(work.path / old, ignore_errors=True)
    stage = work.subdir(STAGE_DIR)
    try:
        stage.write_whole(CHECKPOINT_NAME, [remote])
        if failed:
            stage.write_whole(FAILED_NAME, [failed])
    finally:
        stage.close()
    uploads = work.subdir(UPLOADS_DIR)
    try:
        for name in uploads.names():
            uploads.unlink(name)
    finally:
        uploads.close()


async def _abort_stale_uploads(store: ObjectStore, location: Location, work: SafeDir) -> None:
    """Abort uploads under the prefix that no journal of this work dir will continue.

    They belong to runs that were killed (on this machine or another) and
    nobody will complete them; their parts would cost storage until the
    bucket's AbortIncompleteMultipartUpload rule. One run per prefix at a time.
    """
    uploads = work.subdir(UPLOADS_DIR)
    try:
        keep = journaled_uploads(uploads)
    finally:
        uploads.close()
    for upload in await store.uploads(location.list_prefix):
        if upload.upload_id not in keep:
            log.info("aborting the unfinished upload of %s left by an earlier run", upload.key)
            await store.abort_upload(upload.key, upload.upload_id)


# -- the archive -------------------------------------------------------------------


def open_remote(settings: ArchiveSettings, remote: RemoteSettings, request: RunRequest) -> RemoteArchive:
    """Preflight, prepare the work dir from the bucket, open the staged archive, start shipping."""
    if request.refetch:
        raise UsageError(REFETCH_REMOTE)
    location = Location(remote.bucket, remote.prefix)
    loop = _LoopThread()
    store = ObjectStore(remote)
    work: SafeDir | None = None
    work_lock = -1
    try:
        loop.run(store.open())
        loop.run(store.preflight())
        work = SafeDir.open_archive(remote.work_dir)
        work_lock = take_lock(work)
        prepared = loop.run(prepare(store, location, work))
        archive = RemoteArchive.open_staged(
            replace(settings, out_dir=remote.work_dir / STAGE_DIR), request, location
        )
    except BaseException:
        with contextlib.suppress(Exception):
            loop.run(store.close())
        loop.close()
        if work_lock >= 0:
            os.close(work_lock)
        if work is not None:
            work.close()
        raise
    archive.attach(_Shipping(loop, store, remote, work, work_lock, prepared))
    return archive


class _Shipping:
    """The shipping side's state: the loop, the store, what has been shipped, what waits."""

    def __init__(
        self,
        loop: _LoopThread,
        store: ObjectStore,
        settings: RemoteSettings,
        work: SafeDir,
        work_lock: int,
        prepared: Prepared,
    ) -> None:
        self.loop = loop
        self.store = store
        self.settings = settings
        self.work = work
        self.work_lock = work_lock
        self.shipped_bytes = prepared.shipped_bytes
        self.segments = prepared.segments
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.pending = 0
        self.changed = threading.Condition()
        self.failure: BaseException | None = None
        self.task: concurrent.futures.Future[None] | None = None
        self.ticker: concurrent.futures.Future[None] | None = None


class RemoteArchive(Archive):
    """The local archive in the work dir's stage, shipped piece by piece (module docstring)."""

    __slots__ = ("_lock", "_opened_at", "_shipping", "location")

    def __init__(
        self, settings: ArchiveSettings, directory: SafeDir, lock_fd: int, location: Location
    ) -> None:
        super().__init__(settings, directory, lock_fd)
        #: Where the archive is; known before the stage is recovered, so every message can name it.
        self.location = location
        self._lock = threading.RLock()
        self._shipping: _Shipping | None = None
        #: When the open records file got its first commit in this process (monotonic); None: none open.
        self._opened_at: float | None = None

    @classmethod
    def open_staged(cls, settings: ArchiveSettings, request: RunRequest, location: Location) -> RemoteArchive:
        """`Archive.open` of the stage in `settings.out_dir`, for the archive at `location`."""
        directory, lock_fd = locked_directory(settings.out_dir)
        return cls(settings, directory, lock_fd, location)._recovered(request)

    @property
    def where(self) -> str:
        return self.location.url

    def where_file(self, name: str) -> str:
        return staged_copy(self.root / name, self.location.url)

    @property
    def repair_advice(self) -> str:
        """A staged file not shipped yet is only this work dir's: the bucket holds the archive, and
        --refetch is refused for it. Without the work dir the stage is rebuilt from the bucket."""
        return (
            f"empty the work dir {self.root.parent} (or give another --work-dir) and run again: the stage "
            f"is rebuilt from {self.location.url}, and the ids it had not shipped are fetched again"
        )

    @property
    def failed_list(self) -> str:
        """This run's failure list in the bucket (`write_summary` ships it), not the copy in the stage."""
        return f"{self.location.url}/{run_failed_name(self.run)}"

    @property
    def _ship(self) -> _Shipping:
        if self._shipping is None:
            raise RuntimeError("RemoteArchive used before attach()")
        return self._shipping

    def attach(self, shipping: _Shipping) -> None:
        """Start shipping: first what a killed run sealed and did not ship, then the rest as it comes."""
        self._shipping = shipping
        if self._current is not None:
            self._opened_at = time.monotonic()
        shipping.task = shipping.loop.submit(self._ship_loop())
        shipping.ticker = shipping.loop.submit(self._tick())
        with self._lock:
            ends = self._close_ends()
            for state in self.state.files.values():
                if not state.closed:
                    continue
                if state.shipped is None or ends[state.name] > shipping.shipped_bytes:
                    self._enqueue(state.name)  # sealed by a killed run: shipped (or its segment) now
                else:
                    self.drop_shipped(state.name)  # the bucket has it and its segment

    # -- the pipeline's side (writer thread) --------------------------------------

    def commit(self, records: Sequence[tuple[str, Record]]) -> None:
        ship = self._ship
        self._raise_if_failed()
        with ship.changed:
            while ship.pending >= self._ship.settings.max_pending_pieces and ship.failure is None:
                ship.changed.wait(1.0)
        self._raise_if_failed()
        with self._lock:
            before = {s.name for s in self.state.files.values() if s.closed}
            super().commit(records)
            if self._current is not None and self._opened_at is None:
                self._opened_at = time.monotonic()
            self._seal_if_due()
            for state in self.state.files.values():
                if state.closed and state.name not in before:
                    self._enqueue(state.name)

    def record_failures(self, lines: Sequence[bytes]) -> None:
        with self._lock:
            super().record_failures(lines)

    def end_run(
        self, *, at: str, exit_code: int, status: str, counts: dict[str, int], message: str | None = None
    ) -> None:
        """Seal and ship what is left, then log the run's end and ship that as the last segment."""
        ship = self._ship
        with self._lock:
            sealed = self.seal()
            if sealed is not None:
                self._opened_at = None
                self._enqueue(sealed)
        with ship.changed:
            while ship.pending and ship.failure is None:
                ship.changed.wait(1.0)
        with self._lock:
            super().end_run(at=at, exit_code=exit_code, status=status, counts=counts, message=message)
            end = self.checkpoint_bytes
        self._raise_if_failed()
        ship.loop.run(self._ship_segment(end))

    def write_summary(self, summary: Summary) -> None:
        """summary.json in the stage, then this run's failure list and summary as objects of their own."""
        ship = self._ship
        with self._lock:
            super().write_summary(summary)
            handle = self._dir.reader(FAILED_NAME)
            failed = b""
            if handle is not None:
                with handle:
                    failed = handle.read()
        self._raise_if_failed()
        location = self.location
        ship.loop.run(ship.store.put_new(location.key(run_failed_name(self.run)), failed))
        ship.loop.run(ship.store.put_new(location.key(run_summary_name(self.run)), summary.to_bytes()))

    def close(self) -> None:
        shipping = self._shipping
        if shipping is not None:
            for future in (shipping.task, shipping.ticker):
                if future is not None:
                    shipping.loop.loop.call_soon_threadsafe(future.cancel)
            with contextlib.suppress(Exception):
                shipping.loop.run(shipping.store.close())
            shipping.loop.close()
            if shipping.work_lock >= 0:
                os.close(shipping.work_lock)
                shipping.work_lock = -1
            shipping.work.close()
            self._shipping = None
        super().close()

    # -- sealing ----------------------------------------------------------------------

    def _seal_if_due(self) -> None:
        """Seal the open file once it is --upload-every old or --upload-bytes large (the lock held)."""
        current = self._current
        if current is None:
            return
        settings = self._ship.settings
        old = self._opened_at is not None and time.monotonic() - self._opened_at >= settings.upload_every_s
        if old or current.size >= settings.upload_bytes:
            name = self.seal()
            self._opened_at = None
            if name is not None:
                self._enqueue(name)

    def _enqueue(self, name: str) -> None:
        ship = self._ship
        with ship.changed:
            ship.pending += 1
        ship.loop.loop.call_soon_threadsafe(ship.queue.put_nowait, name)

    def _raise_if_failed(self) -> None:
        failure = self._ship.failure
        if failure is None:
            return
        if isinstance(failure, ArchiveError):
            raise failure
        raise ArchiveError(f"cannot ship to {self.location.url}: {failure}") from failure

    # -- the shipping side (the store's loop) -----------------------------------------

    async def _tick(self) -> None:
        """Seal a file that is due even while no commit comes (a long pause, a slow trickle)."""
        while True:
            await asyncio.sleep(min(1.0, self._ship.settings.upload_every_s / 4))
            await asyncio.to_thread(self._tick_once)

    def _tick_once(self) -> None:
        with self._lock:
            if self._checkpoint_fd >= 0:
                self._seal_if_due()

    async def _ship_loop(self) -> None:
        ship = self._ship
        try:
            while True:
                name = await ship.queue.get()
                await self._ship_piece(name)
                with ship.changed:
                    ship.pending -= 1
                    ship.changed.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.debug("shipping stopped", exc_info=True)
            with ship.changed:
                ship.failure = exc
                ship.changed.notify_all()

    async def _ship_piece(self, name: str) -> None:
        """The records file, its `shipped` entry, the segment up to it, then the local copy dropped."""
        ship = self._ship
        with self._lock:
            state = self.state.files[name]
            size, sha256, shipped = state.size, state.sha256, state.shipped
        if shipped is None:
            if sha256 is None:
                raise ArchiveCorrupt(f"{name} is closed without a sha256")
            key = self.location.key(name)
            uploads = ship.work.subdir(UPLOADS_DIR)
            try:
                facts = await ship_file(
                    ship.store,
                    key,
                    self._dir.path / name,
                    size=size,
                    sha256_hex=sha256,
                    journal_dir=uploads,
                    settings=ship.settings,
                )
            finally:
                uploads.close()

            def log_it() -> int:
                with self._lock:
                    return self.log_shipped(
                        name,
                        key=key,
                        checksum=facts.checksum_sha256 or "",
                        etag=facts.etag,
                        version=facts.version_id,
                    )

            await asyncio.to_thread(log_it)
        # The segment ends with the piece's close entry, not its `shipped` entry: commits to the
        # next file may already stand between the two, and must not reach the bucket before it.
        end = await asyncio.to_thread(lambda: self._close_ends()[name])
        await self._ship_segment(end)

        def drop() -> None:
            with self._lock:
                self.drop_shipped(name)

        await asyncio.to_thread(drop)

    def _close_ends(self) -> dict[str, int]:
        """Where each file's close entry ends in the local checkpoint (where its segment ends)."""
        ends: dict[str, int] = {}
        with self._lock:
            handle = self._dir.reader(CHECKPOINT_NAME)
        if handle is None:
            raise ArchiveCorrupt(f"{self.where_file(CHECKPOINT_NAME)} is gone")
        offset = 0
        with handle:
            for raw in handle:
                offset += len(raw)
                if raw.startswith(b'{"t":"close"'):
                    entry = orjson.loads(raw)
                    ends[str(entry["file"])] = offset
        return ends

    async def _ship_segment(self, end: int) -> None:
        """The local checkpoint's bytes from the last segment's end to `end`, as the next segment."""
        ship = self._ship
        start = ship.shipped_bytes
        if end <= start:
            return

        def read() -> bytes:
            with self._lock:
                handle = self._dir.reader(CHECKPOINT_NAME)
            if handle is None:
                raise ArchiveCorrupt(f"{self.where_file(CHECKPOINT_NAME)} is gone")
            with handle:
                handle.seek(start)
                data = handle.read(end - start)
            if len(data) != end - start or not data.endswith(b"\n"):
                raise ArchiveCorrupt(f"{self.where_file(CHECKPOINT_NAME)} is shorter than what was logged")
            return data

        try:
            data = await asyncio.to_thread(read)
        except OSError as exc:
            raise os_error(self.where_file(CHECKPOINT_NAME), exc, "read") from exc
        number = ship.segments + 1
        await ship.store.put_new(self.location.key(segment_name(number)), data)
        ship.segments = number
        ship.shipped_bytes = end
