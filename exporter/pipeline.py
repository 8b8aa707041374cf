"""Wiring for one export run: manifest -> planner -> workers -> one writer -> summary.

    manifest reader thread          event loop                       writer thread
    ----------------------          ----------                       -------------
    Planner.next_batch  ->  feed -> work queue -> N workers
                                    (bounded)     (Fetcher: pacer,
                                                   client, payload)
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
themselves when the disk is slow, and workers keep fetching meanwhile. The
writer turns each `Failure` into failed.ndjson's entry (`failed_entry`).

The run reads the pool's pacer through values: a halt comes back as an
`Unfinished` outcome carrying its line, the ticker shows the `PauseNotice`s it
takes with `Pacer.poll` (as soon as `Pacer.news` says there are some), and the
summary and the metrics read `Pacer.report()`.

Stopping: every reason to end early (SIGINT/SIGTERM, a refused token, a
budget, an outage, a broken archive) is one `stops.Stop`, folded into the
run's one record by one rule (`Stop.merge`: an archive error always wins and is
always shown). A stop that drains cancels the feeder and the workers
(in-flight requests are abandoned and made again next run); one that does not
lets the requests in flight finish. Either way the writer commits every result
already handed to it, and the run ends with failed.ndjson, the checkpoint's end
entry and summary.json written, exactly as after a normal finish.

Signals reach the run for its whole length, the reports and the metrics push
included (`signals.py`); once the fetch loop is over a stop signal changes
nothing (the reports say how the run ended), and a second one exits at once;
committed records are safe either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from .archive.layout import FailedEntry, Summary, reported_id
from .archive.writer import Archive, RunRequest
from .batches import CommitQueue, commit_policy
from .config import ExportConfig
from .errors import ArchiveError, AuthRefused, ExitCode, ExporterError, Reason, UsageError
from .fetcher import Fetcher
from .jobs import Job, JobSource
from .logs import event, rfc3339
from .manifest import estimate_lines, open_manifest
from .metrics import Snapshot, push, render, write_file
from .outcomes import Failure, FetchStats, Later, Success, Unfinished
from .pacing import Halt, Pacer, PauseNotice
from .payload import Record
from .plan import Planner
from .progress import NullProgress, Progress
from .signals import STOP_SIGNALS, ProcessSignals
from .stops import Stop
from .summary import RunFacts, build_summary, pacing_report, run_counts, run_status
from .transport.client import RecordingsClient
from .transport.credentials import TokenSource

log = logging.getLogger(__name__)

_PLAN_BATCH = 1024


#: The exit code of each halt; its message, naming the cause, comes with the `Unfinished` outcome.
_HALTS = {
    Halt.MAX_REQUESTS: ExitCode.BUDGET,
    Halt.API_UNAVAILABLE: ExitCode.API_UNAVAILABLE,
    Halt.TOLD_TO_WAIT: ExitCode.API_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How the run ended: the exit code, the summary written (None if it was not), a line for the user.

    `notes` are the messages of reasons to stop that did not decide the exit
    code but must be shown too (`Stop.also`).
    """

    exit_code: int
    report: Summary | None
    message: str | None = None
    notes: tuple[str, ...] = ()
    #: Records this run committed (what `report` counts too, when there is one).
    exported: int = 0

    @property
    def summary(self) -> dict[str, Any]:
        """The summary as summary.json holds it; empty when none was written."""
        return {} if self.report is None else self.report.to_json()


def open_archive(config: ExportConfig, request: RunRequest) -> Archive:
    """The run's archive: a directory, or (`--out s3://...`) one staged in --work-dir and shipped."""
    if config.remote is None:
        return Archive.open(config.archive, request)
    try:
        from .remote.shipper import open_remote  # aiobotocore is imported only for s3:// URLs
    except ImportError as exc:
        raise UsageError(
            f"--out s3://... needs the optional S3 client ({exc.name} is missing): pip install 'exporter[s3]'"
        ) from exc
    return open_remote(config.archive, config.remote, request)


