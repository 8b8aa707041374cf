"""Shipping one sealed records file: a single create-only put, or a multipart upload that survives a crash.

A file over `multipart_threshold_bytes` goes in parts (`checksums.part_size`:
at least `part_bytes`, fewer than 10,000 of them), four at a time. Before the
first part is sent, the upload's id goes into a journal in the work dir
(`uploads/NAME.json`, replaced atomically), and each part's SHA-256 as the
store acknowledges it. A run that was killed mid-upload reads the journal,
asks the store which parts it holds (ListParts, with their checksums), sends
only the parts that are missing or differ, and completes the same upload
(create-only, with the composite checksum): a 10 GiB file is not sent again
from the start. An upload that cannot be continued (gone, or for other bytes)
is aborted and begun again; the journal goes when the object is complete.

Every byte sent is read from the sealed file and checked against the sha256
its close entry recorded before the object is completed, so a local file
damaged after sealing is never shipped as if it were the archive's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from exporter.archive.safe_fs import SafeDir, open_regular_fd
from exporter.config import RemoteSettings
from exporter.errors import ArchiveCorrupt

from .checksums import Part, b64, part_size, parts
from .store import ObjectFacts, ObjectStore

log = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"
_PARALLEL_PARTS = 4


async def ship_file(
    store: ObjectStore,
    key: str,
    path: Path,
    *,
    size: int,
    sha256_hex: str,
    journal_dir: SafeDir,
    settings: RemoteSettings,
) -> ObjectFacts:
    """Create `key` from the sealed file at `path` (`size` bytes, sha256 `sha256_hex`); its read-back."""
    if size <= settings.multipart_threshold_bytes:
        body = await asyncio.to_thread(_read_all, path, size)
        if hashlib.sha256(body).hexdigest() != sha256_hex:
            raise _damaged(path, sha256_hex)
        return await store.put_new(key, body)
    return await _MultipartShipment(store, key, path, size, sha256_hex, journal_dir, settings).run()


def _read_all(path: Path, size: int) -> bytes:
    fd = open_regular_fd(path)
    try:
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if len(data) != size:
        raise ArchiveCorrupt(f"{path} is shorter than the {size} bytes it was sealed with")
    return data


def _damaged(path: Path, sha256_hex: str) -> ArchiveCorrupt:
    return ArchiveCorrupt(
        f"{path} no longer has the sha256 it was sealed with ({sha256_hex}): it was changed in the work "
        "dir, so it is not shipped; remove the work dir (what it held is fetched again)"
    )


class _MultipartShipment:
    """One multipart upload of one sealed file, resumed from its journal when there is one."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        path: Path,
        size: int,
        sha256_hex: str,
        journal_dir: SafeDir,
        settings: RemoteSettings,
    ) -> None:
        self.store = store
        self.key = key
        self.path = path
        self.size = size
        self.sha256_hex = sha256_hex
        self.journal_dir = journal_dir
        self.journal_name = f"{path.name}.json"
        self.each = part_size(size, settings.part_bytes)
        self.parts = parts(size, self.each)
        self.upload_id = ""
        #: part number -> (ETag, sha256 digest, md5 digest), as the store holds them.
        self.done: dict[int, tuple[str, bytes, bytes]] = {}

    async def run(self) -> ObjectFacts:
        await self._resume_or_begin()
        fd = open_regular_fd(self.path)
        try:
            local = await asyncio.to_thread(self._local_digests, fd)
            semaphore = asyncio.Semaphore(_PARALLEL_PARTS)

            async def send(part: Part) -> None:
                async with semaphore:
                    data = await asyncio.to_thread(os.pread, fd, part.length, part.offset)
                    etag, digest = await self.store.upload_part(self.key, self.upload_id, part.number, data)
                    self.done[part.number] = (etag, digest, hashlib.md5(data).digest())  # noqa: S324
                    await asyncio.to_thread(self._write_journal)

            missing = [
                part
                for part in self.parts
                if part.number not in self.done or self.done[part.number][1] != local[part.number][0]
            ]
            if len(missing) < len(self.parts):
                log.info(
                    "%s: resuming the upload of %s, %d of %d parts already there",
                    self.key,
                    self.path.name,
                    len(self.parts) - len(missing),
                    len(self.parts),
                )
            for number in [p.number for p in missing]:
                self.done.pop(number, None)
            await asyncio.gather(*(send(part) for part in missing))
        finally:
            os.close(fd)
        listed = [
            (number, self.done[number][0], self.done[number][1], local[number][1])
            for number in sorted(self.done)
        ]
        facts = await self.store.complete_upload(self.key, self.upload_id, listed, self.size)
        await asyncio.to_thread(self.journal_dir.unlink, self.journal_name)
        return facts

    def _local_digests(self, fd: int) -> dict[int, tuple[bytes, bytes]]:
        """Each part's sha256 and md5, and the whole file's sha256 checked against its close entry."""
        whole = hashlib.sha256()
        digests = {}
        for part in self.parts:
            data = os.pread(fd, part.length, part.offset)
            if len(data) != part.length:
                raise ArchiveCorrupt(f"{self.path} is shorter than the {self.size} bytes it was sealed with")
            whole.update(data)
            digests[part.number] = (hashlib.sha256(data).digest(), hashlib.md5(data).digest())  # noqa: S324
        if whole.hexdigest() != self.sha256_hex:
            raise _damaged(self.path, self.sha256_hex)
        return digests

    async def _resume_or_begin(self) -> None:
        journal = await asyncio.to_thread(self._read_journal)
        if journal is not None:
            upload_id = journal["upload_id"]
            listed = await self.store.list_parts(self.key, upload_id)
            if listed is not None:
                self.upload_id = upload_id
                for part in listed:
                    # Kept when the store's checksum is the sealed file's for that part (`run`
                    # compares), journaled or not: a part acknowledged just before a kill counts too.
                    if part.checksum_sha256 is not None:
                        self.done[part.number] = (part.etag, _unb64(part.checksum_sha256), b"")
                return
            log.info("%s: the upload in the journal is gone; beginning again", self.key)
        self.upload_id = await self.store.start_upload(self.key)
        await asyncio.to_thread(self._write_journal)

    def _read_journal(self) -> dict[str, Any] | None:
        handle = self.journal_dir.reader(self.journal_name)
        if handle is None:
            return None
        with handle:
            raw = handle.read(1 << 20)
        try:
            journal = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if (
            not isinstance(journal, dict)
            or journal.get("key") != self.key
            or journal.get("size") != self.size
            or journal.get("sha256") != self.sha256_hex
            or journal.get("part_bytes") != self.each
            or not isinstance(journal.get("upload_id"), str)
            or not isinstance(journal.get("parts", {}), dict)
        ):
            return None
        return journal

    def _write_journal(self) -> None:
        document = {
            "key": self.key,
            "upload_id": self.upload_id,
            "size": self.size,
            "sha256": self.sha256_hex,
            "part_bytes": self.each,
            "parts": {str(number): b64(digest) for number, (_, digest, _) in sorted(self.done.items())},
        }
        self.journal_dir.write_whole(self.journal_name, [orjson.dumps(document)])


def _unb64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def journaled_uploads(journal_dir: SafeDir) -> set[str]:
    """Upload ids the work dir's journals would continue (kept when stale uploads are aborted)."""
    found = set()
    for name in journal_dir.names():
        if not name.endswith(".json"):
            continue
        handle = journal_dir.reader(name)
        if handle is None:
            continue
        with handle:
            try:
                journal = orjson.loads(handle.read(1 << 20))
            except orjson.JSONDecodeError:
                continue
        if isinstance(journal, dict) and isinstance(journal.get("upload_id"), str):
            found.add(journal["upload_id"])
    return found
