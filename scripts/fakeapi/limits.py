"""The limits real APIs have: a token bucket, a fixed-window quota, outages (pure, injectable clock)."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable

from fakeapi.config import QUOTA_POLICY, ResetStyle


def rate_limit_headers(
    *, limit: int, remaining: int, reset_in_s: float, now_epoch_s: float
) -> dict[str, str]:
    """X-RateLimit-* headers; Reset is a Unix time in whole seconds (as GitHub sends it)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(math.ceil(now_epoch_s + reset_in_s)),
    }


def retry_after_value(delay_s: float, *, as_date: bool, now_epoch_s: float) -> str:
    """A Retry-After value: whole seconds rounded up, or an IMF-fixdate HTTP date."""
    if as_date:
        return email.utils.formatdate(now_epoch_s + delay_s, usegmt=True)
    return str(math.ceil(delay_s))


class TokenBucket:
    """A token bucket: capacity tokens, refilled at rate per second, one per request.

    Requests over the limit are refused, not queued: the server answers 429 at once and
    says how long until a token is free, which is how the real API behaves.
    """

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Start full, so a client's first burst of up to capacity requests passes."""
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()

    def _refill(self) -> None:
        """Credit the tokens earned since the last call, up to capacity."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional)."""
        self._refill()
        return self._tokens

    def seconds_until_full(self) -> float:
        """How long until the bucket is back at capacity: the X-RateLimit-Reset window."""
        return (self.capacity - self.tokens) / self.rate

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or take nothing and return seconds until one is due."""
        self._refill()
        # The epsilon forgives float rounding, so a client pacing at exactly `rate` passes.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate}/s capacity={self.capacity} tokens={self.tokens:.3f}>"


class FixedWindowQuota:
    """limit requests per window_s, in windows aligned to when the quota was made (the server's start).

    The common API quota ("100 requests per 10 seconds"): unlike a token bucket it does not
    refill gradually, so a client that spends it early waits for the window to end. Requests
    it refuses do not count against it.
    """

    __slots__ = ("_clock", "_used", "_window", "limit", "origin", "window_s")

    def __init__(self, limit: int, window_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self.origin = clock()
        self._window = 0
        self._used = 0

    def _roll(self) -> float:
        """Start a fresh count when a new window has begun; returns now."""
        now = self._clock()
        window = math.floor((now - self.origin) / self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        return now

    def try_acquire(self) -> bool:
        """Count one request and return True, or return False (counting nothing) when spent."""
        self._roll()
        if self._used >= self.limit:
            return False
        self._used += 1
        return True

    @property
    def remaining(self) -> int:
        """Requests left in the current window."""
        self._roll()
        return self.limit - self._used

    def reset_in_s(self) -> float:
        """Seconds until the current window ends and the quota is whole again (in (0, window_s])."""
        now = self._roll()
        return self.origin + (self._window + 1) * self.window_s - now

    def __repr__(self) -> str:
        left = f"{self.remaining}/{self.limit}"
        return f"<FixedWindowQuota {left} per {self.window_s} s, reset in {self.reset_in_s():.3f} s>"


def quota_headers(
    *, limit: int, remaining: int, reset_in_s: float, window_s: int, style: ResetStyle, now_epoch_s: float
) -> dict[str, str]:
    """A fixed-window quota announced both ways: X-RateLimit-* and the IETF draft's fields.

    draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "default";q=100;w=10` (quota q per
    w seconds) and `RateLimit: "default";r=37;t=4` (r left, t seconds until it resets). Reset
    times are rounded up, so a client that waits them out is never early.
    """
    reset_s = math.ceil(reset_in_s)
    reset = str(reset_s) if style == "delta" else str(math.ceil(now_epoch_s + reset_in_s))
    remaining = max(0, remaining)
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": reset,
        "RateLimit-Policy": f'"{QUOTA_POLICY}";q={limit};w={window_s}',
        "RateLimit": f'"{QUOTA_POLICY}";r={remaining};t={reset_s}',
    }


class OutageSchedule:
    """The one outage window, [start, start + duration_s), on the injectable clock.

    Scheduled with a start of now, or with a delay counted from the next API request (so a
    benchmark can put an outage in the middle of a run without knowing when the run starts).
    """

    __slots__ = ("after_s", "duration_s", "start")

    def __init__(self, duration_s: float, after_s: float | None, now: float) -> None:
        self.duration_s = duration_s
        self.after_s = after_s
        self.start: float | None = now if duration_s > 0 and after_s is None else None

    def on_request(self, now: float) -> bool:
        """Note an API request; True when it is the one that fixes the start."""
        if self.start is None and self.after_s is not None and self.duration_s > 0:
            self.start = now + self.after_s
            return True
        return False

    def remaining_s(self, now: float) -> float:
        """Seconds of outage left at now; 0.0 outside the window."""
        if self.start is None or now < self.start:
            return 0.0
        return max(0.0, self.start + self.duration_s - now)

    def next_change_s(self, now: float) -> float | None:
        """Seconds until the outage begins or ends; None when neither is still to come."""
        if self.start is None:
            return None
        if now < self.start:
            return self.start - now
        end = self.start + self.duration_s
        return end - now if now < end else None

    def __repr__(self) -> str:
        return f"<OutageSchedule {self.duration_s} s start={self.start} after_s={self.after_s}>"
