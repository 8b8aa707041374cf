"""Compact sets of ids, by 128-bit digest.

The exporter must know, for every manifest id, whether this run has seen it
before (and verify, whether an archive holds it twice), for manifests of
millions of ids, without a Python `set` of strings (about 100 bytes an id). A
`DigestSet` stores each id's 128-bit BLAKE2b digest in one of 262,144
`bytearray` buckets chosen by the digest's first 18 bits: 14 bytes an id plus
about 57 a used bucket (15 MB once all are), no sorting, no transient copies
while it grows, and a lookup that is one `bytes.find` over a bucket of a few
hundred bytes at ten million ids. Whether the archive holds an id is the
archive index's to say (`archive/archived.py`).

Why 128 bits and not 64: a false "already archived" silently drops a record,
and with 64 bits the chance of that reaches one in a million for archives of a
few billion ids. At 128 bits it is nil for any archive that fits on a disk.

`shard_of` uses the same digest, so shard membership is stable across
machines, Python versions and runs (Python's own `hash` is salted per process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

DIGEST_BYTES = 16
#: A bucket is the digest's first 18 bits: at ten million keys it holds some 38 (535 bytes), which
#: `bytes.find` searches in 0.3-0.5 us (with 2**16 buckets: 2.1 KB and 2-4 us).
_BUCKET_BITS = 18
_SHIFT = 24 - _BUCKET_BITS
#: A key is the digest from its third byte (the bucket's last two bits included).
_KEY_BYTES = DIGEST_BYTES - 2
_EMPTY = b""


def id_digest(record_id: str) -> bytes:
    """The 16-byte digest that stands for `record_id` in every set and shard decision."""
    return hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def shard_of(digest: bytes, count: int) -> int:
    """Which of `count` shards the id with this digest belongs to (0-based)."""
    return int.from_bytes(digest[:8], "big") % count


class ArchivedLookup(Protocol):
    """What planning asks of the ids an archive holds: how many, whether it holds one, first visits.

    `DigestSet` is one; so is the archive index's view (`archive.archived.ArchivedIds`).
    """

    def __len__(self) -> int: ...
    def __contains__(self, digest: bytes, /) -> bool: ...
    def visit(self, digest: bytes, text: str | None = None, /) -> int: ...


class DigestSet:
    """A set of 16-byte digests at 14 bytes each; add and lookup are O(bucket)."""

    __slots__ = ("_buckets", "_len", "_visited")

    def __init__(self) -> None:
        # One shared empty bytes object until a bucket gets its first key, so an
        # empty set costs a list of 262,144 pointers (2 MB) and nothing more.
        self._buckets: list[bytes | bytearray] = [_EMPTY] * (1 << _BUCKET_BITS)
        self._len = 0
        # visit()'s marks, one byte per key, made on the first visit to a bucket.
        self._visited: list[bytearray | None] | None = None

    def __len__(self) -> int:
        return self._len

    def __contains__(self, digest: bytes) -> bool:
        if not self._len:
            return False
        bucket = self._buckets[int.from_bytes(digest[:3], "big") >> _SHIFT]
        key = digest[2:]
        at = bucket.find(key)
        # Inlined fast path: almost every search misses, or hits on a key boundary.
        return at >= 0 and (at % _KEY_BYTES == 0 or _find(bucket, key) >= 0)

    def add(self, digest: bytes) -> bool:
        """Add `digest`; True when it was not there before."""
        index = int.from_bytes(digest[:3], "big") >> _SHIFT
        bucket = self._buckets[index]
        key = digest[2:]
        at = bucket.find(key)
        if at >= 0 and (at % _KEY_BYTES == 0 or _find(bucket, key) >= 0):
            return False
        if isinstance(bucket, bytearray):
            bucket += key
        else:
            self._buckets[index] = bytearray(key)
        self._len += 1
        return True

    def add_all(self, digests: Iterable[bytes]) -> list[bool]:
        """`add` each digest in turn; whether each was new (one call for a chunk of a manifest).

        The loop of `add`, every name bound locally: it runs once per id of a
        fresh manifest, ten million times for ten million ids.
        """
        buckets, shift = self._buckets, _SHIFT
        added: list[bool] = []
        note = added.append
        from_bytes = int.from_bytes
        fresh = 0
        for digest in digests:
            index = from_bytes(digest[:3], "big") >> shift
            bucket = buckets[index]
            key = digest[2:]
            at = bucket.find(key)
            if at >= 0 and (at % _KEY_BYTES == 0 or _find(bucket, key) >= 0):
                note(False)
                continue
            if bucket:  # a bytearray (empty buckets share one empty bytes)
                bucket += key
            else:
                buckets[index] = bytearray(key)
            note(True)
            fresh += 1
        self._len += fresh
        return added

    def visit(self, digest: bytes, text: str | None = None, /) -> int:
        """0 if `digest` is not in the set; else 1 the first time it is visited, 2 after (`text` unused).

        A manifest that lists an archived id twice must count its second line as
        a duplicate. Adding every archived id to a second set would cost a resume
        of 900,000 archived ids about a second and 13 MB before its first
        request; a mark per key costs one byte and no second search.
        """
        if not self._len:
            return 0
        index = int.from_bytes(digest[:3], "big") >> _SHIFT
        bucket = self._buckets[index]
        key = digest[2:]
        at = bucket.find(key)
        if at < 0:
            return 0
        if at % _KEY_BYTES:
            at = _find(bucket, key)
            if at < 0:
                return 0
        visited = self._visited
        if visited is None:
            visited = self._visited = [None] * len(self._buckets)
        marks = visited[index]
        if marks is None or len(marks) * _KEY_BYTES < len(bucket):
            # Keys are only ever appended, so marks made so far keep their slots.
            grown = bytearray(len(bucket) // _KEY_BYTES)
            if marks is not None:
                grown[: len(marks)] = marks
            marks = visited[index] = grown
        slot = at // _KEY_BYTES
        if marks[slot]:
            return 2
        marks[slot] = 1
        return 1

    def __repr__(self) -> str:
        used = sum(1 for bucket in self._buckets if bucket)
        return f"<DigestSet len={self._len} buckets_used={used}>"


def _find(bucket: bytes | bytearray, key: bytes) -> int:
    """Offset of `key` in `bucket` at a key boundary, or -1.

    `find` may match across two neighbouring keys; such a match is not on a
    multiple of the key width and the search goes on past it.
    """
    at = bucket.find(key)
    while at >= 0 and at % _KEY_BYTES:
        at = bucket.find(key, at + 1)
    return at
