"""Framing a commit: a large gzip commit is deflated in pieces by several threads, and is still one member."""

from __future__ import annotations

import gzip
import threading
from typing import Any

import fakeapi
import orjson
import pytest
from gzip_members import one_member, sync_points

from exporter.archive import framing
from exporter.archive.framing import GZIP_MIN_PIECE_BYTES, DeflatePool, codec_for


def _lines(count: int, record_bytes: int) -> list[bytes]:
    """Records as the fake API serves them with --record-bytes, as the archive stores them."""
    return [
        orjson.dumps(orjson.loads(fakeapi.sized_body(f"rec-{i}", seed=0, body_bytes=record_bytes))["data"])
        for i in range(count)
    ]


class _Meeting:
    """`_deflate_piece`, but the first `threads` calls wait for each other: they meet only if run at once."""

    def __init__(self, threads: int) -> None:
        self.barrier = threading.Barrier(threads, timeout=10)
        self.calls = 0
        self._deflate = framing._deflate_piece
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> bytes:
        with self._lock:
            self.calls += 1
            meet = self.calls <= self.barrier.parties
        if meet:
            self.barrier.wait()
        return self._deflate(*args)


@pytest.mark.parametrize(("threads", "level"), [(2, None), (3, 1), (2, 9)])
def test_a_large_gzip_commit_is_one_member_deflated_in_pieces_at_once(
    monkeypatch: pytest.MonkeyPatch, threads: int, level: int | None
) -> None:
    """A commit of 3.3 MB is deflated in one piece a thread, all at the same time, into one member.

    A commit under twice the minimum piece is deflated as before, by
    `gzip.compress` in the calling thread. Before, one `gzip.compress` call
    deflated every commit, however large, in the writer thread.
    """
    meeting = _Meeting(threads)
    monkeypatch.setattr(framing, "_deflate_piece", meeting)
    lines = _lines(165, 20_000)
    data = b"\n".join(lines) + b"\n"
    assert len(data) >= threads * GZIP_MIN_PIECE_BYTES
    deflaters = DeflatePool(threads)
    try:
        member = b"".join(codec_for("gzip", level).frame(lines, deflaters))
        assert meeting.calls == threads
        assert not meeting.barrier.broken, "the pieces were not deflated at the same time"
        assert one_member(member) == data
        assert gzip.decompress(member) == data
        # Each piece ends at a byte boundary (a sync flush): it was deflated on its own.
        step = -(-len(data) // threads)
        boundaries = {k * step for k in range(1, threads)}
        assert boundaries <= sync_points(member), sorted(boundaries - sync_points(member))
        # Primed with the 32 KiB before them, the pieces compress as well as one whole.
        whole = gzip.compress(data, 6 if level is None else level, mtime=0)
        assert len(member) <= 1.001 * len(whole), (len(member), len(whole))
        # Same header as gzip.compress: only the deflate blocks differ.
        assert member[:10] == whole[:10]

        # A commit under two minimum pieces is byte for byte gzip.compress's member.
        small = lines[:40]
        assert len(b"\n".join(small)) < 2 * GZIP_MIN_PIECE_BYTES
        framed = b"".join(codec_for("gzip", level).frame(small, deflaters))
        assert framed == gzip.compress(b"\n".join(small) + b"\n", 6 if level is None else level, mtime=0)
        assert meeting.calls == threads, "a small commit went to the pool"
    finally:
        deflaters.close()
