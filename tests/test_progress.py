"""Progress reporters: the counts they show are the run's, whatever order the updates come in."""

from __future__ import annotations

import io
import logging

import pytest

from exporter.progress import BarProgress, LogProgress


def test_periodic_lines_keep_the_retries_total_across_ticks_and_skips(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`retries` is a running total given with commits; a tick or a skipped batch does not reset it."""
    progress = LogProgress(every_s=0.0)
    with caplog.at_level(logging.INFO, logger="exporter"):
        progress.advance(exported=3, retries=7)
        progress.tick()
        progress.advance(skipped=2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert all(line.endswith("0 failed, 7 retries") for line in lines), lines
    assert lines[-1].startswith("progress: 5 done")


def test_the_bar_keeps_the_retries_total_when_ids_are_skipped() -> None:
    """A skipped batch (already archived ids) leaves the bar's retry count as it was."""
    stream = io.StringIO()
    bar = BarProgress(stream)
    bar.advance(exported=1, retries=4)
    bar.advance(skipped=10)
    bar.tick()
    bar.close()
    shown = stream.getvalue()
    assert "retries=4" in shown
    assert "retries=0" not in shown.split("retries=4", 1)[1]
