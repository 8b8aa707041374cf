"""Metrics reporting for one run: --metrics-file while it lasts, and once more, with the push, at its end.

What the counters are is `metrics.py`'s business (a `Snapshot`, rendered as
Prometheus text); this unit only decides when they are written and that a
failure to write or push them is a warning, never the run's: an export must
not fail because a monitoring file or a Pushgateway did. The run hands it a
function that reads the counters now, so it depends on none of the parts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from exporter.config import MetricsSettings
from exporter.metrics import Snapshot, push, render, write_file

log = logging.getLogger(__name__)

#: The run's counters now; given an exit code, the last ones.
ReadSnapshot = Callable[[int | None], Snapshot]


class MetricsReporter:
    """Writes the run's metrics where --metrics-file and --metrics-push say."""

    __slots__ = ("_failing", "_read", "_settings")

    def __init__(self, settings: MetricsSettings, read: ReadSnapshot) -> None:
        self._settings = settings
        self._read = read
        #: The last write of --metrics-file failed (warn once until one works again).
        self._failing = False

    async def every_interval(self) -> None:
        """--metrics-file, rewritten every interval until cancelled."""
        while True:
            await self._write(render(self._read(None)))
            await asyncio.sleep(self._settings.interval_s)

    async def final(self, exit_code: int) -> None:
        """The metrics at the end of the run: the file once more, and the push."""
        settings = self._settings
        if not settings.enabled:
            return
        text = render(self._read(exit_code))
        await self._write(text)
        if settings.push_url is not None:
            problem = await push(settings.push_url, settings.labels, text, timeout_s=settings.push_timeout_s)
            if problem is not None:
                log.warning("%s; the export itself is not affected", problem)

    async def _write(self, text: str) -> None:
        """Replace --metrics-file; a failure is a warning (once until it works again), never the run's."""
        path = self._settings.file
        if path is None:
            return
        try:
            await asyncio.to_thread(write_file, path, text)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot write --metrics-file %s: %s", path, exc.strerror or exc)
            self._failing = True
        else:
            self._failing = False

    def __repr__(self) -> str:
        return f"<MetricsReporter file={self._settings.file} failing={self._failing}>"
