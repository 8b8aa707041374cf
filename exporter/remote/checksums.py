"""The checksums an upload carries and the store verifies, and how a file is cut into parts (pure).

One algorithm end to end: SHA-256, which the archive already keeps for every
sealed file (`close` entries), so a single PutObject's `x-amz-checksum-sha256`
is that very digest, and a HEAD read-back compares it with what the
checkpoint says. A multipart upload carries a SHA-256 per part (the store
checks each, BadDigest otherwise) and, on CompleteMultipartUpload, the
composite checksum S3 defines for it: the SHA-256 of the parts' digests, in
order, with `-N` for N parts. Every body also carries Content-MD5, which
every S3-compatible store verifies, flexible checksums or not.

CRC32C or CRC64NVME full-object checksums would need a native library
(botocore computes them only with awscrt); SHA-256 composite gives the
same guarantee (every byte checked by the store, the whole object checked at
completion) with hashlib alone.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass

#: S3's limits: at most 10,000 parts, each at least 5 MiB but the last.
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 << 20
_MIB = 1 << 20


def b64(digest: bytes) -> str:
    """A digest as the `x-amz-checksum-*` and Content-MD5 headers carry it."""
    return base64.b64encode(digest).decode("ascii")


def sha256_b64_of_hex(hex_digest: str) -> str:
    """The `x-amz-checksum-sha256` value of a file whose sha256 (hex, as the checkpoint keeps it) is given."""
    return b64(bytes.fromhex(hex_digest))


def composite(part_digests: list[bytes]) -> str:
    """S3's composite checksum of a multipart object: base64(sha256(digest1 + ... + digestN)) + "-N"."""
    return f"{b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives a multipart object (without SSE-KMS): md5 of the parts' md5s, "-N"."""
    return f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-{len(part_md5s)}"'  # noqa: S324 - S3's own scheme


@dataclass(frozen=True, slots=True)
class Part:
    """Part `number` (from 1): `length` bytes of the file from `offset`."""

    number: int
    offset: int
    length: int


def part_size(size: int, wanted: int) -> int:
    """Bytes per part for a `size`-byte file: `wanted`, raised (in whole MiB) to stay under 10,000 parts."""
    needed = math.ceil(size / MAX_PARTS)
    if needed > wanted:
        wanted = math.ceil(needed / _MIB) * _MIB
    return max(1, wanted)


def parts(size: int, each: int) -> list[Part]:
    """The parts of a `size`-byte file in pieces of `each` bytes (the last one shorter)."""
    count = max(1, math.ceil(size / each))
    return [Part(n + 1, n * each, min(each, size - n * each)) for n in range(count)]
