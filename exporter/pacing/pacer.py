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

Every hold longer than `NOTICE_S` is told once through `notice` (a line on
stderr, the progress bar), with its end's date when that is not today, and
every held second is booked to its reason for summary.json. A halt says why in
one line (`halt_message`) and in summary.json (`halt_report`). No header value
can make any of this raise: the times a server announces are bounded by the
cap before they are waited for, and written by `waits.py`, which never raises.
The clock, the wall clock, the sleep and randomness are injected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from exporter.config import LimitSettings, RetrySettings
from exporter.errors import Cause
from exporter.retry import retry_after_s

from .congestion import AdaptiveRate, Change
from .limiter import RateLimiter
from .outage import Blame, OutageBreaker
from .quota import QuotaReport, QuotaTracker, parse_quota
from .waits import clock_text, duration_text, seconds_text, until_text, utc_text

log = logging.getLogger(__name__)

#: Holds longer than this are told to the user.
NOTICE_S = 5.0
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
#: The part of a failure's text kept for notices, messages and summary.json.
_ERROR_CHARS = 300


class PauseReason(enum.StrEnum):
    """Why the pool was held; the keys of summary.json's `pacing.paused_s`."""

    RETRY_AFTER = "retry_after"
    QUOTA = "quota"
    OUTAGE = "outage"


