"""Seconds the whole pool was held, by reason: the one record of paused time.

Two parts hold the pool: the limiter, for a Retry-After or a spent quota
(`RateLimiter.pause_until`, a span whose end is known), and the outage breaker,
from the first unanswered request of the spell that became an outage until the
first answer (`OutageBreaker`, a span whose end is not known until it comes).
Both book their spans here as they start them, and summary.json's
`pacing.paused_s` and the metrics read the totals from here alone.

Pure: times come in as arguments.
"""

from __future__ import annotations

import enum
import math


class PauseReason(enum.StrEnum):
    """Why the pool was held; the keys of summary.json's `pacing.paused_s`."""

    RETRY_AFTER = "retry_after"
    QUOTA = "quota"
    OUTAGE = "outage"


class PauseLedger:
    """Held spans by reason: the ones over folded into totals, so a days-long run keeps no list."""

    __slots__ = ("_done", "_open")

    def __init__(self) -> None:
        self._done: dict[str, float] = {}
        # (reason, begin, end) of the spans not over yet; end is math.inf until `release`.
        self._open: list[tuple[str, float, float]] = []

    def hold(self, reason: str, begin: float, end: float = math.inf, *, now: float) -> None:
        """The pool is held for `reason` from `begin` to `end` (math.inf: until `release`)."""
        self._fold(now)
        self._done.setdefault(reason, 0.0)
        self._open.append((reason, begin, end))

    def release(self, reason: str, at: float) -> None:
        """The holds for `reason` whose end was not known end at `at`."""
        self._open = [
            (r, begin, at if r == reason and end == math.inf else end) for r, begin, end in self._open
        ]
        self._fold(at)

    def paused_s(self, now: float) -> dict[str, float]:
        """Seconds held so far, by reason, in the order each was first held (a hold not over yet
        counts up to `now`)."""
        totals = dict(self._done)
        for reason, begin, end in self._open:
            totals[reason] += max(0.0, min(end, now) - begin)
        return totals

    def _fold(self, now: float) -> None:
        still_open = []
        for reason, begin, end in self._open:
            if end <= now:
                self._done[reason] += end - begin
            else:
                still_open.append((reason, begin, end))
        self._open = still_open

    def __repr__(self) -> str:
        spans = ", ".join(f"{reason} {begin:.3f}-{end:.3f}" for reason, begin, end in self._open)
        return f"<PauseLedger done={self._done} open=[{spans}]>"
