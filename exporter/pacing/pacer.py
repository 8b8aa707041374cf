"""One pace for the whole pool: when the next request may start, and what each answer changes.

The fetcher asks `Pacer.start` before every request and tells `Pacer.finish`
what came back. Between the two, everything the API says about its limits
is applied to every worker at once:

* the rate: --rate as the ceiling, lowered to what the API accepts when it
  answers 429 (`congestion.AdaptiveRate`, inside `limiter.RateLimiter`);
* an announced quota, spread evenly over the rest of its window, and every
  worker held when it is spent (`quota.py`); a spread slower than one request
  per `retry_after_max_s` is not kept (what is left goes at the usual pace),
  and a quota spent until later than that halts the pool, as a long
  `Retry-After` does;
* a `Retry-After`: the id that got it is not tried again sooner (`Effect`; the
  pipeline parks it, `jobs.py`), a wait longer than a second holds the whole
  pool (a second or less is how a token bucket says "just over", which the rate
  cut already answers), and one longer than the cap (15 min, `retry_after_max_s`; a
  daily quota spent) halts the pool: nothing would be answered before then;
* an outage: each failure is judged the id's own or the API's
  (`outage.OutageBreaker`: an answer to anyone else, or a recording served
  earlier asked for again, tells them apart); in an outage the pool waits
  together and probes one request at a time, until --max-outage;
* --max-requests: no request beyond it is ever sent.

Whether a request may still start is `halts.HaltRule`'s to say, for every
reason at once. Every held second is booked to its reason in one ledger
(`pauses.PauseLedger`). Every hold longer than `notices.NOTICE_S` becomes a
`PauseNotice` that the run takes with `poll` (a line on stderr, the progress
bar); the run reads the rest as one value, `report()`. No header value can make
any of this raise: the times a server announces are bounded by the cap before
they are waited for, and written by `waits.py`, which never raises. The clock,
the wall clock, the sleep and randomness are injected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import overload

from exporter.config import LimitSettings, RetrySettings
from exporter.retry import retry_after_s

from .congestion import AdaptiveRate, Change
from .halts import HaltDetail, HaltRule
from .limiter import RateLimiter
from .notices import NOTICE_S, Notices, PauseNotice
from .outage import Blame, OutageBreaker
from .pauses import PauseLedger, PauseReason
from .quota import QuotaReport, QuotaTracker, parse_quota
from .tickets import Effect, Ticket
from .trouble import NO_ANSWER, Trouble
from .waits import seconds_text

log = logging.getLogger(__name__)

#: How soon a worker that found no slot near asks again.
_ASK_AGAIN_S = 0.1
#: A Retry-After longer than this holds every worker, not only the request that got it.
POOL_RETRY_AFTER_S = 1.0
#: A dry spell (failures, and no answer from the API) is judged after this long...
OUTAGE_SPAN_S = 2.0
#: ...or after this many requests' worth at the pace allowed, if longer (a slow pace sends few
#: requests in 2 s, and a spell of two failures is noise, not evidence)...
_SPAN_REQUESTS = 4
#: ...but never later than this.
_MAX_SPAN_S = 30.0
#: An answer that asks nothing of its id.
_NO_EFFECT = Effect()


@dataclass(frozen=True, slots=True)
class PacingReport:
    """How the API's limits have shaped the run so far: summary.json's `pacing`, and the metrics."""

    #: Seconds every worker was held, by reason (`PauseReason`), to the millisecond.
    paused_s: Mapping[str, float]
    #: The pace allowed now, requests per second (math.inf: none).
    rate_per_s: float
    rate_cuts: int
    outages: int
    #: Recordings served earlier asked for again, to tell an outage from broken ids.
    outage_checks: int
    #: Why no more requests may start (None: they may).
    halt: HaltDetail | None


class Pacer:
    """The pool's shared pacing state; lives on the event loop.

    The run reads it through values only (`start`, `finish`, `poll`, `report`);
    its parts are attributes so that tests can look into them.
    """

    def __init__(
        self,
        limits: LimitSettings,
        retry: RetrySettings,
        *,
        max_requests: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        now_epoch: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        ceiling = math.inf if limits.rate_per_s == 0 else limits.rate_per_s
        self.pauses = PauseLedger()
        self.limiter = RateLimiter(
            rate_per_s=limits.rate_per_s,
            burst=limits.burst,
            adaptive=AdaptiveRate(ceiling_per_s=ceiling, floor_per_s=limits.min_rate_per_s),
            pauses=self.pauses,
            clock=clock,
        )
        self.quota = QuotaTracker()
        self.breaker = OutageBreaker(span_s=OUTAGE_SPAN_S, pauses=self.pauses, rand=rand)
        self.halts = HaltRule(
            max_requests=max_requests,
            max_outage_s=retry.max_outage_s,
            retry_after_max_s=retry.retry_after_max_s,
        )
        self._notices = Notices()
        self._clock = clock
        self._now_epoch = now_epoch
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._max_outage_s = retry.max_outage_s
        # The last failure that may be the API's: what notices and the halt name.
        self._trouble = NO_ANSWER
        self.sent = 0

    # --- before a request ---------------------------------------------------------------------

    async def start(self, *, pending: int | None = None) -> Ticket | HaltDetail | None:
        """Wait until a request may start; why not when none may any more.

        `pending`: the caller's id has used all its attempts, some provisionally in that dry
        spell; it waits for the spell's verdict (None once it is in), sending the check if
        it is the one due.
        """
        while True:
            now = self._clock()
            admitted = self.reserve(now, pending=pending)
            if admitted is None:
                return None
            if isinstance(admitted, float):
                self._wake.clear()
                await self._wait(self._wake, admitted)
                continue
            if isinstance(admitted, Ticket):
                if admitted.started_at > now:
                    await self._sleep(admitted.started_at - now)
                self.going(admitted)
            return admitted

    def going(self, ticket: Ticket) -> None:
        """The request of `ticket` leaves now: from here on it spends the announced quota."""
        self.quota.started()

    @overload
    def reserve(self, now: float) -> Ticket | HaltDetail | float: ...

    @overload
    def reserve(self, now: float, *, pending: int | None) -> Ticket | HaltDetail | float | None: ...

    def reserve(self, now: float, *, pending: int | None = None) -> Ticket | HaltDetail | float | None:
        """A request that wants to start at `now`: its ticket (it may start at `started_at`),
        why none may start any more, seconds to wait before asking again (math.inf: until a
        probe answers), or, with `pending`, None once that spell's verdict is in."""
        span_s = self._span_s(now)
        halt = self.halts.check(
            now,
            sent=self.sent,
            down_since=self.breaker.waiting_since(now, span_s=span_s),
            trouble=self._trouble,
        )
        if halt is not None:
            return halt
        if pending is not None and self.breaker.verdict(pending) is not Blame.UNKNOWN:
            return None
        admission = self.breaker.admit(now, span_s=span_s)
        if admission.probe:
            # One request decides for the pool; it keeps to the pace and to any pause too.
            self.sent += 1
            return Ticket(self.limiter.reserve(now), now, probe=True, canary=admission.canary)
        if not admission.go:
            return admission.wait_s
        if pending is not None:
            # Not judged yet: wait until it may be (an answer in between wakes the wait).
            return max(_ASK_AGAIN_S, self.breaker.ripe_in(now, span_s=span_s))
        start = self.limiter.try_reserve(now)
        if start is None:
            # Nothing near: ask again a little later (near the end of a pause, if one holds),
            # when the pace may differ.
            return max(_ASK_AGAIN_S, self.limiter.paused_until() - now - _ASK_AGAIN_S)
        self.sent += 1
        return Ticket(start, now)

    def _span_s(self, now: float) -> float:
        rate = self.limiter.current_rate(now)
        if rate == math.inf:
            return OUTAGE_SPAN_S
        return min(_MAX_SPAN_S, max(OUTAGE_SPAN_S, _SPAN_REQUESTS / rate))

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Sleep `seconds`, or until `event` is set, whichever is first."""
        if math.isinf(seconds):
            await event.wait()
            return
        waker = asyncio.ensure_future(event.wait())
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
        record_id: str = "",
        trouble: Trouble | None = None,
    ) -> Effect:
        """Apply one answer (`status` None: no answer) for `record_id` to the pool; what it
        means for that id.

        `down` (or a `trouble` describing it): the failure looks like the API being down
        (refused, timed out, cut off, 5xx).
        """
        now = self._clock()
        limited = status == 429
        report = parse_quota(headers, now_epoch=self._now_epoch()) if headers is not None else None
        self.quota.answered(now, report)
        if down or trouble is not None or status is None:
            # Not a 429 either: the pace measures what the API let through.
            self.limiter.response(ticket.booked_at, rate_limited=False)
        if down or trouble is not None:
            failed = self._failed_down(now, ticket, record_id, trouble or NO_ANSWER)
            # A 503 may say when to come back (maintenance): honoured as a 429's would be.
            asked = self._asked_to_wait(now, headers, status)
            if asked.retry_after_s is None:
                return failed
            return dataclasses.replace(
                failed, retry_after_s=asked.retry_after_s, pooled=asked.pooled, over_cap=asked.over_cap
            )
        self.halts.answered(now, refused=limited)
        if not self.breaker.quiet():
            self._wake.set()  # a spell's verdict, the check's, or the end of an outage
        lasted = self.breaker.answered(now)
        if lasted is not None:
            self._notices.outage_over(self._trouble, lasted)
        if status is not None:
            change = self.limiter.response(ticket.booked_at, rate_limited=limited)
            if change is Change.CUT:
                log.debug("the API answers 429: the pool slows to %.3g/s", self.rate_now())
            elif change is Change.UNDONE:
                log.debug("slowing down did not reduce the 429s: back to %.3g/s", self.rate_now())
        self._apply_quota(now, report)
        return self._asked_to_wait(now, headers, status)

    def _asked_to_wait(self, now: float, headers: Mapping[str, str] | None, status: int | None) -> Effect:
        """What a 429's or 503's Retry-After asks: nothing, this id, the whole pool, or an end."""
        if headers is None or status not in (429, 503):
            return _NO_EFFECT
        wait_s = retry_after_s(headers.get("Retry-After"), now_epoch=self._now_epoch())
        if wait_s is None:
            return _NO_EFFECT
        if self.halts.beyond_cap(wait_s):
            # Hours, say, for a daily quota: no request would be answered before then, so
            # none is sent; the run ends and the same command later goes on.
            self.halts.told_to_wait(
                wait_s,
                now_epoch=self._now_epoch(),
                cause="retry_after",
                what=f"the API asked to wait {seconds_text(wait_s)} (Retry-After),",
            )
            return Effect(retry_after_s=wait_s, over_cap=self.halts.not_retried(wait_s))
        if wait_s > POOL_RETRY_AFTER_S:
            # The whole pool waits, this id with it: its worker need not sit it out alone.
            self._hold(
                now + wait_s, PauseReason.RETRY_AFTER, f"the API asked to wait {wait_s:.0f} s (Retry-After)"
            )
            return Effect(retry_after_s=wait_s, pooled=True)
        return Effect(retry_after_s=wait_s)

    def _failed_down(self, now: float, ticket: Ticket, record_id: str, trouble: Trouble) -> Effect:
        blame = self.breaker.failed(
            now,
            record_id=record_id,
            sent_at=ticket.started_at,
            probe=ticket.probe,
            connected=trouble.connected,
            span_s=self._span_s(now),
        )
        if blame is not Blame.ID:
            self._trouble = trouble
        self._wake.set()
        if blame is Blame.API:
            return Effect(outage=True)
        if blame is Blame.UNKNOWN:
            return Effect(spell=self.breaker.spell)
        return _NO_EFFECT

    def verdict(self, spell: int) -> Blame:
        """Whose the failures of dry spell `spell` were (`Effect.spell`); UNKNOWN until judged."""
        return self.breaker.verdict(spell)

    def served(self, record_id: str, size: int) -> None:
        """`record_id` was fetched and checked: it may be asked for again to tell whether the API is up."""
        self.breaker.served(record_id, size)

    def _apply_quota(self, now: float, report: QuotaReport | None) -> None:
        pace = self.quota.pace(now)
        if pace is None:
            return
        per_s, until = pace
        if per_s > 0:
            gap_s = 1.0 / per_s
            if self.halts.beyond_cap(gap_s):
                # One request per more than the cap is a wait the run would not sit out either:
                # what is left goes at the usual pace, and once it is spent the quota halts the
                # run (below) if its reset is further away than the cap.
                self.limiter.cap(math.inf, -math.inf)
                return
            self.limiter.cap(per_s, until)
            if gap_s > NOTICE_S and report is not None:
                self._notices.spread(now, until, per_s * (until - now), gap_s, now_epoch=self._now_epoch())
        elif report is not None:
            if self.halts.beyond_cap(until - now):
                self.halts.told_to_wait(
                    until - now,
                    now_epoch=self._now_epoch(),
                    cause="quota",
                    what="the API's announced quota is spent",
                )
            else:
                self._hold(until, PauseReason.QUOTA, "the API's announced quota is spent")

    def _hold(self, until: float, reason: PauseReason, why: str) -> None:
        """Hold every worker until `until` (monotonic), and say so when it is long."""
        self.limiter.pause_until(until, reason)
        self._notices.hold(self._clock(), until, reason, why, now_epoch=self._now_epoch())

    # --- for the run --------------------------------------------------------------------------

    def poll(self) -> list[PauseNotice]:
        """What to tell the user now, each notice once: the holds made since the last poll, an
        outage once it has lasted `NOTICE_S`, the end of a hold. The run polls once a second,
        and as soon as `news` returns."""
        breaker = self.breaker
        self._notices.due(
            self._clock(),
            outage_since=breaker.outage_started() if breaker.is_open() else None,
            paused_until=self.limiter.paused_until(),
            trouble=self._trouble,
            max_outage_s=self._max_outage_s,
        )
        return self._notices.take()

    async def news(self, timeout_s: float) -> None:
        """Return once a notice waits to be taken by `poll`, or after `timeout_s`."""
        await self._wait(self._notices.news, timeout_s)

    def report(self) -> PacingReport:
        """How the pacing stands now, as one value."""
        now = self._clock()
        return PacingReport(
            paused_s={str(reason): round(held, 3) for reason, held in self.pauses.paused_s(now).items()},
            rate_per_s=self.limiter.current_rate(now),
            rate_cuts=self.limiter.adaptive.cuts,
            outages=self.breaker.outages,
            outage_checks=self.breaker.checks,
            halt=self.halts.halted,
        )

    def rate_now(self) -> float:
        """The pace allowed now (math.inf: none)."""
        return self.limiter.current_rate(self._clock())

    def __repr__(self) -> str:
        return f"<Pacer sent={self.sent} {self.limiter!r} {self.breaker!r} {self.halts!r} {self._notices!r}>"