class Halt(enum.Enum):
    """Why no more requests may start."""

    MAX_REQUESTS = "max_requests"
    API_UNAVAILABLE = "api_unavailable"
    #: The API asked to wait longer than `RetrySettings.retry_after_max_s` (a Retry-After, or
    #: an announced quota spent until then).
    TOLD_TO_WAIT = "told_to_wait"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request allowed to start: when it may, when it asked, and whether it probes an outage."""

    started_at: float
    #: When the slot was booked: a request booked before a rate cut says nothing about the new rate.
    booked_at: float
    #: The check of a dry spell or the probe of an outage: its outcome decides for the pool.
    probe: bool = False
    #: Ask for this id instead of the worker's own (a recording served earlier: the canary).
    canary: str | None = None


@dataclass(frozen=True, slots=True)
class Trouble:
    """A failure that, met by every request, would mean the API is down: what to tell about it."""

    error: str
    cause: Cause = Cause.API
    #: False when no connection to the API was made: the id never left.
    connected: bool = True


@dataclass(frozen=True, slots=True)
class Effect:
    """What one answer means for the id that got it."""

    #: The server's Retry-After (seconds; None when it sent none): never retry sooner.
    retry_after_s: float | None = None
    #: The failure was the API being down: it does not use up one of the id's attempts.
    outage: bool = False
    #: The Retry-After holds the whole pool, so the id's own retry need not wait for it apart.
    pooled: bool = False
    #: The failure came in a dry spell not judged yet (this is its number; 0: none): the
    #: attempt it used is provisional until `Pacer.verdict(spell)` says whose it was.
    spell: int = 0

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
    #: `until_epoch` for a person: a time of day, with the date when not today.
    until_text: str = ""
    #: Not held, but slowed to a few requests (a quota spread thin).
    slowed: bool = False

    def status(self) -> str | None:
        """A few words for the progress bar while the hold lasts; None once it is over."""
        if self.ended:
            return None
        state = "slowed" if self.slowed else "paused"
        if not self.until_text:
            return f"{state} ({self.reason.value})"
        return f"{state} ({self.reason.value}) {self.until_text}"


Notice = Callable[[PauseNotice], None]


def _no_notice(notice: PauseNotice) -> None:
    pass


@dataclass(frozen=True, slots=True)
class HaltDetail:
    """Why the pool halted, for the closing line and summary.json's `pacing.halt`."""

    halt: Halt
    #: What it is blamed on: `api`, `proxy`, `tls` (`errors.Cause`), `rate_limited` (nothing but
    #: 429s), `retry_after`, `quota`, or `max_requests`.
    cause: str
    message: str
    #: When the API said it would answer again (Unix time), for a halt on its word.
    resume_epoch: float | None = None
    wait_s: float | None = None


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
        self.breaker = OutageBreaker(max_outage_s=retry.max_outage_s, span_s=OUTAGE_SPAN_S, rand=rand)
        self._max_requests = max_requests
        self._notice = notice
        self._clock = clock
        self._now_epoch = now_epoch
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._max_outage_s = retry.max_outage_s
        self._retry_after_max_s = retry.retry_after_max_s
        self._outage_s = 0.0
        self._announced_until = -math.inf
        # The reason of the hold last told, and when it ends, until its end is told too.
        self._shown: PauseReason | None = None
        self._shown_until = -math.inf
        self._outage_told = False
        # Since when every answer has been a 429 (NaN: the last answer was not one).
        self._refused_since = math.nan
        # The last failure that may be the API's: what notices and the halt name.
        self._trouble = Trouble("no answer")
        self.sent = 0
        self.halted: Halt | None = None
        self.halt_detail: HaltDetail | None = None

    # --- before a request ---------------------------------------------------------------------

    async def start(self, *, pending: int | None = None) -> Ticket | Halt | None:
        """Wait until a request may start; a Halt when none may any more.

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

    @overload
    def reserve(self, now: float) -> Ticket | Halt | float: ...

    @overload
    def reserve(self, now: float, *, pending: int | None) -> Ticket | Halt | float | None: ...

    def reserve(self, now: float, *, pending: int | None = None) -> Ticket | Halt | float | None:
        """A request that wants to start at `now`: its ticket (it may start at `started_at`),
        a Halt, seconds to wait before asking again (math.inf: until a probe answers), or, with
        `pending`, None once that spell's verdict is in."""
        if self.halted is not None:
            return self.halted
        if self._max_requests is not None and self.sent >= self._max_requests:
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
        if pending is not None and self.breaker.verdict(pending) is not Blame.UNKNOWN:
            return None
        span_s = self._span_s(now)
        admission = self.breaker.admit(now, span_s=span_s)
        if admission.give_up:
            return self._halt(Halt.API_UNAVAILABLE, self._trouble.cause.value, self._outage_message())
        if admission.probe:
            # One request decides for the pool; it keeps to the pace and to any pause too.
            self.sent += 1
            return Ticket(self.limiter.reserve(now), now, probe=True, canary=admission.canary)
        if pending is not None:
            if self.breaker.verdict(pending) is not Blame.UNKNOWN:
                return None
            if admission.go:
                # Not judged yet: wait until it may be (an answer in between wakes the wait).
                return max(_ASK_AGAIN_S, self.breaker.ripe_in(now, span_s=span_s))
        if not admission.go:
            return admission.wait_s
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
            failed = self._failed_down(now, ticket, record_id, trouble or Trouble("no answer"))
            # A 503 may say when to come back (maintenance): honoured as a 429's would be.
            asked = self._asked_to_wait(now, headers, status)
            if asked.retry_after_s is None:
                return failed
            return dataclasses.replace(failed, retry_after_s=asked.retry_after_s, pooled=asked.pooled)
        if limited:
            if math.isnan(self._refused_since):
                self._refused_since = now
        else:
            self._refused_since = math.nan
        if not self.breaker.quiet():
            self._wake.set()  # a spell's verdict, the check's, or the end of an outage
        lasted = self.breaker.answered(now)
        if lasted is not None:
            self._end_outage(now, lasted)
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
        wait_s = None
        if headers is not None and status in (429, 503):
            wait_s = retry_after_s(headers.get("Retry-After"), now_epoch=self._now_epoch())
        if wait_s is not None and wait_s > self._retry_after_max_s:
            # Hours, say, for a daily quota: no request would be answered before then, so
            # none is sent; the run ends and the same command later goes on.
            self._told_to_wait(
                wait_s, "retry_after", f"the API asked to wait {seconds_text(wait_s)} (Retry-After),"
            )
            return Effect(retry_after_s=wait_s)
        if wait_s is not None and wait_s > POOL_RETRY_AFTER_S:
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
        return Effect()

    def verdict(self, spell: int) -> Blame:
        """Whose the failures of dry spell `spell` were (`Effect.spell`); UNKNOWN until judged."""
        return self.breaker.verdict(spell)

    def served(self, record_id: str, size: int) -> None:
        """`record_id` was fetched and checked: it may be asked for again to tell whether the API is up."""
        self.breaker.served(record_id, size)

    def _end_outage(self, now: float, lasted_s: float) -> None:
        self._outage_s += lasted_s
        if self._outage_told:
            self._outage_told = False
            self._notice(
                PauseNotice(
                    PauseReason.OUTAGE,
                    f"{self._down_subject()} answers again after {lasted_s:.0f} s; resuming",
                    ended=True,
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
                        f"{self._looks_down()}: the pool waits and probes with one request at a time, "
                        f"for at most {seconds_text(self._max_outage_s)} (--max-outage)",
                    )
                )
        elif self._shown is not None and now >= max(self._shown_until, self.limiter.paused_until()):
            reason, self._shown = self._shown, None
            self._notice(PauseNotice(reason, "", ended=True))

    def _apply_quota(self, now: float, report: QuotaReport | None) -> None:
        pace = self.quota.pace(now)
        if pace is None:
            return
        per_s, until = pace
        if per_s > 0:
            gap_s = 1.0 / per_s
            if gap_s > self._retry_after_max_s:
                # One request per more than the cap is a wait the run would not sit out either:
                # what is left goes at the usual pace, and once it is spent the quota halts the
                # run (below) if its reset is further away than the cap.
                self.limiter.cap(math.inf, -math.inf)
                return
            self.limiter.cap(per_s, until)
            if gap_s > NOTICE_S and report is not None:
                self._tell_spread(now, until, per_s * (until - now), gap_s)
        elif report is not None:
            if until - now > self._retry_after_max_s:
                self._told_to_wait(until - now, "quota", "the API's announced quota is spent")
            else:
                self._hold(until, PauseReason.QUOTA, "the API's announced quota is spent")

    def _tell_spread(self, now: float, until: float, left: float, gap_s: float) -> None:
        """Say why nothing is sent for a while: a quota spread thin over the rest of its window."""
        if until <= self._announced_until + NOTICE_S:
            return
        self._announced_until = until
        self._shown, self._shown_until = PauseReason.QUOTA, until
        until_epoch = self._now_epoch() + (until - now)
        when = until_text(until_epoch, now_epoch=self._now_epoch())
        count = round(left)
        self._notice(
            PauseNotice(
                PauseReason.QUOTA,
                f"the API's announced quota leaves {count} request{'' if count == 1 else 's'} {when}: "
                f"one every {duration_text(gap_s)}, nothing in between",
                _writable(until_epoch),
                until_text=when,
                slowed=True,
            )
        )

    def _hold(self, until: float, reason: PauseReason, why: str) -> None:
        """Hold every worker until `until` (monotonic), and say so when it is long."""
        self.limiter.pause_until(until, reason)
        now = self._clock()
        if until - now > NOTICE_S and until > self._announced_until + NOTICE_S:
            self._announced_until = until
            self._shown, self._shown_until = reason, until
            until_epoch = self._now_epoch() + (until - now)
            when = until_text(until_epoch, now_epoch=self._now_epoch())
            resume = when.removeprefix("until ")
            self._notice(
                PauseNotice(reason, f"{why}; resuming at {resume}", _writable(until_epoch), until_text=when)
            )

    # --- halts ----------------------------------------------------------------------------------

    def _halt(
        self,
        halt: Halt,
        cause: str,
        message: str,
        *,
        resume_epoch: float | None = None,
        wait_s: float | None = None,
    ) -> Halt:
        """No request starts any more; the first reason is the one told."""
        if self.halted is None:
            self.halted = halt
            self.halt_detail = HaltDetail(halt, cause, message, resume_epoch, wait_s)
        return self.halted

    def _told_to_wait(self, wait_s: float, cause: str, what: str) -> None:
        """Halt for a wait longer than the cap, saying until when (the date, unless today)."""
        now_epoch = self._now_epoch()
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
            resume_epoch=resume,
            wait_s=wait_s,
        )

    def halt_message(self) -> str:
        """One line for the user: why no more requests start, blaming what failed."""
        detail = self.halt_detail
        return "" if detail is None else detail.message

    def halt_report(self) -> dict[str, Any] | None:
        """summary.json's `pacing.halt`: why the pool halted, what it blames, when the API said to
        come back (None when the pool did not halt)."""
        detail = self.halt_detail
        if detail is None:
            return None
        return {
            "reason": detail.halt.value,
            "cause": detail.cause,
            "message": detail.message,
            "resume_at": None if detail.resume_epoch is None else utc_text(detail.resume_epoch),
            "wait_s": None if detail.wait_s is None else round(detail.wait_s, 3),
        }

    def _down_subject(self) -> str:
        cause = self._trouble.cause
        if cause is Cause.PROXY:
            return "the proxy"
        if cause is Cause.TLS:
            return "TLS to the API"
        return "the API"

    def _looks_down(self) -> str:
        error = self._trouble.error[:_ERROR_CHARS]
        if self._trouble.cause is Cause.API:
            return f"the API looks down (no answer, or 5xx, for every request; last: {error})"
        return f"{self._down_subject()} fails every request ({error})"

    def _outage_message(self) -> str:
        error = self._trouble.error[:_ERROR_CHARS]
        longer = f"for longer than --max-outage ({seconds_text(self._max_outage_s)})"
        kept = "what was fetched is kept"
        cause = self._trouble.cause
        if cause is Cause.PROXY:
            return (
                f"the proxy failed every request {longer}: {error}; the API itself may be up: check the "
                f"proxy (--proxy, HTTPS_PROXY) and run the same command again; {kept}"
            )
        if cause is Cause.TLS:
            return (
                f"TLS to the API failed for every request {longer}: {error}; check the API's certificate, "
                f"--ca-cert and any proxy, then run the same command again; {kept}"
            )
        return (
            f"the API was unavailable {longer}; last error: {error}; {kept}: run the same command again "
            "when it is back"
        )

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


def _writable(epoch: float) -> float | None:
    """`epoch` if a log line can write it as a date (RFC 3339), else None."""
    return epoch if utc_text(epoch) is not None else None
