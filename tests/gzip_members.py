"""Looking inside a gzip member the archive wrote: that it is exactly one, and where its sync flushes are."""

from __future__ import annotations

import zlib

_SYNC_MARK = b"\x00\x00\xff\xff"


def one_member(member: bytes) -> bytes:
    """The data of `member`, asserting it is exactly one gzip member, nothing before or after."""
    unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = unzip.decompress(member) + unzip.flush()
    assert unzip.eof, "the member is cut short"
    assert unzip.unused_data == b"", "more than one member"
    return data


def sync_points(member: bytes) -> set[int]:
    """How many data bytes the member holds up to each sync flush mark in it."""
    points = set()
    at = member.find(_SYNC_MARK)
    while at >= 0:
        unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        points.add(len(unzip.decompress(member[: at + len(_SYNC_MARK)])))
        at = member.find(_SYNC_MARK, at + 1)
    return points
