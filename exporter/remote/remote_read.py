"""A remote archive read back: its listing and checkpoint, and copies of it for the local tools.

The read-only commands reuse what they do for a directory: `metadata_copy`
writes the remote checkpoint (its segments concatenated), the last summary
and the last failure list into a private directory as a local archive
without records files, which `status`, `--dry-run` and `verify --manifest`
read as they read any; `full_copy` downloads every object into the remote
form (`aws s3 cp --recursive`), which `verify --deep` checks byte by byte.
Nothing is written to the bucket.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.archive import checkpoint
from exporter.archive.layout import CHECKPOINT_NAME, FAILED_NAME, SUMMARY_NAME
from exporter.archive.reader import checkpoint_lines
from exporter.archive.safe_fs import SafeDir
from exporter.bounded import Overlong
from exporter.errors import ArchiveCorrupt, UsageError

from .location import Location
from .state import Listing, sort_listing
from .store import ObjectStore

#: A checkpoint segment, a summary or a failure list larger than this is not one the exporter wrote.
MAX_SMALL_OBJECT = 1 << 30
#: A records file larger than this is not downloaded by --deep.
MAX_RECORDS_OBJECT = 64 << 30
_PARALLEL_READS = 8


@dataclass(frozen=True, slots=True)
class RemoteArchive:
    """What the bucket holds of one archive: the listing, the concatenated segments, their state."""

    location: Location
    listing: Listing
    checkpoint_bytes: bytes
    state: checkpoint.CheckpointState


async def read_segments(store: ObjectStore, segments: Sequence[tuple[int, str, int]]) -> bytes:
    """The checkpoint segments' bytes, in order; ArchiveCorrupt when one ends mid-entry."""
    semaphore = asyncio.Semaphore(_PARALLEL_READS)

    async def read(key: str) -> bytes:
        async with semaphore:
            return await store.get(key, MAX_SMALL_OBJECT)

    parts = await asyncio.gather(*(read(key) for _, key, _ in segments))
    for (number, key, _), data in zip(segments, parts, strict=True):
        if data and not data.endswith(b"\n"):
            raise ArchiveCorrupt(f"s3://{store.bucket}/{key}: checkpoint segment {number} ends mid-entry")
    return b"".join(parts)


def lines_of(data: bytes) -> Iterator[bytes | Overlong]:
    """Checkpoint bytes as the replay takes them: lines, none over the cap (as read from a file)."""
    return checkpoint_lines(io.BytesIO(data))


def replay(data: bytes, location: Location | None) -> checkpoint.CheckpointState:
    """The state of checkpoint bytes; a remote checkpoint may not end with a torn entry."""
    name = f"{location.url}/checkpoint.d" if location is not None else CHECKPOINT_NAME
    state = checkpoint.replay(lines_of(data), name=name)
    if location is not None and state.torn_tail:
        raise ArchiveCorrupt(f"{location.url}: the last checkpoint segment ends with a damaged entry")
    return state


async def read_remote(store: ObjectStore, location: Location) -> RemoteArchive:
    """List the archive's prefix and read its checkpoint (ArchiveCorrupt when it is damaged)."""
    listed = await store.list_keys(location.list_prefix)
    listing = sort_listing(location, [(item.key, item.size) for item in listed])
    data = await read_segments(store, listing.segments)
    return RemoteArchive(location, listing, data, replay(data, location))


def require_archive(remote: RemoteArchive) -> None:
    """UsageError when the prefix holds no archive (for verify and status, as for a directory)."""
    if not remote.listing.segments and not remote.listing.records:
        raise UsageError(
            f"{remote.location.url} is not an archive (there is no checkpoint.d/ under it); give the "
            "--out of an export"
        )


async def metadata_copy(store: ObjectStore, archive: RemoteArchive, into: Path) -> None:
    """A local archive without records files in `into`: the checkpoint, last summary and failure list."""
    listing = archive.listing
    summary = (
        await store.get(listing.summaries[max(listing.summaries)], MAX_SMALL_OBJECT)
        if listing.summaries
        else None
    )
    failed = await store.get(listing.last_failed, MAX_SMALL_OBJECT) if listing.last_failed else None

    def write() -> None:
        with SafeDir.open_archive(into) as directory:
            directory.write_whole(CHECKPOINT_NAME, [archive.checkpoint_bytes])
            if summary is not None:
                directory.write_whole(SUMMARY_NAME, [summary])
            if failed is not None:
                directory.write_whole(FAILED_NAME, [failed])

    await asyncio.to_thread(write)


async def full_copy(store: ObjectStore, location: Location, into: Path) -> None:
    """Every object of the archive into `into`, named as under the prefix (the remote form)."""
    listed = await store.list_keys(location.list_prefix)
    semaphore = asyncio.Semaphore(_PARALLEL_READS)

    async def fetch(key: str) -> None:
        name = location.name_of(key)
        if name is None or any(part in ("", ".", "..") for part in name.split("/")):
            return  # not a name the archive could have: never written outside `into`
        async with semaphore:
            target = into / name
            await asyncio.to_thread(target.parent.mkdir, mode=0o700, parents=True, exist_ok=True)
            fd = await asyncio.to_thread(
                os.open, target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                await store.get_to(key, fd, MAX_RECORDS_OBJECT)
            finally:
                os.close(fd)

    await asyncio.gather(*(fetch(item.key) for item in listed))
