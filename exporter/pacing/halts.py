"""Whether and why no more requests may start: the one place the pool's end is decided.

The first reason met is the one told, and it stays:

* `MAX_REQUESTS`: --max-requests were sent;
* `API_UNAVAILABLE`: the pool has waited on the API for longer than
  --max-outage, counted from the first unanswered request of the spell that
  became the outage (`OutageBreaker.waiting_since`), blamed on what failed
  (`api`, `proxy`, `tls`: `Trouble`); or the API has answered nothing but 429
  for that long (`rate_limited`);
* `TOLD_TO_WAIT`: the API asked to wait longer than the cap
  (`RetrySettings.retry_after_max_s`): a Retry-After, or an announced quota
  spent until then. No request would be answered before that, so none is sent;
  the same command later goes on.

Pure: times and counts in, a `HaltDetail` (the reason, what it blames, the line
for the user, when the API said to come back) out. The times a server
announces are written by `waits.py`, which never raises.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .trouble import NO_ANSWER, Trouble
from .waits import clock_text, duration_text, seconds_text, utc_text


class Halt(enum.Enum):
    """Why no more requests may start."""

    MAX_REQUESTS = "max_requests"
    API_UNAVAILABLE = "api_unavailable"
    #: The API asked to wait longer than `RetrySettings.retry_after_max_s` (a Retry-After, or
    #: an announced quota spent until then).
    TOLD_TO_WAIT = "told_to_wait"


@dataclass(frozen=True, slots=True)
class HaltDetail:
    """Why the pool halted, for the closing line and summary.json's `pacing.halt`."""

    halt: Halt
    #: What it is blamed on: `api`, `proxy`, `tls` (`errors.Cause`), `rate_limited` (nothing but
    #: 429s), `retry_after`, `quota`, or `max_requests`.
    cause: str
    message: str
    #: When the API said it would answer again (RFC 3339, UTC), for a halt on its word; None
    #: too when that is past what RFC 3339 can write.
    resume_at: str | None = None
    wait_s: float | None = None


class HaltRule:
    """Says whether a request may still start, and keeps the first reason it may not."""

    __slots__ = ("_max_outage_s", "_max_requests", "_refused_since", "_retry_after_max_s", "halted")

    def __init__(self, *, max_requests: int | None, max_outage_s: float, retry_after_max_s: float) -> None:
        self._max_requests = max_requests
        self._max_outage_s = max_outage_s
        self._retry_after_max_s = retry_after_max_s
        # Since when every answer has been a 429 (NaN: the last answer was not one).
        self._refused_since = math.nan
        #: Why no more requests may start (None: they may).
        self.halted: HaltDetail | None = None

    def check(
        self, now: float, *, sent: int, down_since: float | None = None, trouble: Trouble = NO_ANSWER
    ) -> HaltDetail | None:
        """Why no request may start at `now`, having sent `sent`, the pool waiting on the API since
        `down_since` (None: it is not) for the last failure `trouble`; None when one may."""
        if self.halted is not None:
            return self.halted
        if self._max_requests is not None and sent >= self._max_requests:
            return self._halt(
                Halt.MAX_REQUESTS,
                "max_requests",
                "--max-requests reached: no more requests sent; run the same command again to continue",
            )
        if not math.isnan(self._refused_since) and now - self._refused_since > self._max_outage_s:
            return self._halt(
                Halt.API_UNAVAILABLE,
                "rate_limited",
                "the API answered nothing but 429 (too many requests) for longer than --max-outage "
                f"({seconds_text(self._max_outage_s)}); what was fetched is kept: run the same command "
                "again later",
            )
        if down_since is not None and now - down_since > self._max_outage_s:
            return self._halt(
                Halt.API_UNAVAILABLE, trouble.cause.value, trouble.unavailable(self._max_outage_s)
            )
        return None

    def answered(self, now: float, *, refused: bool) -> None:
        """The API answered at `now` (`refused`: with a 429)."""
        if not refused:
            self._refused_since = math.nan
        elif math.isnan(self._refused_since):
            self._refused_since = now

    def beyond_cap(self, wait_s: float) -> bool:
        """Whether a wait of `wait_s` is longer than the run sits out."""
        return wait_s > self._retry_after_max_s

    def not_retried(self, wait_s: float) -> str:
        """Why an id the API asked to wait `wait_s` (beyond the cap) is not tried again in this run."""
        return (
            f"the API asked to wait {seconds_text(wait_s).replace(' ', '')}, more than "
            f"{self._retry_after_max_s:.0f}s: run again later"
        )

    def told_to_wait(self, wait_s: float, *, now_epoch: float, cause: str, what: str) -> None:
        """Halt for a wait beyond the cap (`what`: who asked), saying until when (the date, unless today)."""
        resume = now_epoch + wait_s
        clock = clock_text(resume, now_epoch=now_epoch)
        when = (
            f"for {duration_text(wait_s)}" if clock is None else f"until {clock} (in {duration_text(wait_s)})"
        )
        self._halt(
            Halt.TOLD_TO_WAIT,
            cause,
            f"{what} {when}; more than {duration_text(self._retry_after_max_s)}, so no more requests "
            "were sent: run the same command again after that",
            resume_at=utc_text(resume),
            wait_s=wait_s,
        )

    def _halt(
        self,
        halt: Halt,
        cause: str,
        message: str,
        *,
        resume_at: str | None = None,
        wait_s: float | None = None,
    ) -> HaltDetail:
        """No request starts any more; the first reason is the one told."""
        if self.halted is None:
            self.halted = HaltDetail(halt, cause, message, resume_at, wait_s)
        return self.halted

    def __repr__(self) -> str:
        halted = "no" if self.halted is None else self.halted.halt.value
        return (
            f"<HaltRule halted={halted} max_requests={self._max_requests} max_outage={self._max_outage_s}s>"
        )
