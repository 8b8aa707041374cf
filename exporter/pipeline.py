"""Wiring for one export run: manifest -> planner -> workers -> one writer -> summary.

    manifest reader thread          event loop                       writer thread
    ----------------------          ----------                       -------------
    Planner.next_batch  ->  feed -> work queue -> N workers
                                    (bounded)     (Fetcher: pacer,
                                                   client, payload)
                                                        |
                                                  CommitQueue (bounded)
                                                        |
                                                  Committer  ->      Archive.commit
                                                                     (append, fsync,
                                                                      checkpoint)

Both queues are bounded, so memory follows `--concurrency` and record size,
never the manifest. Only the writer thread touches the archive. The parts
live in `run/`, one job each: the feeder and the workers (`workers.py`), the
writer loop (`committer.py`), what the user sees of the pacer (`ticker.py`),
the metrics (`reporting.py`), the exit code and the run's end on disk
(`finish.py`). `_Run` only wires them: it opens the manifest and the archive,
starts the parts, keeps the run's one state (`run/state.py`: its phase and its
stop record) and closes what it opened.

The run reads the pool's pacer through values: a halt comes back as an
`Unfinished` outcome carrying its line, the ticker polls its `PauseNotice`s,
and the summary and the metrics read `Pacer.report()`.

Stopping: every reason to end early (SIGINT/SIGTERM, a refused token, a
budget, an outage, a broken archive, a crash) reaches `_Run.stop` as one
`stops.Stop`, folded into the run's one record by one rule (`Stop.merge`: an
archive error always wins and is always shown), which moves the run's phase on
(`run/state.py`: fetching, winding down, draining, settled). A stop that
drains cancels the feeder and the workers (in-flight requests are abandoned
and made again next run); one that does not lets the requests in flight
finish. Either way the writer commits every result already handed to it, and
the run ends with failed.ndjson, the checkpoint's end entry and summary.json
written, exactly as after a normal finish.

Signals reach the run for its whole length, the reports and the metrics push
included (`signals.py`); once the fetch loop is over a stop signal changes
nothing (the reports say how the run ended), and a second one exits at once;
committed records are safe either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from .archive.layout import Summary
from .archive.writer import Archive, RunRequest
from .batches import CommitQueue, commit_policy
from .config import ExportConfig
from .errors import ArchiveError, ExitCode, ExporterError, UsageError
from .fetcher import Fetcher
from .logs import event, rfc3339
from .manifest import estimate_lines, open_manifest
from .metrics import Snapshot
from .outcomes import Failure, FetchStats, Success
from .pacing import Pacer
from .plan import Planner
from .progress import NullProgress, Progress
from .run import finish
from .run.committer import Committer
from .run.reporting import MetricsReporter
from .run.state import Phase, RunState
from .run.ticker import show_notices, tick
from .run.workers import Workers
from .signals import STOP_SIGNALS, ProcessSignals
from .stops import Stop
from .transport.client import RecordingsClient
from .transport.credentials import TokenSource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How the run ended: the exit code, the summary written (None if it was not), a line for the user.

    `notes` are the messages of reasons to stop that did not decide the exit
    code but must be shown too (`Stop.also`).
    """

    exit_code: int
    summary: Summary | None
    message: str | None = None
    notes: tuple[str, ...] = ()
    #: Records this run committed (what `summary` counts too, when there is one).
    exported: int = 0
    #: The archive and its list of failed ids as the user is told of them (`Archive.where`, `failed_list`).
    archive: str = ""
    failed_list: str = ""

    @property
    def summary_json(self) -> dict[str, Any]:
        """The summary as summary.json holds it; empty when none was written."""
        return {} if self.summary is None else self.summary.to_json()


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
            run.state.settle()
            await run.metrics.final(int(exc.exit_code))
            raise
        await run.metrics.final(outcome.exit_code)
    return outcome