def utc_iso(epoch: float) -> str:
    """A timestamp as the archive writes them: UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def run_export(
    config: ExportConfig,
    *,
    stdin: BinaryIO | None = None,
    progress: Progress | None = None,
    signals: ProcessSignals | None = None,
) -> RunOutcome:
    """Run one export as configured; raises ExporterError only before anything was written.

    With `signals` (the command's), SIGINT, SIGTERM and SIGHUP reach the run
    from its first step to its last, the final metrics included. The metrics
    (`--metrics-file`, `--metrics-push`) are written once more at the end,
    with the exit code, however the run ended.
    """
    run = _Run(config, progress or NullProgress())
    with signals.listening(run.on_signal) if signals is not None else contextlib.nullcontext():
        try:
            outcome = await run.run(stdin)
        except ExporterError as exc:
            run.settled = True
            await run.final_metrics(int(exc.exit_code))
            raise
        await run.final_metrics(outcome.exit_code)
    return outcome


class _Run:
    """The state of one run; lives on the event loop, hands archive work to one thread."""

    def __init__(self, config: ExportConfig, progress: Progress) -> None:
        self.config = config
        self.progress = progress
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
        #: Why the run ends early (None: it has not been asked to).
        self.stopping: Stop | None = None
        #: The fetch loop is over: the exit code is decided and the reports are being written.
        self.settled = False
        self.feeder: asyncio.Task[None] | None = None
        self.pacer: Pacer | None = None
        self.writer_pool = ThreadPoolExecutor(1, thread_name_prefix="archive-writer")
        self.reader_pool = ThreadPoolExecutor(1, thread_name_prefix="manifest-reader")

    def stop(self, stop: Stop) -> None:
        """Ask the run to wind down; `Stop.merge` decides which reason is reported.

        A stop that drains ends the fetch loop now; one that does not ends it
        after the requests in flight: no id is handed out any more, and the
        queued and parked ones stay for the next run.
        """
        self.stopping = stop if self.stopping is None else self.stopping.merge(stop)
        if stop.drain:
            self.stop_event.set()
            return
        if self.feeder is not None:
            self.feeder.cancel()
        self.jobs.close()

    @property
    def stop_message(self) -> str | None:
        return None if self.stopping is None else self.stopping.message

    def on_signal(self, sig: signal.Signals) -> None:
        """A signal, on the event loop (`signals.py`): SIGHUP re-reads the token, the others stop."""
        if sig is signal.SIGHUP:
            if self.tokens.path is None:
                log.info("SIGHUP ignored: there is no --token-file to read again")
                return
            # A rotated --token-file: take the new token before the API refuses the old one.
            outcome = self.tokens.reload()
            log.info("SIGHUP: read --token-file %s again: %s", self.tokens.path, outcome.value)
            return
        if self.settled:
            log.warning("%s: the run is over; writing its reports (again to stop at once)", sig.name)
            return
        log.warning("%s: finishing what was fetched, then stopping (again to stop at once)", sig.name)
        self.stop(
            Stop(STOP_SIGNALS[sig], f"interrupted by {sig.name}; run the same command again to continue")
        )

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
                    open_archive,
                    config,
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
                    try:
                        await self._export(planner, archive)
                    finally:
                        self.settled = True
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
                        summary = None
                        self.stop(
                            Stop(ExitCode.ARCHIVE, f"cannot write the run's reports in {archive.root}: {exc}")
                        )
                        exit_code = self._exit_code()
                finally:
                    await loop.run_in_executor(self.writer_pool, archive.close)
        finally:
            self.progress.close()
            self.writer_pool.shutdown(wait=False)
            self.reader_pool.shutdown(wait=False, cancel_futures=True)
        notes = self.stopping.also if self.stopping is not None else ()
        return RunOutcome(exit_code, summary, self.stop_message, notes, self.exported)

    def _exit_code(self) -> int:
        if self.stopping is not None:
            return int(self.stopping.reason)
        return int(ExitCode.INCOMPLETE if sum(self.failures.values()) else ExitCode.OK)

    async def _export(self, planner: Planner, archive: Archive) -> None:
        """Run feeder, workers and writer until the manifest is done or the run is stopped."""
        config = self.config
        self.pacer = Pacer(config.limits, config.retry, max_requests=config.budgets.max_requests)
        total = asyncio.create_task(asyncio.to_thread(estimate_lines, config.manifest))
        total.add_done_callback(self._set_total)
        ticker = asyncio.create_task(self._tick(self.pacer))
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
                self.stop(Stop(ExitCode.ARCHIVE, str(exc)))
        ticker.cancel()
        for notice in self.pacer.poll():  # made by the last answers, after the ticker's last look
            self._notice(notice)
        total.cancel()
        if metrics is not None:
            metrics.cancel()

    async def _deadline(self, seconds: float) -> None:
        """--max-duration: at the deadline no request starts any more; those in flight are abandoned."""
        await asyncio.sleep(seconds)
        self.stop(
            Stop(
                ExitCode.BUDGET,
                f"--max-duration ({seconds:g} s) reached; run the same command again to continue",
            )
        )

    async def _tick(self, pacer: Pacer) -> None:
        """Show the pacer's notices as soon as it has any; once a second, tell the progress display
        the pace and that time passes, so it keeps talking during a long pause."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + 1.0
        while True:
            await pacer.news(max(0.0, next_tick - loop.time()))
            for notice in pacer.poll():
                self._notice(notice)
            if loop.time() >= next_tick:
                next_tick = loop.time() + 1.0
                rate = pacer.rate_now()
                self.progress.limit(None if math.isinf(rate) else rate)
                self.progress.tick()

    def _notice(self, notice: PauseNotice) -> None:
        """A pause, an outage or its end, polled from the pacer: once on stderr, and on the bar.

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
        if self.pacer is not None:
            pacing = self.pacer.report()
            rate, paused = pacing.rate_per_s, pacing.paused_s
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
            problem = await push(settings.push_url, settings.labels, text, timeout_s=settings.push_timeout_s)
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
                self.stop(Stop(error.exit_code, str(error)))
            else:
                # The traceback goes to the log (escaped line by line in text); the run's
                # message, which the checkpoint keeps too, is one line.
                log.error("internal error, please report it with this traceback", exc_info=error)
                self.stop(Stop(ExitCode.INTERNAL, f"internal error, please report it: {error!r}"))

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
                self.stop(Stop(ExitCode.AUTH, str(exc)))
                return
            if isinstance(outcome, Later):
                self.jobs.park(Job(outcome.id, outcome.tries), outcome.not_before)
            elif isinstance(outcome, Unfinished):
                # No request may start any more: the ids still queued stay for the next run,
                # while the other workers finish what they have in flight.
                self.stop(Stop(_HALTS[outcome.halt], outcome.message, drain=False))
            else:
                await self.results.put(outcome, len(outcome.line) if isinstance(outcome, Success) else 0)
            self.jobs.done()

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
                    failures.append(failed_entry(item, run=archive.run, at=at).to_json_line())
                    if self.config.log_format == "json":
                        _log_failure(item)
            try:
                await loop.run_in_executor(self.writer_pool, _commit, archive, records, failures)
            except ArchiveError as exc:
                self.stop(Stop(ExitCode.ARCHIVE, str(exc)))
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
        pacing = pacing_report(self.pacer.report()) if self.pacer is not None else None
        summary = build_summary(facts, counts, dict(self.failures), files, failed_lines, pacing)
        archive.write_summary(summary)
        return summary


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
