"""The feeder and the worker pool: the planner's ids, through the fetcher, into the writer's queue.

The feeder reads the manifest's plan in batches on the reader thread and puts
the ids to fetch in the bounded `JobSource` (and what the plan already knows
failed straight in the writer's queue). Each of the `--concurrency` workers
takes the next id (parked ones first, `jobs.py`), fetches it and hands on what
came of it: a record or a failure to the writer, a wait back to the job source.

Workers never end the run themselves. A refused token, or a halt from the
pacer (a budget, an unavailable API), is a `Stop` handed to the run's `stop`;
`start_no_more` is how the run then lets the requests in flight finish while
no new one starts. The feeder and the workers share one TaskGroup, so a crash
in one cancels the rest and reaches the run as the group's exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from exporter.batches import CommitQueue
from exporter.errors import AuthRefused, ExitCode, Reason
from exporter.fetcher import Fetcher
from exporter.jobs import Job, JobSource
from exporter.outcomes import Failure, Later, Success, Unfinished
from exporter.pacing import Halt
from exporter.plan import Planner
from exporter.progress import Progress
from exporter.stops import Stop

#: Manifest entries planned per trip to the reader thread.
_PLAN_BATCH = 1024

#: The exit code of each halt; its message, naming the cause, comes with the `Unfinished` outcome.
_HALTS = {
    Halt.MAX_REQUESTS: ExitCode.BUDGET,
    Halt.API_UNAVAILABLE: ExitCode.API_UNAVAILABLE,
    Halt.TOLD_TO_WAIT: ExitCode.API_UNAVAILABLE,
}


class Workers:
    """The feeder and `concurrency` workers, between the planner and the writer's queue."""

    __slots__ = ("_concurrency", "_feeder", "_jobs", "_progress", "_reader_pool", "_results", "_stop")

    def __init__(
        self,
        *,
        concurrency: int,
        results: CommitQueue[Success | Failure],
        progress: Progress,
        reader_pool: Executor,
        stop: Callable[[Stop], None],
    ) -> None:
        self._concurrency = concurrency
        self._jobs = JobSource(queue_size=2 * concurrency, max_parked=max(64, 4 * concurrency))
        self._results = results
        self._progress = progress
        self._reader_pool = reader_pool
        self._stop = stop
        self._feeder: asyncio.Task[None] | None = None

    async def run(self, planner: Planner, fetcher: Fetcher) -> None:
        """Fetch every id the planner hands out; returns when all are done or no more may start."""
        async with asyncio.TaskGroup() as group:
            self._feeder = group.create_task(self._feed(planner))
            for _ in range(self._concurrency):
                group.create_task(self._work(fetcher))

    def start_no_more(self) -> None:
        """No id is handed out any more; the requests in flight finish, the queued and parked
        ids stay for the next run."""
        if self._feeder is not None:
            self._feeder.cancel()
        self._jobs.close()

    async def _feed(self, planner: Planner) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await loop.run_in_executor(self._reader_pool, planner.next_batch, _PLAN_BATCH)
            if batch is None:
                break
            for failure in batch.failures:
                await self._results.put(failure)
            if batch.skipped:
                self._progress.advance(skipped=batch.skipped)
            for record_id in batch.fetch:
                await self._jobs.put(record_id)
        self._jobs.fed_all()

    async def _work(self, fetcher: Fetcher) -> None:
        while (job := await self._jobs.next()) is not None:
            try:
                outcome = await fetcher.fetch(job.id, job.tries)
            except AuthRefused as exc:
                await self._results.put(Failure(job.id, Reason.AUTH, str(exc), attempts=1))
                self._stop(Stop(ExitCode.AUTH, str(exc)))
                return
            if isinstance(outcome, Later):
                self._jobs.park(Job(outcome.id, outcome.tries), outcome.not_before)
            elif isinstance(outcome, Unfinished):
                # No request may start any more: the ids still queued stay for the next run,
                # while the other workers finish what they have in flight.
                self._stop(Stop(_HALTS[outcome.halt], outcome.message, drain=False))
            else:
                await self._results.put(outcome, len(outcome.line) if isinstance(outcome, Success) else 0)
            self._jobs.done()

    def __repr__(self) -> str:
        return f"<Workers concurrency={self._concurrency} jobs={self._jobs!r} results={self._results!r}>"
