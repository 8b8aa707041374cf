"""`exporter get s3://...`: archived records by id from a bucket, one ranged GET per commit asked.

A remote archive carries no index (a run keeps it in its work dir, never
ships it), so the checkpoint is what says where each id is: its segments are
read as `status` and `verify` read them (`remote_read.read_remote`), written
with the last failure list into a private directory as a local archive
without records files (`metadata_copy`), and opened there as `get` opens any
archive (`archive.index.open_view`, which replays a checkpoint the index does
not cover into memory). `offline/get.py` then looks ids up, groups them by
commit and decodes each commit as for a directory; only the bytes of a commit
come from here: bytes `start..end` of its records file, fetched with a ranged
GetObject (`ObjectStore.get_range`), several at a time.

Cost: the checkpoint download and replay grow with the archive (each id and
about 3 bytes a record); then one ranged GET per commit asked, of that
commit's bytes alone. Nothing is written to the bucket and no lock is taken.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.archive.index import IndexView, open_view
from exporter.archive.index_format import CommitPlace
from exporter.archive.reader import open_directory
from exporter.archive.safe_fs import SafeDir
from exporter.offline.get import span_problem

from .location import Location, parse
from .remote_read import metadata_copy, read_remote, require_archive
from .state import Listing
from .store import ObjectStore, StoreError
from .verify import reader_settings

_PARALLEL_READS = 8


class RemoteArchives:
    """The s3:// archives one `get` reads: one event loop and one private directory for all of them.

    `get` is synchronous; the store's calls run on this runner's loop, which
    lives as long as the archives (a client is bound to the loop it was made on).
    """

    __slots__ = ("_opened", "_runner", "_temp")

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._temp = tempfile.TemporaryDirectory(prefix="exporter-get-")
        self._opened = 0

    def open(self, url: str) -> RemoteGetArchive:
        """The archive at `url`, its checkpoint read (UsageError when the prefix holds none)."""
        location = parse(url)
        into = Path(self._temp.name) / f"archive-{self._opened}"
        self._opened += 1
        store = ObjectStore(reader_settings(location))

        async def read() -> Listing:
            await store.open()
            remote = await read_remote(store, location)
            require_archive(remote)
            await metadata_copy(store, remote, into)
            return remote.listing

        try:
            listing = self._runner.run(read())
            directory = open_directory(into)
            try:
                view = open_view(directory)
            except BaseException:
                directory.close()
                raise
        except BaseException:
            self._runner.run(store.close())
            raise
        return RemoteGetArchive(location, store, listing, directory, view, self._runner)

    def close(self) -> None:
        """After the archives opened here are closed: the loop and the private copies go."""
        try:
            self._runner.close()
        finally:
            self._temp.cleanup()


@dataclass(slots=True)
class RemoteGetArchive:
    """One s3:// archive given to `get`: its index view (from the checkpoint), its commits by ranged GET.

    The surface of a local one in `offline/get.py`: `root` (what messages
    name), `directory` (the copy holding failed.ndjson), `view`, `where`,
    `read` and `close`.
    """

    location: Location
    store: ObjectStore
    listing: Listing
    directory: SafeDir
    view: IndexView
    runner: asyncio.Runner

    @property
    def root(self) -> str:
        return self.location.url

    def where(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read(self, places: Sequence[CommitPlace]) -> list[bytes | str]:
        """The bytes of each commit, or why they cannot be read: ranged GETs, several at a time."""
        semaphore = asyncio.Semaphore(_PARALLEL_READS)

        async def one(place: CommitPlace) -> bytes | str:
            where, size = self.where(place.file), self.listing.records.get(place.file)
            if size is None:
                return f"{where} is missing from the bucket"
            problem = span_problem(where, place, size)
            if problem is not None:
                return problem
            async with semaphore:
                try:
                    return await self.store.get_range(self.location.key(place.file), place.start, place.end)
                except StoreError as exc:
                    return str(exc)

        async def every() -> list[bytes | str]:
            return list(await asyncio.gather(*(one(place) for place in places)))

        return self.runner.run(every())

    def close(self) -> None:
        try:
            self.view.close()
            self.directory.close()
        finally:
            self.runner.run(self.store.close())
