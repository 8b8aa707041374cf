"""Telling the API being down from ids failing, and waiting it out as one pool.

Pure: a state machine over times handed in by the caller.

Connection refused, a failed DNS look-up, timeouts, or 5xx for every id are
the API being down, not each id failing: retrying every id on its own would
spend their attempts in the first seconds of an outage and mark the whole
manifest failed. So after `threshold` such failures in a row (no success in
between, whichever ids they were for) the breaker opens: the pool stops,
one request at a time probes with capped exponential backoff, and the ids it
holds keep their attempts. The first success closes it and everyone goes on.
An outage longer than `max_outage_s` ends the run (exit 6), leaving the ids
not fetched for the next run.

    CLOSED --threshold failures in a row--> OPEN --probe time--> PROBING
      ^                                      ^                     |
      +------------- probe succeeds ---------|--- probe fails -----+
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"


class Admission(NamedTuple):
    """What a worker about to send a request may do: go, wait, or give up."""

    go: bool
    #: Seconds to wait before asking again (when not `go`); math.inf: until the probe answers.
    wait_s: float = 0.0
    #: The outage has lasted longer than --max-outage: stop the run.
    give_up: bool = False
    #: This request is the probe: its outcome decides for the pool.
    probe: bool = False


GO = Admission(True)


class OutageBreaker:
    """Counts failures that look like the API being down and holds the pool while it is."""

    __slots__ = (
        "_consecutive",
        "_delay_s",
        "_first_failure",
        "_max_delay_s",
        "_max_outage_s",
        "_next_probe",
        "_opened_at",
        "_start_delay_s",
        "_threshold",
        "outages",
        "state",
    )

    def __init__(
        self,
        *,
        threshold: int = 5,
        max_outage_s: float = 600.0,
        start_delay_s: float = 1.0,
        max_delay_s: float = 10.0,
    ) -> None:
        if threshold < 1 or max_outage_s <= 0 or start_delay_s <= 0 or max_delay_s < start_delay_s:
            raise ValueError("threshold >= 1, max_outage_s > 0, 0 < start_delay_s <= max_delay_s")
        self._threshold = threshold
        self._max_outage_s = max_outage_s
        self._start_delay_s = start_delay_s
        self._max_delay_s = max_delay_s
        self.state = State.CLOSED
        self._consecutive = 0
        self._first_failure = math.nan
        self._opened_at = math.nan
        self._delay_s = start_delay_s
        self._next_probe = -math.inf
        self.outages = 0

    def admit(self, now: float) -> Admission:
        """May a request start now?"""
        if self.state is State.CLOSED:
            return GO
        if now - self._first_failure > self._max_outage_s:
            return Admission(False, give_up=True)
        if self.state is State.PROBING:
            return Admission(False, wait_s=math.inf)
        if now < self._next_probe:
            return Admission(False, wait_s=self._next_probe - now)
        self.state = State.PROBING
        return Admission(True, probe=True)

    def failed(self, now: float, *, rand: float = 1.0) -> bool:
        """A request failed in a way that says the API may be down; True if the pool now waits.

        `rand` in [0, 1) spreads the probe times (jitter), as `retry.backoff_delay` does.
        """
        if self.state is State.CLOSED:
            if self._consecutive == 0:
                self._first_failure = now
            self._consecutive += 1
            if self._consecutive < self._threshold:
                return False
            self.state = State.OPEN
            self._opened_at = now
            self._delay_s = self._start_delay_s
            self.outages += 1
        elif self.state is State.OPEN:
            # A request sent before the pool stopped: nothing new.
            return True
        else:
            # The probe failed: wait longer before the next one.
            self.state = State.OPEN
            self._delay_s = min(self._max_delay_s, self._delay_s * 2)
        self._next_probe = now + self._delay_s * (0.5 + 0.5 * rand)
        return True

    def succeeded(self, now: float) -> float | None:
        """The API answered; returns how long the outage lasted if this ended one."""
        self._consecutive = 0
        if self.state is State.CLOSED:
            return None
        self.state = State.CLOSED
        return now - self._opened_at

    def is_open(self) -> bool:
        """Whether the pool is waiting for the API to come back."""
        return self.state is not State.CLOSED

    def outage_started(self) -> float:
        """When the failures that opened the breaker began."""
        return self._first_failure

    def __repr__(self) -> str:
        return (
            f"<OutageBreaker state={self.state.value} consecutive={self._consecutive} "
            f"delay={self._delay_s:.1f}s outages={self.outages}>"
        )
