"""Telling a person how the run goes: a bar at a terminal, a line now and then in a log, or nothing.

The pipeline reports in batches (once per group commit, once per planned
batch), never per record, so even the bar costs nothing measurable at
thousands of records a second.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol, TextIO

from tqdm import tqdm

from .config import ProgressMode
from .display import escape
from .logs import event

log = logging.getLogger("exporter")


class Progress(Protocol):
    """What the pipeline tells whoever watches."""

    def set_total(self, total: int | None) -> None: ...

    def advance(
        self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int | None = None
    ) -> None: ...

    def status(self, text: str | None) -> None:
        """A state worth showing beside the counts (a pause and until when); None clears it."""

    def tick(self) -> None:
        """Time passes (once a second), records or not."""

    def limit(self, per_s: float | None) -> None:
        """The pace the pacer allows now (requests/s; None: no limit)."""

    def close(self) -> None: ...


class NullProgress:
    """For --quiet and --no-progress: says nothing."""

    def status(self, text: str | None) -> None:
        pass

    def tick(self) -> None:
        pass

    def limit(self, per_s: float | None) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def advance(
        self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int | None = None
    ) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar on a terminal: done/total, rate, ETA, failures and retries."""

    def __init__(self, stream: TextIO) -> None:
        self._bar = tqdm(
            total=None,
            unit="rec",
            file=stream,
            dynamic_ncols=True,
            mininterval=0.25,
            smoothing=0.05,
            desc="export",
        )
        self._failed = 0
        self._retries = 0
        self._status: str | None = None

    def status(self, text: str | None) -> None:
        # The bar is written straight to the terminal, past the log formatter: escaped here.
        self._status = None if text is None else escape(text)
        self._postfix()

    def tick(self) -> None:
        self._bar.refresh()

    def limit(self, per_s: float | None) -> None:
        pass

    def _postfix(self) -> None:
        fields: dict[str, object] = {"failed": self._failed, "retries": self._retries}
        if self._status:
            fields["state"] = self._status
        self._bar.set_postfix(fields, refresh=False)

    def set_total(self, total: int | None) -> None:
        if total is not None:
            self._bar.total = total
            self._bar.refresh()

    def advance(
        self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int | None = None
    ) -> None:
        if failed or (retries is not None and retries != self._retries):
            self._failed += failed
            self._retries = self._retries if retries is None else retries
            self._postfix()
        self._bar.update(exported + failed + skipped)

    def close(self) -> None:
        self._bar.close()


class LogProgress:
    """Without a terminal (a log file, cron without --quiet, JSON logs): a line every `every_s` seconds.

    The line is a `progress` event: in JSON its fields are done, total (when
    the manifest's size is known), rate, ETA, failures and the current limit.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        self._every_s = every_s
        self._start = time.monotonic()
        self._last = self._start
        self._total: int | None = None
        self._exported = self._failed = self._skipped = self._retries = 0
        self._status: str | None = None
        self._limit: float | None = None

    def set_total(self, total: int | None) -> None:
        self._total = total

    def limit(self, per_s: float | None) -> None:
        self._limit = per_s

    def status(self, text: str | None) -> None:
        self._status = text

    def tick(self) -> None:
        self.advance()

    def advance(
        self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int | None = None
    ) -> None:
        self._exported += exported
        self._failed += failed
        self._skipped += skipped
        if retries is not None:
            self._retries = retries
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            done = self._exported + self._failed + self._skipped
            of = f" of ~{self._total}" if self._total else ""
            rate = self._exported / max(now - self._start, 1e-9)
            left = self._total - done if self._total and self._total > done else None
            fields = event(
                "progress",
                done=done,
                total=self._total,
                exported=self._exported,
                skipped=self._skipped,
                failed=self._failed,
                retries=self._retries,
                rate_per_s=round(rate, 2),
                eta_s=round(left / rate) if left is not None and rate > 0 else None,
                limit_per_s=None if self._limit is None else round(self._limit, 3),
                state=self._status,
            )
            log.info(
                "progress: %d%s done, %d exported (%.1f/s), %d failed, %d retries%s",
                done,
                of,
                self._exported,
                rate,
                self._failed,
                self._retries,
                f"; {self._status}" if self._status else "",
                extra=fields,
            )

    def close(self) -> None:
        pass


class BarSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A log handler that writes around an active progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise
            self.handleError(record)


def make_progress(
    mode: ProgressMode,
    *,
    quiet: bool,
    stream: TextIO | None = None,
    every_s: float = 30.0,
    json_logs: bool = False,
) -> Progress:
    """The reporter for the options and the terminal we run at; JSON logs never get a bar."""
    stream = stream if stream is not None else sys.stderr
    if quiet or mode == "off":
        return NullProgress()
    if not json_logs and (mode == "on" or (mode == "auto" and stream.isatty())):
        return BarProgress(stream)
    return LogProgress(every_s)
