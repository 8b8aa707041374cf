"""Where a worker's next id comes from: ids due for another try first, then the manifest's.

An id that must wait before its next try (a Retry-After, a backoff) is parked
here with the time it may go again, and its worker takes another id meanwhile;
a pool whose workers all sat out their waits would send in bursts and leave the
rate it was allowed unused. Parked ids are bounded (`max_parked`): past that a
worker waits for the earliest of them rather than take a new one, so memory
follows --concurrency, not the manifest.

The run's end is when the manifest is read, nothing is parked and no worker
holds an id: only then does `next` return None.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import NamedTuple

from .outcomes import Tries


class Job(NamedTuple):
    """An id to try, with what it has used so far (None: never tried)."""

    id: str
    tries: Tries | None = None


class JobSource:
    """The manifest's ids (fed through a bounded queue) and the parked ones; lives on the event loop."""

    def __init__(
        self, *, queue_size: int, max_parked: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._parked: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._max_parked = max_parked
        self._clock = clock
        self._fed_all = False
        self._closed = False
        self._busy = 0
        # Resolved (and replaced) whenever something a waiting worker cares about changes. A
        # worker takes it after looking and before waiting, with no await in between, so no
        # change slips through; none is made while nobody waits.
        self._change: asyncio.Future[None] | None = None

    async def put(self, record_id: str) -> None:
        """A manifest id (waits while the queue is full)."""
        await self._queue.put(record_id)

    def fed_all(self) -> None:
        """The manifest is read to its end."""
        self._fed_all = True
        self._notify()

    def park(self, job: Job, not_before: float) -> None:
        """`job` goes again no sooner than `not_before`."""
        heapq.heappush(self._parked, (not_before, next(self._order), job))
        self._notify()

    def done(self) -> None:
        """The worker that took a job has finished with it (or parked it)."""
        self._busy -= 1
        self._notify()

    def close(self) -> None:
        """No job is handed out any more (the run ends early); parked ids stay unfetched."""
        self._closed = True
        self._notify()

    @property
    def parked(self) -> int:
        return len(self._parked)

    async def next(self) -> Job | None:
        """The next job for a worker, or None when there is none left for anyone."""
        while not self._closed:
            now = self._clock()
            parked = self._parked
            if parked and (parked[0][0] <= now or len(parked) >= self._max_parked):
                not_before, _, job = parked[0]
                if not_before > now:
                    await self._until(self._watch(), not_before - now)
                    continue
                heapq.heappop(parked)
                self._busy += 1
                return job
            wait_s = parked[0][0] - now if parked else None
            if not self._queue.empty() or not self._fed_all:
                record_id = await self._take(wait_s)
                if record_id is not None:
                    self._busy += 1
                    return Job(record_id)
                continue
            if not parked and self._busy == 0:
                self._notify()  # the other idle workers end too
                return None
            await self._until(self._watch(), wait_s)
        return None

    def _watch(self) -> asyncio.Future[None]:
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        return self._change

    def _notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)

    async def _take(self, wait_s: float | None) -> str | None:
        """A manifest id, or None when `wait_s` passed or something changed first."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        change = self._watch()
        getter: asyncio.Future[str] = asyncio.ensure_future(self._queue.get())
        waits: set[asyncio.Future[object]] = {getter, change}  # type: ignore[arg-type]
        try:
            await asyncio.wait(waits, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def _until(self, change: asyncio.Future[None], wait_s: float | None) -> None:
        await asyncio.wait({change}, timeout=wait_s)

    def __repr__(self) -> str:
        return (
            f"<JobSource queued={self._queue.qsize()} parked={len(self._parked)} busy={self._busy} "
            f"fed_all={self._fed_all} closed={self._closed}>"
        )
