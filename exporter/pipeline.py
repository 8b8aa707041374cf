"""Wiring for one export run: manifest -> planner -> workers -> one writer -> summary.

    manifest reader thread          event loop                       writer thread
    ----------------------          ----------                       -------------
    Planner.next_batch  ->  feed -> work queue -> N workers
                                    (bounded)     (limiter, client,
                                                   retry, payload)
                                                        |
                                                  CommitQueue (bounded)
                                                        |
                                                  write: batch  ->   Archive.commit
                                                                     (append, fsync,
                                                                      checkpoint)

Both queues are bounded, so memory follows `--concurrency` and record size,
never the manifest. Only the writer thread touches the archive, and it takes
whatever results piled up during the previous commit as the next group commit
(batches.py), so fsyncs are per batch, not per record, batches grow by
themselves when the disk is slow, and workers keep fetching meanwhile.

Stopping: SIGINT/SIGTERM or a refused token set one stop flag; the feeder and
the workers are cancelled (in-flight requests are abandoned and will be made
again next run), the writer commits every result already handed to it, and the
run ends with failed.ndjson, the checkpoint's end entry and summary.json
written, exactly as after a normal finish. A second signal exits at once;
committed records are safe either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from .archive.layout import Summary, reported_id
from .archive.writer import Archive, RunRequest
from .batches import CommitQueue, commit_policy
from .config import ExportConfig
from .errors import ArchiveError, AuthRefused, ExitCode, ExporterError, Reason
from .fetcher import Failure, Fetcher, FetchStats, Later, Success, Unfinished
from .jobs import Job, JobSource
from .logs import event, rfc3339
from .manifest import estimate_lines, open_manifest
from .metrics import Snapshot, push, render, write_file
from .pacing import Halt, Pacer, PauseNotice
from .payload import Record
from .plan import Planner
from .progress import NullProgress, Progress
from .summary import RunFacts, build_summary, pacing_report, run_counts, run_status
from .transport.client import RecordingsClient
from .transport.credentials import TokenSource

log = logging.getLogger(__name__)

_PLAN_BATCH = 1024


_HALTS = {
    Halt.MAX_REQUESTS: (
        ExitCode.BUDGET,
        "--max-requests reached: no more requests sent; run the same command again to continue",
    ),
    Halt.API_UNAVAILABLE: (
        ExitCode.API_UNAVAILABLE,
        "the API was unavailable for longer than --max-outage; what was fetched is kept: "
        "run the same command again when it is back",
    ),
    Halt.TOLD_TO_WAIT: (
        ExitCode.API_UNAVAILABLE,
        "the API asked to wait {seconds:.0f} s (Retry-After), more than 15 minutes: no more requests "
        "were sent; run the same command again after that",
    ),
}


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How the run ended: the exit code, the summary written (None if it was not), a line for the user."""

    exit_code: int
    report: Summary | None
    message: str | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """The summary as summary.json holds it; empty when none was written."""
        return {} if self.report is None else self.report.to_json()


