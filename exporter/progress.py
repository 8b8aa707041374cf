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

log = logging.getLogger("exporter")


class Progress(Protocol):
    """What the pipeline tells whoever watches."""

    def set_total(self, total: int | None) -> None: ...

    def advance(self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int = 0) -> None: ...

    def status(self, text: str | None) -> None:
        """A state worth showing beside the counts (a pause and until when); None clears it."""

    def tick(self) -> None:
        """Time passes (once a second), records or not."""

    def close(self) -> None: ...


class NullProgress:
    """For --quiet and --no-progress: says nothing."""

    def status(self, text: str | None) -> None:
        pass

    def tick(self) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def advance(self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int = 0) -> None:
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
        self._status = text
        self._postfix()

    def tick(self) -> None:
        self._bar.refresh()

    def _postfix(self) -> None:
        fields: dict[str, object] = {"failed": self._failed, "retries": self._retries}
        if self._status:
            fields["state"] = self._status
        self._bar.set_postfix(fields, refresh=False)

    def set_total(self, total: int | None) -> None:
        if total is not None:
            self._bar.total = total
            self._bar.refresh()

    def advance(self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int = 0) -> None:
        if failed or retries != self._retries:
            self._failed += failed
            self._retries = retries
            self._postfix()
        self._bar.update(exported + failed + skipped)

    def close(self) -> None:
        self._bar.close()


class LogProgress:
    """Without a terminal (a log file, cron without --quiet): one line every `every_s` seconds."""

    def __init__(self, every_s: float = 30.0) -> None:
        self._every_s = every_s
        self._start = time.monotonic()
        self._last = self._start
        self._total: int | None = None
        self._exported = self._failed = self._skipped = self._retries = 0
        self._status: str | None = None

    def set_total(self, total: int | None) -> None:
        self._total = total

    def status(self, text: str | None) -> None:
        self._status = text

    def tick(self) -> None:
        self.advance()

    def advance(self, *, exported: int = 0, failed: int = 0, skipped: int = 0, retries: int = 0) -> None:
        self._exported += exported
        self._failed += failed
        self._skipped += skipped
        self._retries = retries
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            done = self._exported + self._failed + self._skipped
            of = f" of ~{self._total}" if self._total else ""
            rate = self._exported / max(now - self._start, 1e-9)
            log.info(
                "progress: %d%s done, %d exported (%.1f/s), %d failed, %d retries%s",
                done,
                of,
                self._exported,
                rate,
                self._failed,
                self._retries,
                f"; {self._status}" if self._status else "",
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


def make_progress(mode: ProgressMode, *, quiet: bool, stream: TextIO | None = None) -> Progress:
    """The reporter for the options and the terminal we run at."""
    stream = stream if stream is not None else sys.stderr
    if quiet or mode == "off":
        return NullProgress()
    if mode == "on" or (mode == "auto" and stream.isatty()):
        return BarProgress(stream)
    return LogProgress()
