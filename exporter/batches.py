"""The hand-off from the workers to the archive writer: results pile up while a commit runs.

An `asyncio.Queue` between workers and writer makes every result cost a future
and a wake-up, and when it fills during a slow fsync the workers stop fetching.
A `CommitQueue` instead lets workers append to a list while the writer's
previous group commit is still on its way to disk; the writer then takes the
whole list as the next commit. Batches therefore grow by themselves with the
disk's latency and shrink again when it is fast, and the workers wait only
when a batch reaches its count or byte limit, which bounds memory and the
records a crash can cost.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class CommitQueue(Generic[T]):
    """Many producers `put`, one consumer `take`s everything waiting at once."""

    __slots__ = ("_bytes", "_closed", "_items", "_max_bytes", "_max_items", "_ready", "_room")

    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be at least 1")
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._items: list[T] = []
        self._bytes = 0
        self._closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, item: T, size: int = 0) -> None:
        """Add `item` (of `size` bytes); waits while the pending batch is full.

        A batch always takes at least one item, so one record larger than
        `max_bytes` still gets through.
        """
        while self._items and (len(self._items) >= self._max_items or self._bytes >= self._max_bytes):
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise RuntimeError("put() on a closed CommitQueue")
        self._items.append(item)
        self._bytes += size
        self._ready.set()

    def close(self) -> None:
        """No more items will come; `take` returns what is left, then an empty list."""
        self._closed = True
        self._ready.set()

    async def take(self) -> list[T]:
        """Everything waiting (at least one item), or [] once closed and drained."""
        while not self._items:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        items, self._items, self._bytes = self._items, [], 0
        self._room.set()
        return items

    def take_nowait(self) -> list[T]:
        """Everything waiting right now, possibly nothing."""
        items, self._items, self._bytes = self._items, [], 0
        self._room.set()
        return items

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no more items will come."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"<CommitQueue pending={len(self._items)} bytes={self._bytes} "
            f"limits={self._max_items}/{self._max_bytes} closed={self._closed}>"
        )
