"""The writer loop: the workers' outcomes into the archive, one group commit at a time.

Only this loop touches the archive while the run fetches, and only through
the writer thread: it takes whatever results piled up during the previous
commit as the next group commit (`batches.py`), so fsyncs are per batch, not
per record, batches grow by themselves when the disk is slow, and the workers
keep fetching meanwhile. Each `Failure` becomes failed.ndjson's entry here
(`failed_entry`), in the format `archive/layout.py` defines.

It also keeps the counts of what was committed (records, failures by reason),
which the metrics, the progress display and the summary read: a record is
counted once it is on disk, never when it was fetched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import Executor

from exporter.archive.layout import FailedEntry, reported_id
from exporter.archive.writer import Archive
from exporter.batches import CommitQueue
from exporter.errors import ArchiveError, ExitCode
from exporter.logs import event, rfc3339
from exporter.outcomes import Failure, FetchStats, Success
from exporter.payload import Record
from exporter.progress import Progress
from exporter.stops import Stop

log = logging.getLogger(__name__)


class Committer:
    """Commits the queued outcomes to the archive until the queue is closed and empty."""

    __slots__ = ("_json_logs", "_progress", "_results", "_stats", "_writer_pool", "exported", "failures")

    def __init__(
        self,
        results: CommitQueue[Success | Failure],
        *,
        writer_pool: Executor,
        progress: Progress,
        stats: FetchStats,
        json_logs: bool,
    ) -> None:
        self._results = results
        self._writer_pool = writer_pool
        self._progress = progress
        self._stats = stats
        self._json_logs = json_logs
        #: Records committed by this run.
        self.exported = 0
        #: Failures committed to this run's journal, by reason.
        self.failures: Counter[str] = Counter()

    async def run(self, archive: Archive) -> Stop | None:
        """Commit until the queue is closed; a broken archive ends the loop with the reason to stop."""
        loop = asyncio.get_running_loop()
        while items := await self._results.take():
            records: list[tuple[str, Record]] = []
            failures: list[bytes] = []
            at = ""
            for item in items:
                if isinstance(item, Success):
                    records.append((item.id, item.line))
                else:
                    at = at or rfc3339(time.time())
                    self.failures[item.reason] += 1
                    failures.append(failed_entry(item, run=archive.run, at=at).to_json_line())
                    if self._json_logs:
                        _log_failure(item)
            try:
                await loop.run_in_executor(self._writer_pool, _commit, archive, records, failures)
            except ArchiveError as exc:
                return Stop(ExitCode.ARCHIVE, str(exc))
            self.exported += len(records)
            self._progress.advance(exported=len(records), failed=len(failures), retries=self._stats.retries)
            log.debug(
                "committed %d records, %d failures",
                len(records),
                len(failures),
                extra=event("commit", text=False, records=len(records), failures=len(failures)),
            )
        return None

    def __repr__(self) -> str:
        failed = sum(self.failures.values())
        return f"<Committer exported={self.exported} failed={failed} queue={self._results!r}>"


def failed_entry(failure: Failure, *, run: int, at: str) -> FailedEntry:
    """The failed.ndjson entry of `failure`, failed in run `run` at `at` (RFC 3339)."""
    return FailedEntry.about(
        failure.id,
        reason=failure.reason.value,
        error=failure.error,
        status=failure.status,
        attempts=failure.attempts,
        run=run,
        at=at,
        line=failure.line,
    )


def _log_failure(failure: Failure) -> None:
    """A `failed` event in JSON logs (the text format leaves failures to failed.ndjson)."""
    log.warning(
        "%s failed: %s",
        failure.id[:80],
        failure.reason.value,
        extra=event(
            "failed",
            text=False,
            **reported_id(failure.id),
            reason=failure.reason.value,
            status=failure.status,
            attempts=failure.attempts,
            error=failure.error,
        ),
    )


def _commit(archive: Archive, records: list[tuple[str, Record]], failures: list[bytes]) -> None:
    """One group commit, in the writer thread."""
    archive.record_failures(failures)
    archive.commit(records)
