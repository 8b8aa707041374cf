"""One pace for the whole pool: when the next request may start, and what each answer changes.

The fetcher asks `Pacer.start` before every request and tells `Pacer.finish`
what came back. Between the two, everything the API says about its limits
is applied to every worker at once:

* the rate: --rate as the ceiling, lowered to what the API accepts when it
  answers 429 (`congestion.AdaptiveRate`, inside `limiter.RateLimiter`);
* an announced quota, spread evenly over the rest of its window, and every
  worker held when it is spent (`quota.py`);
* a `Retry-After`: the id that got it is not tried again sooner (`Effect`; the
  pipeline parks it, `jobs.py`), a wait longer than a second holds the whole
  pool (a second or less is how a token bucket says "just over", which the rate
  cut already answers), and one longer than the cap (15 min, `retry_after_max_s`; a
  daily quota spent) halts the pool: nothing would be answered before then;
* an outage: the pool waits together and probes one request at a time
  (`outage.OutageBreaker`), until --max-outage;
* --max-requests: no request beyond it is ever sent.

Every hold longer than `NOTICE_S` is told once through `notice` (a line on
stderr, the progress bar) and every held second is booked to its reason for
summary.json. The clock, the wall clock, the sleep and randomness are injected.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .config import LimitSettings, RetrySettings
from .congestion import AdaptiveRate, Change
from .limiter import RateLimiter
from .outage import OutageBreaker
from .quota import QuotaTracker, parse_quota
from .retry import retry_after_s

log = logging.getLogger(__name__)

#: Holds longer than this are told to the user.
NOTICE_S = 5.0
#: How soon a worker that found no slot near asks again.
_ASK_AGAIN_S = 0.1
#: A Retry-After longer than this holds every worker, not only the request that got it.
POOL_RETRY_AFTER_S = 1.0


class PauseReason(enum.StrEnum):
    """Why the pool was held; the keys of summary.json's `pacing.paused_s`."""

    RETRY_AFTER = "retry_after"
    QUOTA = "quota"
    OUTAGE = "outage"


