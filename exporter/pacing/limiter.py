"""The pool's request pacing: a token bucket whose rate the API's answers set, and pool-wide pauses.

The bucket holds up to `burst` tokens and refills at the rate allowed now: the
lowest of --rate, what `congestion.AdaptiveRate` has learnt the API accepts, and
what an announced quota leaves (`quota.py`, set with `cap`). A request takes a
token; when none is left it takes one on credit, and the debt says when it may
start: `(debt) / rate` after now. Start times are computed, not waited for in a
queue, so waiters go in the order they asked and timer jitter never accumulates
into drift: over any window of `w` seconds at most `burst + rate * w` requests
start, and over a long run the achieved rate is the allowed one.

The level is kept in tokens, not in time, so when the rate changes the
requests already booked keep their places and a new one can never start before
them (booking in time units would let a lowered rate open a gap in front of the
queue: a burst right after a 429).

The bucket starts nearly empty and fills at the rate, so a run's first
second is not a burst on cold connections; a full burst is for after an idle
spell, never right after a pause or a cut.

A pause (`pause_until`) holds every worker, not only the one whose answer
asked for it, and is booked to its reason in the pool's one record of paused
time (`pauses.PauseLedger`), so the run can say how long it waited for what.

The clock is injected so tests run instantly and exactly; the waiting is the
pacer's (`Pacer.start`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .congestion import AdaptiveRate, Change
from .pauses import PauseLedger

Clock = Callable[[], float]

#: Slots are booked at most this far ahead (or two slots, at a slow rate): a slot booked at an
#: old rate is a request whose answer says nothing about a new one.
_HORIZON_S = 0.25


class RateLimiter:
    """Hands out request start times at no more than the allowed rate (`rate_per_s` 0 = no ceiling)."""

    __slots__ = (
        "_adaptive",
        "_burst",
        "_cap",
        "_cap_until",
        "_clock",
        "_last_start",
        "_paused_until",
        "_pauses",
        "_tokens",
        "_updated",
    )

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int = 1,
        adaptive: AdaptiveRate | None = None,
        pauses: PauseLedger | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate_per_s >= 0, burst >= 1")
        ceiling = math.inf if rate_per_s == 0 else float(rate_per_s)
        self._adaptive = adaptive if adaptive is not None else AdaptiveRate(ceiling_per_s=ceiling)
        self._burst = burst
        self._clock = clock
        # Tokens in the bucket (negative: booked on credit) as of `_updated`,
        # which may lie in the future while a pause lasts. The bucket starts with
        # one token and fills up to `burst` at the rate (a slow start): a full
        # burst at start-up would be squeezed further by connection set-up and
        # reach the API faster than --burst allows.
        self._tokens = 1.0
        self._updated = -math.inf
        self._last_start = -math.inf
        self._paused_until = -math.inf
        self._pauses = pauses if pauses is not None else PauseLedger()
        # An announced quota's pace, and until when it holds.
        self._cap = math.inf
        self._cap_until = -math.inf

    @property
    def adaptive(self) -> AdaptiveRate:
        """The learner of the API's limit, for tests and the summary."""
        return self._adaptive

    def current_rate(self, now: float) -> float:
        """Requests per second allowed at `now` (math.inf when nothing limits them)."""
        per_s = self._adaptive.rate(now)
        if now < self._cap_until:
            per_s = min(per_s, self._cap)
        return per_s

    def cap(self, per_s: float, until: float) -> None:
        """No faster than `per_s` until `until` (an announced quota spread over its window)."""
        self._cap = max(per_s, 1e-6)
        self._cap_until = until

    def reserve(self, now: float) -> float:
        """Reserve the next request slot and return the time it may start (>= now)."""
        start = self.try_reserve(now, horizon_s=math.inf)
        assert start is not None
        return start

    def try_reserve(self, now: float, *, horizon_s: float | None = None) -> float | None:
        """Reserve a slot that starts within `horizon_s` of now; None (nothing booked) if none does.

        A slot booked far ahead keeps the rate of the moment it was booked: a quota that
        leaves 1 request for the last half second would push 32 workers' slots 16 s out,
        and a pause would hold them past its end; and the answers to slots booked before a
        rate cut say nothing about the new rate, so booking far ahead slows every reaction.
        So a worker books only what is near (`_HORIZON_S`, or one slot at a slow rate: a
        quota spread over its reset can space slots nearly the longest hold apart, and a
        second slot would sleep a worker past the reset, where the pace is back) and asks
        again later.
        """
        rate = self.current_rate(now)
        if horizon_s is None:
            horizon_s = _HORIZON_S if rate == math.inf else _HORIZON_S + 1.0 / rate
        if rate == math.inf:
            start = max(now, self._paused_until, self._last_start)
            if start - now > horizon_s:
                return None
        else:
            self._refill(now, rate)
            # Never before a request booked earlier, even when the rate just went up.
            start = max(
                max(now, self._updated, self._paused_until) + max(0.0, 1.0 - self._tokens) / rate,
                self._last_start,
            )
            if start - now > horizon_s:
                return None
            self._tokens -= 1.0
        self._last_start = start
        return start

    def _refill(self, now: float, rate: float) -> None:
        if self._updated == -math.inf:
            self._updated = max(now, self._paused_until)
        elif now > self._updated:
            self._tokens = min(float(self._burst), self._tokens + (now - self._updated) * rate)
            self._updated = now

    def response(self, booked_at: float, *, rate_limited: bool) -> Change | None:
        """Every answer reports here (`rate_limited`: a 429) with when its slot was booked;
        returns what it did to the rate."""
        now = self._clock()
        change = self._adaptive.on_response(now, booked_at, limited=rate_limited)
        if change is Change.CUT:
            # No burst at the lowered rate: the API's bucket is empty right now.
            rate = self.current_rate(now)
            if rate != math.inf:
                self._refill(now, rate)
            self._tokens = min(self._tokens, 1.0)
        return change

    def pause_until(self, until: float, reason: str) -> float:
        """Start no request before `until`, and no burst right after it; returns the seconds added."""
        now = self._clock()
        begin = max(now, self._paused_until)
        if until <= begin:
            return 0.0
        self._pauses.hold(reason, begin, until, now=now)
        self._paused_until = until
        rate = self.current_rate(now)
        if rate != math.inf:
            self._refill(now, rate)
            # What the bucket would hold when the pause ends (debts of requests
            # booked before it are paid by then), but never more than one token:
            # no tokens pile up while paused.
            self._tokens = min(1.0, self._tokens + max(0.0, until - max(now, self._updated)) * rate)
            self._updated = max(self._updated, until)
        return until - begin

    def paused_until(self) -> float:
        """When the current pause ends (in the past when there is none)."""
        return self._paused_until

    def __repr__(self) -> str:
        now = self._clock()
        rate = self.current_rate(now)
        ahead = max(0.0, self._last_start - now)
        paused = max(0.0, self._paused_until - now)
        return (
            f"<RateLimiter rate={rate:.3g}/s burst={self._burst} tokens={self._tokens:.2f} "
            f"booked_ahead={ahead:.3f}s paused_for={paused:.3f}s {self._adaptive!r}>"
        )
