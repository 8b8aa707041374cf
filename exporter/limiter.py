"""The global request-rate limiter: a token bucket that backs off by itself on 429.

The bucket holds up to `burst` tokens and refills at the current rate. A
request takes a token; when none is left it takes one on credit, and the debt
says when it may start: `(debt) / rate` after now. Start times are computed,
not waited for in a queue, so waiters go in the order they asked and timer
jitter never accumulates into drift: over any window of `w` seconds at most
`burst + rate * w` requests start, and over a long run the achieved rate is the
configured one.

The level is kept in tokens, not in time, so when the rate changes the
requests already booked keep their places and a new one can never start before
them (booking in time units would let a halved rate open a gap in front of the
queue: a burst right after a 429).

The bucket starts nearly empty and fills at the rate, so a run's first
second is not a burst on cold connections; a full burst is for after a pause.

On 429s the limiter halves its rate (never below `min_rate_per_s`), empties
the bucket, and climbs back linearly over `recovery_s` seconds. A lone 429 among
many successes does not count (see `response`), and only a 429 for a request
that started *after* the last halving does: the dozens of requests
already in flight at the old rate would otherwise halve it dozens of times. A
Retry-After pauses every worker, not only the one that got it.

The clock and the sleep are injected so tests run instantly and exactly.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]

# How many recent start times are kept for `observed_rate`; beyond this many a
# second the estimate saturates, which only matters for halving above ~2,000/s.
_RECENT = 4096
# Responses remembered to tell a real limit from a lone 429.
_OUTCOMES = 100
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Hands out request start times at no more than `rate_per_s` (0 = no limit)."""

    __slots__ = (
        "_burst",
        "_ceiling",
        "_clock",
        "_last_start",
        "_limited",
        "_min_rate",
        "_outcomes",
        "_paused_until",
        "_rate",
        "_recent",
        "_recovery_s",
        "_sleep",
        "_throttle_fraction",
        "_throttled_at",
        "_tokens",
        "_updated",
    )

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int = 1,
        recovery_s: float = 10.0,
        min_rate_per_s: float = 0.2,
        throttle_fraction: float = 0.05,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate_per_s < 0 or burst < 1 or recovery_s <= 0 or min_rate_per_s <= 0:
            raise ValueError("rate_per_s >= 0, burst >= 1, recovery_s > 0, min_rate_per_s > 0")
        self._rate = math.inf if rate_per_s == 0 else float(rate_per_s)
        self._burst = burst
        self._recovery_s = recovery_s
        self._min_rate = min_rate_per_s
        self._clock = clock
        self._sleep = sleep
        # Tokens in the bucket (negative: booked on credit) as of `_updated`,
        # which may lie in the future while a Retry-After pause lasts. The
        # bucket starts with one token and fills up to `burst` at `rate`
        # (a slow start): a full burst at start-up would be squeezed further by
        # connection set-up and reach the API faster than --burst allows.
        self._tokens = 1.0
        self._updated = -math.inf
        self._last_start = -math.inf
        self._paused_until = -math.inf
        # After a 429: the reduced rate and when it was set; None when unthrottled.
        self._ceiling: float | None = None
        self._throttled_at = -math.inf
        # Start times of the latest requests, to know what "half" means when
        # there is no configured rate to halve.
        self._recent: collections.deque[float] = collections.deque(maxlen=_RECENT)
        # Whether each of the latest responses was a 429, and how many were.
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=_OUTCOMES)
        self._limited = 0
        self._throttle_fraction = throttle_fraction

    def current_rate(self, now: float) -> float:
        """Requests per second allowed at `now` (math.inf when unlimited and unthrottled)."""
        if self._ceiling is None:
            return self._rate
        grown = self._ceiling * (1.0 + (now - self._throttled_at) / self._recovery_s)
        if grown >= self._rate:
            self._ceiling = None
            return self._rate
        return grown

    def reserve(self, now: float) -> float:
        """Reserve the next request slot and return the time it may start (>= now)."""
        rate = self.current_rate(now)
        self._recent.append(now)
        if rate == math.inf:
            start = max(now, self._paused_until)
        else:
            self._refill(now, rate)
            self._tokens -= 1.0
            start = max(now, self._updated, self._paused_until) + max(0.0, -self._tokens) / rate
        # Never before a request booked earlier, even when the rate just went up.
        start = max(start, self._last_start)
        self._last_start = start
        return start

    def _refill(self, now: float, rate: float) -> None:
        if self._updated == -math.inf:
            self._updated = now
        elif now > self._updated:
            self._tokens = min(float(self._burst), self._tokens + (now - self._updated) * rate)
            self._updated = now

    async def acquire(self) -> float:
        """Wait for a slot; returns its start time, to pass to `throttled` on a 429."""
        now = self._clock()
        start = self.reserve(now)
        if start > now:
            await self._sleep(start - now)
        return start

    def pause_until(self, until: float) -> None:
        """Start no request before `until` (a Retry-After), and no burst right after it."""
        if until <= self._paused_until:
            return
        self._paused_until = until
        rate = self.current_rate(self._clock())
        if rate != math.inf:
            now = self._clock()
            self._refill(now, rate)
            # What the bucket would hold when the pause ends (debts of requests
            # booked before it are paid by then), but never more than one token:
            # no tokens pile up while paused.
            self._tokens = min(1.0, self._tokens + max(0.0, until - max(now, self._updated)) * rate)
            self._updated = max(self._updated, until)

    def response(self, started_at: float, *, rate_limited: bool) -> bool:
        """Every response reports here; a 429 that is not a lone one halves the rate.

        An API with quota to spare may still answer an odd 429 (another client
        spent the shared quota); halving for each of those would pin the rate
        near nothing. So a 429 lowers the rate only while at least
        `throttle_fraction` of the recent responses were 429s: a real limit
        answers many of them at once. A lone 429 still waits out its
        Retry-After, which pauses every worker.
        """
        window = self._outcomes
        if len(window) == window.maxlen:
            self._limited -= window[0]
        window.append(rate_limited)
        self._limited += rate_limited
        if not rate_limited or self._limited < max(1.0, len(window) * self._throttle_fraction):
            return False
        return self.throttled(started_at)

    def throttled(self, started_at: float) -> bool:
        """The request started at `started_at` got a 429: halve the rate, once per round.

        Returns True when the rate was lowered, False when the 429 belonged to a
        request started before the last halving and was already accounted for.
        """
        if started_at < self._throttled_at:
            return False
        now = self._clock()
        base = self.current_rate(now)
        if base == math.inf:
            base = self.observed_rate(now)
            # The bucket starts counting now, or when a pause set while unlimited ends.
            self._updated = max(now, self._paused_until)
        else:
            self._refill(now, base)
        self._ceiling = max(self._min_rate, base / 2.0)
        self._throttled_at = now
        self._tokens = min(self._tokens, 1.0)
        return True

    def observed_rate(self, now: float) -> float:
        """Requests started in the last second (at least one: the one that got the 429)."""
        return float(max(1, sum(1 for started in self._recent if started > now - 1.0)))

    def __repr__(self) -> str:
        now = self._clock()
        rate = self.current_rate(now)
        ahead = max(0.0, self._last_start - now)
        paused = max(0.0, self._paused_until - now)
        return (
            f"<RateLimiter rate={rate:.3g}/s burst={self._burst} tokens={self._tokens:.2f} "
            f"booked_ahead={ahead:.3f}s paused_for={paused:.3f}s "
            f"throttled={'yes' if self._ceiling is not None else 'no'}>"
        )