class Halt(enum.Enum):
    """Why no more requests may start."""

    MAX_REQUESTS = "max_requests"
    API_UNAVAILABLE = "api_unavailable"
    #: The API asked to wait longer than `RetrySettings.retry_after_max_s` (a daily quota spent).
    TOLD_TO_WAIT = "told_to_wait"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request allowed to start: when it may, when it asked, and whether it probes an outage."""

    started_at: float
    #: When the slot was booked: a request booked before a rate cut says nothing about the new rate.
    booked_at: float
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Effect:
    """What one answer means for the id that got it."""

    #: The server's Retry-After (seconds; None when it sent none): never retry sooner.
    retry_after_s: float | None = None
    #: The failure was the API being down: it does not use up one of the id's attempts.
    outage: bool = False
    #: The Retry-After holds the whole pool, so the id's own retry need not wait for it apart.
    pooled: bool = False

    def own_wait_s(self) -> float:
        """How long the id that got this answer waits on its own before asking for a slot again."""
        return 0.0 if self.pooled or self.retry_after_s is None else self.retry_after_s


@dataclass(frozen=True, slots=True)
class PauseNotice:
    """The whole pool held (for `reason`, until `until_epoch` if known), or that hold over (`ended`)."""

    reason: PauseReason
    #: For a person: what, why and until when; "" when the end of a pause needs no words.
    message: str
    until_epoch: float | None = None
    ended: bool = False

    def status(self) -> str | None:
        """A few words for the progress bar while the hold lasts; None once it is over."""
        if self.ended:
            return None
        if self.until_epoch is None:
            return f"paused ({self.reason.value})"
        until = datetime.fromtimestamp(self.until_epoch).strftime("%H:%M:%S")
        return f"paused ({self.reason.value}) until {until}"


Notice = Callable[[PauseNotice], None]


def _no_notice(notice: PauseNotice) -> None:
    pass


class Pacer:
    """The pool's shared pacing state; lives on the event loop."""

    def __init__(
        self,
        limits: LimitSettings,
        retry: RetrySettings,
        *,
        max_requests: int | None = None,
        notice: Notice = _no_notice,
        clock: Callable[[], float] = time.monotonic,
        now_epoch: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        ceiling = math.inf if limits.rate_per_s == 0 else limits.rate_per_s
        self.limiter = RateLimiter(
            rate_per_s=limits.rate_per_s,
            burst=limits.burst,
            adaptive=AdaptiveRate(ceiling_per_s=ceiling, floor_per_s=limits.min_rate_per_s),
            clock=clock,
        )
        self.quota = QuotaTracker()
        self.breaker = OutageBreaker(
            # One more than an id's attempts: a lone id failing every time is that id's failure.
            threshold=retry.max_attempts + 1,
            max_outage_s=retry.max_outage_s,
        )
        self._max_requests = max_requests
        self._notice = notice
        self._clock = clock
        self._now_epoch = now_epoch
        self._sleep = sleep
        self._rand = rand
        self._wake = asyncio.Event()
        self._max_outage_s = retry.max_outage_s
        self._retry_after_max_s = retry.retry_after_max_s
        #: The Retry-After that halted the pool (Halt.TOLD_TO_WAIT), in seconds.
        self.told_to_wait_s = 0.0
        self._outage_s = 0.0
        self._announced_until = -math.inf
        # The reason of the hold last told, until its end is told too.
        self._shown: PauseReason | None = None
        self._outage_told = False
        self._last_accepted = math.nan
        self.sent = 0
        self.halted: Halt | None = None

    # --- before a request ---------------------------------------------------------------------

    async def start(self) -> Ticket | Halt:
        """Wait until a request may start; a Halt when none may any more."""
        while True:
            now = self._clock()
            admitted = self.reserve(now)
            if isinstance(admitted, float):
                await self._wait(admitted)
                continue
            if isinstance(admitted, Ticket):
                if admitted.started_at > now:
                    await self._sleep(admitted.started_at - now)
                self.going(admitted)
            return admitted

    def going(self, ticket: Ticket) -> None:
        """The request of `ticket` leaves now: from here on it spends the announced quota."""
        self.quota.started()

    def reserve(self, now: float) -> Ticket | Halt | float:
        """A request that wants to start at `now`: its ticket (it may start at `started_at`),
        a Halt, or seconds to wait before asking again (math.inf: until a probe answers)."""
        if self.halted is not None:
            return self.halted
        if self._max_requests is not None and self.sent >= self._max_requests:
            self.halted = Halt.MAX_REQUESTS
            return self.halted
        if math.isnan(self._last_accepted):
            self._last_accepted = now
        elif now - self._last_accepted > self._max_outage_s:
            # Nothing but refusals (429s, failures) for --max-outage.
            self.halted = Halt.API_UNAVAILABLE
            return self.halted
        admission = self.breaker.admit(now)
        if admission.give_up:
            self.halted = Halt.API_UNAVAILABLE
            return self.halted
        if not admission.go:
            return admission.wait_s
        if admission.probe:
            self.sent += 1
            return Ticket(now, now, probe=True)
        start = self.limiter.try_reserve(now)
        if start is None:
            # Nothing near: ask again a little later (near the end of a pause, if one holds),
            # when the pace may differ.
            return max(_ASK_AGAIN_S, self.limiter.paused_until() - now - _ASK_AGAIN_S)
        self.sent += 1
        return Ticket(start, now)

    async def _wait(self, seconds: float) -> None:
        """Sleep `seconds`, or until the breaker changes (a probe answered), whichever is first."""
        self._wake.clear()
        if math.isinf(seconds):
            await self._wake.wait()
            return
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            sleeper.cancel()

    # --- after it -----------------------------------------------------------------------------

    def finish(
        self,
        ticket: Ticket,
        *,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        down: bool = False,
    ) -> Effect:
        """Apply one answer (`status` None: no answer) to the pool; what it means for its id.

        `down`: the failure looks like the API being down (refused, timed out, 5xx).
        """
        now = self._clock()
        limited = status == 429
        report = parse_quota(headers, now_epoch=self._now_epoch()) if headers is not None else None
        self.quota.answered(now, report)
        if down or status is None:  # not a 429 either: the pace measures what the API let through
            self.limiter.response(ticket.booked_at, rate_limited=False)
        if down:
            return self._failed_down(now)
        ended = self.breaker.succeeded(now)
        if ended is not None:
            self._end_outage(now, ended)
        if not limited:
            self._last_accepted = now
        if status is not None:
            change = self.limiter.response(ticket.booked_at, rate_limited=limited)
            if change is Change.CUT:
                log.debug("the API answers 429: the pool slows to %.3g/s", self.rate_now())
            elif change is Change.UNDONE:
                log.debug("slowing down did not reduce the 429s: back to %.3g/s", self.rate_now())
        self._apply_quota(now, report)
        wait_s = None
        if headers is not None and (limited or status == 503):
            wait_s = retry_after_s(headers.get("Retry-After"), now_epoch=self._now_epoch())
        if wait_s is not None and wait_s > self._retry_after_max_s:
            # Hours, say, for a daily quota: no request would be answered before then, so
            # none is sent; the run ends and the same command later goes on.
            if self.halted is None:
                self.halted = Halt.TOLD_TO_WAIT
                self.told_to_wait_s = wait_s
            return Effect(retry_after_s=wait_s)
        if wait_s is not None and wait_s > POOL_RETRY_AFTER_S:
            # The whole pool waits, this id with it: its worker need not sit it out alone.
            self._hold(
                now + wait_s, PauseReason.RETRY_AFTER, f"the API asked to wait {wait_s:.0f} s (Retry-After)"
            )
            return Effect(retry_after_s=wait_s, pooled=True)
        return Effect(retry_after_s=wait_s)

    def _failed_down(self, now: float) -> Effect:
        holding = self.breaker.failed(now, rand=self._rand())
        self._wake.set()
        return Effect(outage=holding)

    def _end_outage(self, now: float, lasted_s: float) -> None:
        self._outage_s += lasted_s
        self._wake.set()
        if self._outage_told:
            self._outage_told = False
            self._notice(
                PauseNotice(
                    PauseReason.OUTAGE, f"the API answers again after {lasted_s:.0f} s; resuming", ended=True
                )
            )

    def tick(self) -> None:
        """Once a second: tell an outage once it has lasted `NOTICE_S`, clear a pause that is over."""
        now = self._clock()
        if self.breaker.is_open():
            if not self._outage_told and now - self.breaker.outage_started() > NOTICE_S:
                self._outage_told = True
                self._notice(
                    PauseNotice(
                        PauseReason.OUTAGE,
                        "the API looks down (no answer, or 5xx, for every request): the pool waits and "
                        "probes with one request at a time, for at most "
                        f"{self._max_outage_s:.0f} s (--max-outage)",
                    )
                )
        elif self._shown is not None and now >= self.limiter.paused_until():
            reason, self._shown = self._shown, None
            self._notice(PauseNotice(reason, "", ended=True))

    def _apply_quota(self, now: float, report: object) -> None:
        pace = self.quota.pace(now)
        if pace is None:
            return
        per_s, until = pace
        if per_s > 0:
            self.limiter.cap(per_s, until)
        elif report is not None:
            self._hold(until, PauseReason.QUOTA, "the API's announced quota is spent")

    def _hold(self, until: float, reason: PauseReason, why: str) -> None:
        """Hold every worker until `until` (monotonic), and say so when it is long."""
        self.limiter.pause_until(until, reason)
        now = self._clock()
        if until - now > NOTICE_S and until > self._announced_until + NOTICE_S:
            self._announced_until = until
            self._shown = reason
            until_epoch = self._now_epoch() + (until - now)
            resume = datetime.fromtimestamp(until_epoch).strftime("%H:%M:%S")
            self._notice(PauseNotice(reason, f"{why}; resuming at {resume}", until_epoch))

    # --- for the summary ----------------------------------------------------------------------

    def paused_s(self) -> dict[str, float]:
        """Seconds the whole pool was held, by reason."""
        now = self._clock()
        paused = {str(reason): round(seconds, 3) for reason, seconds in self.limiter.paused_s(now).items()}
        outage = self._outage_s
        if self.breaker.is_open():
            outage += now - self.breaker.outage_started()
        if outage:
            paused[PauseReason.OUTAGE.value] = round(outage, 3)
        return paused

    def rate_now(self) -> float:
        """The pace allowed now (math.inf: none)."""
        return self.limiter.current_rate(self._clock())

    @property
    def rate_cuts(self) -> int:
        return self.limiter.adaptive.cuts
