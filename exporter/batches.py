"""The hand-off from the workers to the archive writer: results pile up while a commit runs.

An `asyncio.Queue` between workers and writer makes every result cost a future
and a wake-up, and when it fills during a slow fsync the workers stop fetching.
A `CommitQueue` instead lets workers append to a list while the writer's
previous group commit is still on its way to disk; the writer then takes the
whole list as the next commit. Batches therefore grow by themselves with the
disk's latency and shrink again when it is fast, and the workers wait only
when a batch reaches its count or byte limit, which bounds memory and the
records a crash can cost.

The whole commit policy is here: `take` hands over a batch once it is large
enough, or full, or once the policy's wait after the previous commit has
passed, or when the queue closes; `commit_policy` says what "large enough" is
for an archive. Nothing polls: a `put` that makes a batch large enough or full
wakes the taker. A full batch always goes at once, whatever "enough" says: a
worker waits for room only while the writer is busy with the previous commit,
never while the writer itself waits for a batch to grow (which made compressed
runs of small records move one 64-record batch per 5 s).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .config import ArchiveSettings, CommitPolicy

T = TypeVar("T")

# A commit of plain records this large is worth its fsync at once, however few it holds.
_ENOUGH_PLAIN_BYTES = 1 << 20
_ENOUGH_PLAIN_RECORDS = 16
_PLAIN_WAIT_S = 0.025
_COMPRESSED_WAIT_S = 5.0
_MIN_MAX_ITEMS = 64
_MAX_BYTES = 32 << 20
# A compressed batch is bounded by its bytes (--compress-batch), and by a count that only
# records smaller than this reach first: 1 MiB of 300-byte records goes out by bytes. The
# count still bounds memory for tiny records, and the ids a commit's checkpoint entry lists.
_MIN_RECORD_BYTES = 256
#: The most records a compressed commit holds, however small (or large --compress-batch).
MAX_COMPRESSED_RECORDS = 4096


def commit_policy(archive: ArchiveSettings, concurrency: int) -> CommitPolicy:
    """The commit policy for an archive: compressed ones gather --compress-batch bytes first.

    A compressed batch also goes once it holds `MAX_COMPRESSED_RECORDS` (or
    --compress-batch / 256 bytes) records, and never holds more than
    --compress-batch bytes plus one record, so a kill -9 costs at most the batch
    gathering and the one being written.
    """
    max_items = max(_MIN_MAX_ITEMS, 2 * concurrency)
    if archive.compress == "none":
        return CommitPolicy(
            max_items=max_items,
            max_bytes=_MAX_BYTES,
            enough_items=_ENOUGH_PLAIN_RECORDS,
            enough_bytes=_ENOUGH_PLAIN_BYTES,
            wait_s=_PLAIN_WAIT_S,
        )
    batch_bytes = archive.compressed_commit_bytes
    by_bytes = min(MAX_COMPRESSED_RECORDS, -(-batch_bytes // _MIN_RECORD_BYTES))
    return CommitPolicy(
        max_items=max(max_items, by_bytes),
        max_bytes=batch_bytes,
        enough_items=sys.maxsize,
        enough_bytes=batch_bytes,
        wait_s=_COMPRESSED_WAIT_S,
    )


class CommitQueue(Generic[T]):
    """Many producers `put`, one consumer `take`s everything waiting, as `policy` says."""

    __slots__ = ("_bytes", "_clock", "_closed", "_items", "_last_take", "_policy", "_ready", "_room")

    def __init__(self, policy: CommitPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        if policy.max_items < 1 or policy.max_bytes < 1:
            raise ValueError("max_items and max_bytes must be at least 1")
        self._policy = policy
        self._clock = clock
        self._items: list[T] = []
        self._bytes = 0
        self._closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        # The first commit waits for company too.
        self._last_take = clock()

    async def put(self, item: T, size: int = 0) -> None:
        """Add `item` (of `size` bytes); waits while the pending batch is full.

        A batch always takes at least one item, so one record larger than
        `max_bytes` still gets through.
        """
        while self._full():
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise RuntimeError("put() on a closed CommitQueue")
        self._items.append(item)
        self._bytes += size
        self._ready.set()

    def close(self) -> None:
        """No more items will come; `take` returns what is left at once, then an empty list."""
        self._closed = True
        self._ready.set()

    async def take(self) -> list[T]:
        """The next batch (at least one item), or [] once closed and drained.

        A batch smaller than the policy's `enough_*` waits for more until
        `wait_s` after the previous take, unless it fills up (its producers are
        waiting) or the queue closes first.
        """
        while not self._items:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        deadline = self._last_take + self._policy.wait_s
        while not self._enough() and not self._closed:
            left_s = deadline - self._clock()
            if left_s <= 0:
                break
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), left_s)
            except TimeoutError:
                break
        self._last_take = self._clock()
        items, self._items, self._bytes = self._items, [], 0
        self._room.set()
        return items

    def _enough(self) -> bool:
        # A full batch is enough whatever the policy's enough_*: its producers are waiting.
        policy = self._policy
        return len(self._items) >= policy.enough_items or self._bytes >= policy.enough_bytes or self._full()

    def _full(self) -> bool:
        """Whether a `put` must wait: a batch always takes one item, however large."""
        policy = self._policy
        return bool(self._items) and (len(self._items) >= policy.max_items or self._bytes >= policy.max_bytes)

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no more items will come."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        policy = self._policy
        return (
            f"<CommitQueue pending={len(self._items)} bytes={self._bytes} "
            f"limits={policy.max_items}/{policy.max_bytes} closed={self._closed}>"
        )
