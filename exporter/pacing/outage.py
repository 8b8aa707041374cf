"""Telling the API being down from a few ids failing, and waiting an outage out as one pool.

Pure: a state machine over times and ids handed in by the caller.

Connection refused, a failed DNS look-up, timeouts, resets or 5xx for every id
are the API being down, not each id failing: retrying every id on its own
would spend their attempts in the first seconds of an outage and mark the
whole manifest failed. But a count of failures in a row cannot tell that from
three broken ids at the end of a run (failing twice each, they made six in a
row, and the run waited --max-outage for an API that had answered a second
earlier). What tells them apart is whether the API answers anyone else:

1. A failure of a request that an answer overtook (the API answered another
   request after this one left) is the id's own: it uses one of its attempts.
2. A failure with no answer since its request left starts (or extends) a
   *dry spell*, and uses an attempt only *provisionally*: an id whose
   attempts are all used, some provisionally, waits for the spell's verdict
   before it fails.
3. A spell ends at the first answer from the API: it was up, the failures were
   the ids' own and their attempts stand. A spell that lasts `span_s` with no
   answer at all is *checked*: one request asks again for a recording the API
   served earlier in this run (the *canary*; its record is dropped). Served,
   that is an answer as above; failed too, an outage. This settles the tail of
   a run, where only the broken ids are left to fail and nothing else answers:
   the canary is served, so they fail with their reason. (Counting distinct
   failing ids cannot: three broken ids are three ids, and so are the last
   three ids of a run whose API just went down. Only an id known to be good
   says whether the API is up.)
4. Before anything was served in this run there is no canary: a ripe spell is
   an outage when failures came from at least `distinct` ids (each failure to
   connect counts as one: the id never left), and fewer are those ids' own.
5. In an outage the pool stops and one request at a time probes (the canary,
   if there is one, so a broken id never decides), with capped exponential
   backoff; provisional attempts are given back. The first answer ends it.
   Whether it has lasted too long (--max-outage, counted from the start of its
   spell: `waiting_since`) is for `halts.HaltRule` to say, with the run's other
   reasons to end; the time it held the pool is booked in `pauses.PauseLedger`.

What this cannot tell: a cache in front of the API that serves the canary
while the origin is down (the failing ids fail, and the next run retries
them), and broken ids before anything was served (rule 4).

    CLOSED --spell ripe, canary--> CHECK_DUE --admit--> CHECKING --check fails--> OPEN
      ^  ^     spell ripe, no canary, >= `distinct` ids ------------------------->  |
      |  +---- the check (or anything) answered                                probe time
      +------- a probe (or anything) answered <--------------- PROBING <-------------+
                                                                  +-- probe fails --> OPEN
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .pauses import PauseLedger, PauseReason


class State(enum.Enum):
    CLOSED = "closed"
    #: A spell is ripe: the next request to start is the check.
    CHECK_DUE = "check_due"
    #: The check is out; everyone else waits for it.
    CHECKING = "checking"
    #: An outage: everyone waits for the next probe time.
    OPEN = "open"
    #: An outage, and its probe is out.
    PROBING = "probing"


class Blame(enum.Enum):
    """Whose a failure is, as far as is known when it comes in."""

    #: The id's own: it uses one of its attempts.
    ID = "id"
    #: Not known yet (a dry spell): it uses an attempt provisionally, until the spell's verdict.
    UNKNOWN = "unknown"
    #: The API is down: it uses no attempt, and the pool waits.
    API = "api"


class Admission(NamedTuple):
    """What a worker about to send a request may do: go, or wait."""

    go: bool
    #: Seconds to wait before asking again (when not `go`); math.inf: until the probe answers.
    wait_s: float = 0.0
    #: This request is a check or a probe: its outcome decides for the pool.
    probe: bool = False
    #: The id to ask for instead of the worker's own (the canary), if there is one.
    canary: str | None = None


GO = Admission(True)

#: Known-good ids kept as canaries; the smallest recording among them is asked for.
_CANARIES = 8
#: Spells remembered as outages: a provisional attempt older than that many outages counts.
_OUTAGE_SPELLS = 1024


class OutageBreaker:
    """Judges each failure (the id's, or the API's) and holds the pool while the API is down."""

    __slots__ = (
        "_canaries",
        "_delay_s",
        "_distinct",
        "_dry_since",
        "_last_answer",
        "_max_delay_s",
        "_next_probe",
        "_outage_since",
        "_outage_spells",
        "_pauses",
        "_rand",
        "_span_s",
        "_spell_ids",
        "_spell_open",
        "_start_delay_s",
        "_unconnected",
        "checks",
        "outages",
        "spell",
        "state",
    )

    def __init__(
        self,
        *,
        span_s: float = 2.0,
        distinct: int = 3,
        start_delay_s: float = 1.0,
        max_delay_s: float = 10.0,
        pauses: PauseLedger | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if span_s <= 0 or distinct < 1 or not 0 < start_delay_s <= max_delay_s:
            raise ValueError("span_s > 0, distinct >= 1, 0 < start_delay_s <= max_delay_s")
        self._span_s = span_s
        self._distinct = distinct
        self._start_delay_s = start_delay_s
        self._max_delay_s = max_delay_s
        self._rand = rand
        #: Where the time an outage holds the pool is booked.
        self._pauses = pauses if pauses is not None else PauseLedger()
        self.state = State.CLOSED
        self._last_answer = -math.inf
        self._canaries: deque[tuple[int, str]] = deque(maxlen=_CANARIES)
        #: Numbers the dry spells; a provisional attempt is judged by its spell's verdict.
        self.spell = 0
        self._spell_open = False
        self._dry_since = math.nan
        self._spell_ids: set[str] = set()
        self._unconnected = 0  # failures of the spell that never reached the API
        self._outage_spells: deque[int] = deque(maxlen=_OUTAGE_SPELLS)
        self._outage_since = math.nan
        self._delay_s = start_delay_s
        self._next_probe = -math.inf
        #: Outages declared, and checks sent (canary requests), for the summary.
        self.outages = 0
        self.checks = 0

    # --- what the pool learns ------------------------------------------------------------------

    def served(self, record_id: str, size: int) -> None:
        """`record_id` was fetched and checked (`size` bytes): a canary for later checks."""
        self._canaries.append((size, record_id))

    def answered(self, now: float) -> float | None:
        """The API answered (anything but a failure that says it is down); how long the outage
        lasted if this ended one."""
        self._last_answer = now
        lasted = None
        if self.state in (State.OPEN, State.PROBING):
            lasted = now - self._outage_since
            self._pauses.release(PauseReason.OUTAGE, now)
        self._spell_open = False  # the failures of the spell were the ids' own
        self.state = State.CLOSED
        return lasted

    def failed(
        self,
        now: float,
        *,
        record_id: str,
        sent_at: float,
        probe: bool = False,
        connected: bool = True,
        span_s: float | None = None,
    ) -> Blame:
        """A request sent at `sent_at` for `record_id` failed as the API down would; whose it is.

        `probe`: the request was the check or a probe. `connected` False: no connection to
        the API was made, so the id never left. `span_s` overrides how long a spell lasts
        before it is judged (the pacer lengthens it at slow paces).
        """
        state = self.state
        if probe and state in (State.CHECKING, State.PROBING):
            self._open(now, first=state is State.CHECKING)
            return Blame.API
        if state in (State.OPEN, State.PROBING):
            return Blame.API  # sent before the pool stopped
        if sent_at < self._last_answer:
            # The API answered someone after this request left: it was up, this failed alone.
            return Blame.ID
        if not self._spell_open:
            self.spell += 1
            self._spell_open = True
            self._dry_since = sent_at
            self._spell_ids.clear()
            self._unconnected = 0
        self._dry_since = min(self._dry_since, sent_at)
        if not connected:
            self._unconnected += 1
        elif not probe:
            self._spell_ids.add(record_id)
        self._ripen(now, span_s)
        if self.state is State.OPEN:
            return Blame.API
        return Blame.UNKNOWN if self._spell_open else Blame.ID

    def verdict(self, spell: int) -> Blame:
        """Whose the provisional failures of `spell` were: UNKNOWN until it is judged."""
        if spell in self._outage_spells:
            return Blame.API
        if spell == self.spell and self._spell_open:
            return Blame.UNKNOWN
        return Blame.ID

    # --- before a request ----------------------------------------------------------------------

    def admit(self, now: float, *, span_s: float | None = None) -> Admission:
        """May a request start now?"""
        if self.state is State.CLOSED:
            self._ripen(now, span_s)
        state = self.state
        if state is State.CLOSED:
            return GO
        if state is State.CHECK_DUE:
            self.state = State.CHECKING
            self.checks += 1
            return Admission(True, probe=True, canary=self.canary())
        if state is not State.OPEN:
            return Admission(False, wait_s=math.inf)
        if now < self._next_probe:
            return Admission(False, wait_s=self._next_probe - now)
        self.state = State.PROBING
        return Admission(True, probe=True, canary=self.canary())

    def waiting_since(self, now: float, *, span_s: float | None = None) -> float | None:
        """Since when the pool has waited on the API (the first unanswered request of the spell
        being checked, or of the outage); None while requests may go. A spell that has lasted
        the span is judged first, as `admit` would."""
        if self.state is State.CLOSED:
            self._ripen(now, span_s)
        if self.state in (State.CLOSED, State.CHECK_DUE):
            return None
        return self.outage_started()

    def ripe_in(self, now: float, *, span_s: float | None = None) -> float:
        """Seconds until the open spell may be judged (0: now, or there is none)."""
        if not self._spell_open:
            return 0.0
        return max(0.0, self._dry_since + self._span(span_s) - now)

    def canary(self) -> str | None:
        """The smallest of the recordings served last, to ask for again; None before any."""
        return min(self._canaries)[1] if self._canaries else None

    def quiet(self) -> bool:
        """Whether an answer now would change nothing: no spell, check or outage under way."""
        return self.state is State.CLOSED and not self._spell_open

    def is_open(self) -> bool:
        """Whether an outage holds the pool (a check does too, briefly, without being one yet)."""
        return self.state in (State.OPEN, State.PROBING)

    def outage_started(self) -> float:
        """When the outage (or the spell being checked) began: its first request with no answer."""
        return self._outage_since if self.is_open() else self._dry_since

    # --- the transitions -----------------------------------------------------------------------

    def _span(self, span_s: float | None) -> float:
        return self._span_s if span_s is None else max(self._span_s, span_s)

    def _ripen(self, now: float, span_s: float | None) -> None:
        """Judge the open spell once it has lasted the span: check it, or decide without a canary."""
        if self.state is not State.CLOSED or not self._spell_open:
            return
        if now - self._dry_since < self._span(span_s):
            return
        if self._canaries:
            self.state = State.CHECK_DUE
        elif len(self._spell_ids) + self._unconnected >= self._distinct:
            self._open(now, first=True)
        else:
            self._spell_open = False  # too few ids to say more than that they failed

    def _open(self, now: float, *, first: bool) -> None:
        if first:
            self.outages += 1
            self._outage_since = self._dry_since
            self._pauses.hold(PauseReason.OUTAGE, self._outage_since, now=now)
            self._outage_spells.append(self.spell)
            self._spell_open = False
            self._spell_ids.clear()
            self._delay_s = self._start_delay_s
        else:
            self._delay_s = min(self._max_delay_s, self._delay_s * 2)
        self.state = State.OPEN
        # Jittered, as `retry.backoff_delay` is, so runs that failed together do not probe together.
        self._next_probe = now + self._delay_s * (0.5 + 0.5 * self._rand())

    def __repr__(self) -> str:
        spell = f"spell={self.spell}{'(open)' if self._spell_open else ''}"
        return (
            f"<OutageBreaker state={self.state.value} {spell} "
            f"delay={self._delay_s:.1f}s outages={self.outages} checks={self.checks}>"
        )