class _Run:
    """One run's parts and its one state; lives on the event loop, hands archive work to one thread."""

    def __init__(self, config: ExportConfig, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.started_epoch = time.time()
        self.stats = FetchStats()
        self.tokens = TokenSource(config.http.token, config.http.token_file)
        self.writer_pool = ThreadPoolExecutor(1, thread_name_prefix="archive-writer")
        self.reader_pool = ThreadPoolExecutor(1, thread_name_prefix="manifest-reader")
        results: CommitQueue[Success | Failure] = CommitQueue(
            commit_policy(config.archive, config.limits.concurrency)
        )
        self.results = results
        self.workers = Workers(
            concurrency=config.limits.concurrency,
            results=results,
            progress=progress,
            reader_pool=self.reader_pool,
            stop=self.stop,
        )
        self.committer = Committer(
            results,
            writer_pool=self.writer_pool,
            progress=progress,
            stats=self.stats,
            json_logs=config.log_format == "json",
        )
        self.metrics = MetricsReporter(config.metrics, self.snapshot)
        self.archive: Archive | None = None
        self.pacer: Pacer | None = None
        #: Where the run is (fetching, winding down, draining, settled) and why it ends early.
        self.state = RunState()

    def stop(self, stop: Stop) -> None:
        """Ask the run to wind down: the one way every part ends the run early.

        `Stop.merge` decides which reason is reported, `RunState.stop` where
        the run goes. A stop that drains ends the fetch loop now; one that does
        not ends it after the requests in flight: no id is handed out any
        more, and the queued and parked ones stay for the next run. Once the
        run has settled a stop changes only the reason (the exit code).
        """
        if self.state.stop(stop):
            self.workers.start_no_more()

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
        if self.state.phase is Phase.SETTLED:
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
                        started_at=rfc3339(started_epoch),
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
                        self.state.settle()
                    summary = await self._finish(archive, planner, time.monotonic() - started)
                finally:
                    await loop.run_in_executor(self.writer_pool, archive.close)
        finally:
            self.progress.close()
            self.writer_pool.shutdown(wait=False)
            self.reader_pool.shutdown(wait=False, cancel_futures=True)
        stopping = self.state.stopping
        return RunOutcome(
            finish.exit_code(stopping, self.committer),
            summary,
            stopping.message if stopping is not None else None,
            stopping.also if stopping is not None else (),
            self.committer.exported,
            archive.where,
            archive.failed_list,
        )

    async def _export(self, planner: Planner, archive: Archive) -> None:
        """Run feeder, workers and writer until the manifest is done or the run is stopped."""
        config = self.config
        self.pacer = Pacer(config.limits, config.retry, max_requests=config.budgets.max_requests)
        total = asyncio.create_task(asyncio.to_thread(estimate_lines, config.manifest))
        total.add_done_callback(self._set_total)
        ticker = asyncio.create_task(tick(self.pacer, self.progress))
        metrics = asyncio.create_task(self.metrics.every_interval()) if config.metrics.file else None
        async with RecordingsClient(config.http, tokens=self.tokens) as client:
            fetcher = Fetcher(
                client, self.pacer, config.retry, stats=self.stats, renew_token=self.tokens.renew
            )
            writer = asyncio.create_task(self.committer.run(archive))
            producers = asyncio.create_task(self.workers.run(planner, fetcher))
            stopped = asyncio.create_task(self.state.draining())
            waits: set[asyncio.Task[Any]] = {writer, producers, stopped}
            if config.budgets.max_duration_s is not None:
                waits.add(asyncio.create_task(self._deadline(config.budgets.max_duration_s)))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits - {writer, producers}:
                task.cancel()
            if not producers.done():
                producers.cancel()
            await asyncio.wait({producers})
            self._note_crash(producers)
            self.results.close()
            if (broken := await writer) is not None:
                self.stop(broken)
        ticker.cancel()
        show_notices(self.pacer, self.progress)  # made by the last answers, after the ticker's last look
        total.cancel()
        if metrics is not None:
            metrics.cancel()

    async def _finish(self, archive: Archive, planner: Planner, elapsed_s: float) -> Summary | None:
        """The run's end on disk, in the writer thread; None if it could not be written."""
        stopping = self.state.stopping
        end = functools.partial(
            finish.finish,
            archive,
            planner,
            config=self.config,
            committed=self.committer,
            stats=self.stats,
            pacing=self.pacer.report() if self.pacer is not None else None,
            exit_code=finish.exit_code(stopping, self.committer),
            message=stopping.message if stopping is not None else None,
            started_epoch=self.started_epoch,
            elapsed_s=elapsed_s,
        )
        try:
            return await asyncio.get_running_loop().run_in_executor(self.writer_pool, end)
        except (OSError, ArchiveError) as exc:
            # The records committed so far are safe; only the reports are missing.
            self.stop(Stop(ExitCode.ARCHIVE, f"cannot write the run's reports in {archive.where}: {exc}"))
            return None

    async def _deadline(self, seconds: float) -> None:
        """--max-duration: at the deadline no request starts any more; those in flight are abandoned."""
        await asyncio.sleep(seconds)
        self.stop(
            Stop(
                ExitCode.BUDGET,
                f"--max-duration ({seconds:g} s) reached; run the same command again to continue",
            )
        )

    def _note_crash(self, producers: asyncio.Task[None]) -> None:
        """A crash of the feeder or a worker, as the run's reason to stop."""
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

    def snapshot(self, exit_code: int | None = None) -> Snapshot:
        """The run's counters now, for the metrics; with `exit_code`, the last one."""
        if self.pacer is not None:
            pacing = self.pacer.report()
            rate, paused = pacing.rate_per_s, pacing.paused_s
        else:
            rate, paused = self.config.limits.rate_per_s or math.inf, {}
        return Snapshot(
            labels=self.config.metrics.labels,
            exported=self.committer.exported,
            answers=dict(self.stats.answers),
            retries=self.stats.retries,
            failed=dict(self.committer.failures),
            bytes_written=self.archive.written_bytes if self.archive is not None else 0,
            rate_limit_per_s=rate,
            paused_s=paused,
            in_flight=self.stats.in_flight,
            start_epoch=self.started_epoch,
            end_epoch=time.time() if exit_code is not None else None,
            exit_code=exit_code,
        )

    def _set_total(self, task: asyncio.Task[int | None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.progress.set_total(task.result())

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
                out=archive.where,
                shard=str(config.shard) if config.shard else None,
                rate_per_s=config.limits.rate_per_s,
                concurrency=config.limits.concurrency,
            ),
        )

    def __repr__(self) -> str:
        return f"<_Run {self.state!r} {self.workers!r} {self.committer!r}>"