def utc_iso(epoch: float) -> str:
    """A timestamp as the archive writes them: UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def run_export(
    config: ExportConfig,
    *,
    stdin: BinaryIO | None = None,
    progress: Progress | None = None,
    handle_signals: bool = True,
) -> RunOutcome:
    """Run one export as configured; raises ExporterError only before anything was written.

    The metrics (`--metrics-file`, `--metrics-push`) are written once more at
    the end, with the exit code, however the run ended.
    """
    run = _Run(config, progress or NullProgress(), handle_signals)
    try:
        outcome = await run.run(stdin)
    except ExporterError as exc:
        await run.final_metrics(int(exc.exit_code))
        raise
    await run.final_metrics(outcome.exit_code)
    return outcome


class _Run:
    """The state of one run; lives on the event loop, hands archive work to one thread."""

    def __init__(self, config: ExportConfig, progress: Progress, handle_signals: bool) -> None:
        self.config = config
        self.progress = progress
        self.handle_signals = handle_signals
        concurrency = config.limits.concurrency
        self.jobs = JobSource(queue_size=2 * concurrency, max_parked=max(64, 4 * concurrency))
        self.results: CommitQueue[Success | Failure] = CommitQueue(commit_policy(config.archive, concurrency))
        self.stats = FetchStats()
        self.tokens = TokenSource(config.http.token, config.http.token_file)
        self.failures: Counter[str] = Counter()
        self.exported = 0
        self.started_epoch = time.time()
        self.archive: Archive | None = None
        #: The pause announced and not yet over: its reason.
        self.paused: str | None = None
        self._metrics_failing = False
        self.stop_event = asyncio.Event()
        self.stop_reason: ExitCode | None = None
        self.stop_message: str | None = None
        self.feeder: asyncio.Task[None] | None = None
        self.pacer: Pacer | None = None
        self.writer_pool = ThreadPoolExecutor(1, thread_name_prefix="archive-writer")
        self.reader_pool = ThreadPoolExecutor(1, thread_name_prefix="manifest-reader")

    def stop(self, reason: ExitCode, message: str | None = None) -> None:
        """Ask the run to wind down; the first reason given is the one reported."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message
        self.stop_event.set()

    async def run(self, stdin: BinaryIO | None) -> RunOutcome:
        config = self.config
        loop = asyncio.get_running_loop()
        started_epoch, started = self.started_epoch, time.monotonic()
        try:
            with open_manifest(config.manifest, stdin) as entries:
                # Read the first entry before the archive is touched, so a
                # manifest that cannot be read at all fails cleanly with exit 2.
                first = await loop.run_in_executor(self.reader_pool, next, entries, None)
                if first is not None:
                    entries.push_back(first)  # (not a chain: the planner reads plain text in batches)
                archive = await loop.run_in_executor(
                    self.writer_pool,
                    Archive.open,
                    config.archive,
                    RunRequest(
                        started_at=utc_iso(started_epoch),
                        refetch=config.refetch,
                        manifest=config.manifest.display,
                        shard=str(config.shard) if config.shard else None,
                    ),
                )
                self.archive = archive
                self._log_start(archive)
                try:
                    if archive.superseded_to is not None:
                        log.warning("--refetch: the previous archive was moved to %s", archive.superseded_to)
                    planner = Planner(
                        entries,
                        archived=archive.archived,
                        known_missing=archive.known_missing,
                        retry_failed=config.retry_failed,
                        shard=config.shard,
                    )
                    await self._export(planner, archive)
                    exit_code = self._exit_code()
                    try:
                        summary = await loop.run_in_executor(
                            self.writer_pool,
                            self._finish,
                            archive,
                            planner,
                            exit_code,
                            started_epoch,
                            time.monotonic() - started,
                        )
                    except (OSError, ArchiveError) as exc:
                        # The records committed so far are safe; only the reports are missing.
                        exit_code = int(ExitCode.ARCHIVE)
                        summary = None
                        self.stop(
                            ExitCode.ARCHIVE, f"cannot write the run's reports in {archive.root}: {exc}"
                        )
                        self.stop_message = self.stop_message or str(exc)
                finally:
                    await loop.run_in_executor(self.writer_pool, archive.close)
        finally:
            self.progress.close()
            self.writer_pool.shutdown(wait=False)
            self.reader_pool.shutdown(wait=False, cancel_futures=True)
        return RunOutcome(exit_code, summary, self.stop_message)

    def _exit_code(self) -> int:
        if self.stop_reason is not None:
            return int(self.stop_reason)
        return int(ExitCode.INCOMPLETE if sum(self.failures.values()) else ExitCode.OK)

    async def _export(self, planner: Planner, archive: Archive) -> None:
        """Run feeder, workers and writer until the manifest is done or the run is stopped."""
        config = self.config
        self.pacer = Pacer(
            config.limits, config.retry, max_requests=config.budgets.max_requests, notice=self._notice
        )
        with self._signals():
            total = asyncio.create_task(asyncio.to_thread(estimate_lines, config.manifest))
            total.add_done_callback(self._set_total)
            ticker = asyncio.create_task(self._tick())
            metrics = asyncio.create_task(self._metrics_loop()) if config.metrics.file else None
            async with RecordingsClient(config.http, tokens=self.tokens) as client:
                fetcher = Fetcher(
                    client, self.pacer, config.retry, stats=self.stats, renew_token=self.tokens.renew
                )
                writer = asyncio.create_task(self._write(archive))
                self.producers = asyncio.create_task(self._produce(planner, fetcher))
                stopped = asyncio.create_task(self.stop_event.wait())
                waits = {writer, self.producers, stopped}
                if config.budgets.max_duration_s is not None:
                    waits.add(asyncio.create_task(self._deadline(config.budgets.max_duration_s)))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in waits - {writer, self.producers}:
                    task.cancel()
                if not self.producers.done():
                    self.producers.cancel()
                await asyncio.wait({self.producers})
                self._note_crash(self.producers)
                self.results.close()
                try:
                    await writer
                except ArchiveError as exc:
                    self.stop(ExitCode.ARCHIVE, str(exc))
            ticker.cancel()
            total.cancel()
            if metrics is not None:
                metrics.cancel()

    async def _deadline(self, seconds: float) -> None:
        """--max-duration: at the deadline no request starts any more; those in flight are abandoned."""
        await asyncio.sleep(seconds)
        self.stop(
            ExitCode.BUDGET,
            f"--max-duration ({seconds:g} s) reached; run the same command again to continue",
        )

    async def _tick(self) -> None:
        """Tell the progress display the time passes, so it keeps talking during a long pause."""
        while True:
            await asyncio.sleep(1.0)
            if self.pacer is not None:
                self.pacer.tick()
                rate = self.pacer.rate_now()
                self.progress.limit(None if math.isinf(rate) else rate)
            self.progress.tick()

    def _notice(self, notice: PauseNotice) -> None:
        """A pause, an outage or its end, from the pacer: once on stderr, and on the bar.

        In JSON logs a pause is a `pause` event with its reason and when it
        ends, and its end a `resume` event.
        """
        self.progress.status(notice.status())
        reason = notice.reason.value
        if notice.ended:
            self._log_resume(reason, notice.message)
            return
        self.paused = reason
        until = rfc3339(notice.until_epoch) if notice.until_epoch is not None else None
        log.warning("%s", notice.message, extra=event("pause", reason=reason, until=until))

    def _log_resume(self, reason: str, message: str = "") -> None:
        self.paused = None
        if message:
            log.warning("%s", message, extra=event("resume", reason=reason))
        else:
            log.info("resuming after a pause (%s)", reason, extra=event("resume", text=False, reason=reason))

    def _log_start(self, archive: Archive) -> None:
        config = self.config
        log.info(
            "run %d started",
            archive.run,
            extra=event(
                "start",
                text=False,
                run=archive.run,
                manifest=config.manifest.display,
                out=str(archive.root),
                shard=str(config.shard) if config.shard else None,
                rate_per_s=config.limits.rate_per_s,
                concurrency=config.limits.concurrency,
            ),
        )

    # --- metrics ------------------------------------------------------------------------------

    def snapshot(self, exit_code: int | None = None) -> Snapshot:
        """The run's counters now, for the metrics; with `exit_code`, the last one."""
        pacer = self.pacer
        if pacer is not None:
            rate, paused = pacer.rate_now(), pacer.paused_s()
        else:
            rate, paused = self.config.limits.rate_per_s or math.inf, {}
        return Snapshot(
            labels=self.config.metrics.labels,
            exported=self.exported,
            answers=dict(self.stats.answers),
            retries=self.stats.retries,
            failed=dict(self.failures),
            bytes_written=self.archive.written_bytes if self.archive is not None else 0,
            rate_limit_per_s=rate,
            paused_s=paused,
            in_flight=self.stats.in_flight,
            start_epoch=self.started_epoch,
            end_epoch=time.time() if exit_code is not None else None,
            exit_code=exit_code,
        )

    async def _metrics_loop(self) -> None:
        """--metrics-file, rewritten every interval while the run lasts."""
        while True:
            await self._write_metrics(render(self.snapshot()))
            await asyncio.sleep(self.config.metrics.interval_s)

    async def _write_metrics(self, text: str) -> None:
        """Replace --metrics-file; a failure is a warning (once until it works again), never the run's."""
        path = self.config.metrics.file
        if path is None:
            return
        try:
            await asyncio.to_thread(write_file, path, text)
        except OSError as exc:
            if not self._metrics_failing:
                log.warning("cannot write --metrics-file %s: %s", path, exc.strerror or exc)
            self._metrics_failing = True
        else:
            self._metrics_failing = False

    async def final_metrics(self, exit_code: int) -> None:
        """The metrics at the end of the run: the file once more, and the push."""
        settings = self.config.metrics
        if not settings.enabled:
            return
        text = render(self.snapshot(exit_code))
        await self._write_metrics(text)
        if settings.push_url is not None:
            problem = await asyncio.to_thread(
                push, settings.push_url, settings.labels, text, timeout_s=settings.push_timeout_s
            )
            if problem is not None:
                log.warning("%s; the export itself is not affected", problem)

    def _set_total(self, task: asyncio.Task[int | None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.progress.set_total(task.result())

    def _note_crash(self, producers: asyncio.Task[None]) -> None:
        if producers.cancelled():
            return
        exc = producers.exception()
        if exc is None:
            return
        errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        for error in errors:
            if isinstance(error, ExporterError):
                self.stop(error.exit_code, str(error))
            else:
                text = "".join(traceback.format_exception(error))
                self.stop(ExitCode.INTERNAL, f"internal error, please report it:\n{text}")

    async def _produce(self, planner: Planner, fetcher: Fetcher) -> None:
        async with asyncio.TaskGroup() as group:
            self.feeder = group.create_task(self._feed(planner))
            for _ in range(self.config.limits.concurrency):
                group.create_task(self._work(fetcher))

    async def _feed(self, planner: Planner) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await loop.run_in_executor(self.reader_pool, planner.next_batch, _PLAN_BATCH)
            if batch is None:
                break
            for failure in batch.failures:
                await self.results.put(failure)
            if batch.skipped:
                self.progress.advance(skipped=batch.skipped)
            for record_id in batch.fetch:
                await self.jobs.put(record_id)
        self.jobs.fed_all()

    async def _work(self, fetcher: Fetcher) -> None:
        while (job := await self.jobs.next()) is not None:
            try:
                outcome = await fetcher.fetch(job.id, job.tries)
            except AuthRefused as exc:
                await self.results.put(Failure(job.id, Reason.AUTH, str(exc), attempts=1))
                self.stop(ExitCode.AUTH, str(exc))
                return
            if isinstance(outcome, Later):
                self.jobs.park(Job(outcome.id, outcome.tries), outcome.not_before)
            elif isinstance(outcome, Unfinished):
                # No request may start any more: the ids still queued stay for the next run,
                # while the other workers finish what they have in flight.
                reason, message = _HALTS[outcome.halt]
                if outcome.halt is Halt.TOLD_TO_WAIT and self.pacer is not None:
                    message = message.format(seconds=self.pacer.told_to_wait_s)
                self._end_soon(reason, message)
            else:
                await self.results.put(outcome, len(outcome.line) if isinstance(outcome, Success) else 0)
            self.jobs.done()

    def _end_soon(self, reason: ExitCode, message: str) -> None:
        """End after the requests in flight: the first reason given is the one reported."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message
        if self.feeder is not None:
            self.feeder.cancel()
        # Workers waiting for an id get none: the queued and parked ones stay for the next run.
        self.jobs.close()

    async def _write(self, archive: Archive) -> None:
        loop = asyncio.get_running_loop()
        while items := await self.results.take():
            records: list[tuple[str, Record]] = []
            failures: list[bytes] = []
            at = ""
            for item in items:
                if isinstance(item, Success):
                    records.append((item.id, item.line))
                else:
                    at = at or utc_iso(time.time())
                    self.failures[item.reason] += 1
                    failures.append(item.to_json_line(run=archive.run, at=at))
                    if self.config.log_format == "json":
                        _log_failure(item)
            try:
                await loop.run_in_executor(self.writer_pool, _commit, archive, records, failures)
            except ArchiveError as exc:
                self.stop(ExitCode.ARCHIVE, str(exc))
                raise
            self.exported += len(records)
            self.progress.advance(exported=len(records), failed=len(failures), retries=self.stats.retries)
            log.debug(
                "committed %d records, %d failures",
                len(records),
                len(failures),
                extra=event("commit", text=False, records=len(records), failures=len(failures)),
            )

    def _finish(
        self,
        archive: Archive,
        planner: Planner,
        exit_code: int,
        started_epoch: float,
        elapsed_s: float,
    ) -> Summary:
        """End-of-run bookkeeping, in the writer thread: failed.ndjson, checkpoint end, summary."""
        config = self.config
        failed_lines = archive.write_failed(planner.seen)
        counts = run_counts(planner.counts, self.exported, self.failures, self.stats)
        finished_at = utc_iso(time.time())
        files = archive.files_report()
        archive.end_run(
            at=finished_at,
            exit_code=exit_code,
            status=run_status(exit_code),
            counts=counts,
            message=self.stop_message,
        )
        facts = RunFacts(
            run=archive.run,
            started_at=utc_iso(started_epoch),
            finished_at=finished_at,
            elapsed_s=elapsed_s,
            exit_code=exit_code,
            manifest=config.manifest.display,
            base_url=config.http.base_url,
            proxy=config.http.proxy.url if config.http.proxy is not None else None,
            shard=str(config.shard) if config.shard else None,
            superseded_to=str(archive.superseded_to) if archive.superseded_to else None,
        )
        pacing = pacing_report(self.pacer) if self.pacer is not None else None
        summary = build_summary(facts, counts, dict(self.failures), files, failed_lines, pacing)
        archive.write_summary(summary)
        return summary

    @contextlib.contextmanager
    def _signals(self) -> Any:
        """SIGINT/SIGTERM stop the run cleanly; a second one exits at once. SIGHUP re-reads --token-file."""
        if not self.handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        mapping = {signal.SIGINT: ExitCode.SIGINT, signal.SIGTERM: ExitCode.SIGTERM}

        def on_signal(signum: signal.Signals) -> None:
            if self.stop_event.is_set() and self.stop_reason in (
                ExitCode.SIGINT,
                ExitCode.SIGTERM,
            ):
                sys.stderr.write(
                    "exporter: stopping now; committed records are safe, the rest is fetched next run\n"
                )
                sys.stderr.flush()
                os._exit(int(mapping[signum]))
            log.warning("%s: finishing what was fetched, then stopping (again to stop at once)", signum.name)
            self.stop(
                mapping[signum],
                f"interrupted by {signum.name}; run the same command again to continue",
            )

        def on_hangup() -> None:
            # A rotated --token-file: take the new token before the API refuses the old one.
            outcome = self.tokens.reload()
            log.info("SIGHUP: read --token-file %s again: %s", self.tokens.path, outcome.value)

        for signum in mapping:
            loop.add_signal_handler(signum, on_signal, signum)
        if self.tokens.path is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            yield
        finally:
            for signum in mapping:
                loop.remove_signal_handler(signum)
            if self.tokens.path is not None:
                loop.remove_signal_handler(signal.SIGHUP)


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
