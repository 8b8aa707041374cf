"""Taking in a piece that a run shipped and was killed before its checkpoint segment (the *orphan*).

The records file is in the bucket, its segment is not, so no checkpoint
lists it. Fetching its ids again would put them in the archive twice (once
in the orphan, which nobody may delete, and once in a new piece), so the next
run reads the orphan back instead and writes the entries it lacks: commits
(split where the file's own frames end, so no entry grows past
`layout.CHECKPOINT_LINE_BYTES`), its close entry with the sha256 of the bytes
read, and a `shipped` entry from a HEAD of it.

Nothing is trusted: every line must be a record with an id the archive does
not hold yet, once; a gzip member or zstd frame must be whole; for a single
put, the bytes read must have the SHA-256 the store keeps. Otherwise the run
stops (exit 4) and nothing is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import orjson
import zstandard

from exporter.archive import checkpoint
from exporter.archive.layout import CHECKPOINT_LINE_BYTES, compression_of, temp_name
from exporter.archive.reader import line_id
from exporter.archive.safe_fs import SafeDir, os_error
from exporter.config import Compression
from exporter.digests import DigestSet, id_digest
from exporter.errors import ArchiveCorrupt

from .checksums import b64
from .location import Location
from .remote_read import lines_of
from .store import ObjectFacts, ObjectStore

log = logging.getLogger(__name__)

#: An orphan larger than this is not read (pieces are --upload-bytes, 64 MiB by default).
MAX_ADOPTED_BYTES = 8 << 30
#: Room left in a commit entry for everything but its ids.
_ENTRY_ROOM = 1024
_CHUNK = 1 << 20


async def adopt(store: ObjectStore, location: Location, work: SafeDir, name: str, remote: bytes) -> bytes:
    """The checkpoint entries for the orphan `name`, read back from the bucket into a temporary file."""
    key = location.key(name)
    facts = await store.head(key)
    if facts is None:
        raise ArchiveCorrupt(f"s3://{store.bucket}/{key} was listed but is gone")
    if facts.size > MAX_ADOPTED_BYTES:
        raise ArchiveCorrupt(
            f"s3://{store.bucket}/{key} is not listed in the checkpoint and too large to read"
        )
    log.warning("%s: shipped by a run killed before its checkpoint segment; reading it to take it in", key)
    temp = temp_name("adopted")
    fd = await asyncio.to_thread(work.open, temp, os.O_RDWR, create=True, exclusive=True)
    try:
        size = await store.get_to(key, fd, MAX_ADOPTED_BYTES)
        return await asyncio.to_thread(_entries, fd, name, size, remote, facts)
    except OSError as exc:
        raise os_error(work.path / temp, exc, "read back") from exc
    finally:
        os.close(fd)
        await asyncio.to_thread(work.unlink, temp)


def _entries(fd: int, name: str, size: int, remote: bytes, facts: ObjectFacts) -> bytes:
    archived = DigestSet()

    def remember(ids: list[str]) -> None:
        for record_id in ids:
            archived.add(id_digest(record_id))

    checkpoint.replay(lines_of(remote), remember)
    entries: list[bytes] = []
    sha = hashlib.sha256()
    ids: list[str] = []
    room = 0
    end = lines = crc = 0
    with os.fdopen(os.dup(fd), "rb") as handle:
        handle.seek(0)
        try:
            for raw, text in _units(handle, compression_of(name)):
                unit_ids = _ids(text, facts.key, lines + len(ids), archived)
                need = sum(len(orjson.dumps(i)) + 1 for i in unit_ids)
                if ids and room + need > CHECKPOINT_LINE_BYTES - _ENTRY_ROOM:
                    lines += len(ids)
                    entries.append(
                        checkpoint.commit_entry(file=name, end=end, lines=lines, crc32=crc, ids=ids)
                    )
                    ids, room, crc = [], 0, 0
                sha.update(raw)
                crc = zlib.crc32(raw, crc)
                end += len(raw)
                ids += unit_ids
                room += need
        except (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError) as exc:
            raise ArchiveCorrupt(f"{facts.key} cannot be read as records: {exc}") from exc
    if end != size:
        raise ArchiveCorrupt(f"{facts.key}: {end} bytes read of {size}")
    if ids:
        lines += len(ids)
        entries.append(checkpoint.commit_entry(file=name, end=end, lines=lines, crc32=crc, ids=ids))
    single = facts.checksum_sha256 is not None and "-" not in facts.checksum_sha256
    if single and b64(sha.digest()) != facts.checksum_sha256:
        raise ArchiveCorrupt(f"{facts.key}: the bytes read do not have the checksum the store keeps")
    entries.append(checkpoint.close_entry(file=name, size=size, lines=lines, sha256=sha.hexdigest()))
    entries.append(
        checkpoint.shipped_entry(
            file=name,
            key=facts.key,
            size=size,
            checksum=facts.checksum_sha256 or "",
            etag=facts.etag,
            version=facts.version_id,
        )
    )
    return b"".join(entries)


def _ids(text: bytes, key: str, before: int, archived: DigestSet) -> list[str]:
    """The ids of one unit's lines (`before` lines precede them in the file), each checked."""
    ids = []
    parts = text.split(b"\n")
    if parts[-1]:
        raise ArchiveCorrupt(
            f"{key} line {before + len(parts)} has no newline: it is not a piece this exporter shipped"
        )
    for offset, raw in enumerate(parts[:-1], 1):
        record_id, why = line_id(raw)
        if record_id is None:
            raise ArchiveCorrupt(
                f"{key} line {before + offset} {why}: it is not a piece this exporter shipped; nothing was "
                "changed, export into a prefix of its own"
            )
        if not archived.add(id_digest(record_id)):
            raise ArchiveCorrupt(
                f"{key} line {before + offset}: id {record_id!r} is already in the archive; nothing was "
                "changed, export into a prefix of its own"
            )
        ids.append(record_id)
    return ids


def _units(handle: BinaryIO, compression: Compression) -> Iterator[tuple[bytes, bytes]]:
    """(the bytes as stored, the lines they hold) of each line of a plain file, or each gzip member or
    zstd frame of a compressed one: the places where the writer's commits may have ended."""
    if compression == "none":
        for line in handle:
            yield line, line
        return
    buffered = b""
    while True:
        decoder = (
            zlib.decompressobj(wbits=31)
            if compression == "gzip"
            else zstandard.ZstdDecompressor().decompressobj()
        )
        raw = bytearray()
        out: list[bytes] = []
        done = False
        while not done:
            chunk = buffered or handle.read(_CHUNK)
            buffered = b""
            if not chunk:
                break
            out.append(decoder.decompress(chunk))
            if decoder.eof:
                rest = decoder.unused_data
                raw += chunk[: len(chunk) - len(rest)]
                buffered = rest
                done = True
            else:
                raw += chunk
        if not raw:
            return
        if not done:
            raise ValueError("the last gzip member or zstd frame is cut short")
        yield bytes(raw), b"".join(out)
