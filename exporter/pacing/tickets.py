"""What the pacer hands a request before it leaves (`Ticket`), and says of its answer (`Effect`).

Values, so that a worker learns from them all it needs (when to start, whether
it probes an outage, how long its id waits, whether the failure counts) without
reading the pacer's state.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    #: The Retry-After is longer than the run waits (the pool halts): why the id is not tried
    #: again in this run ("": it may be).
    over_cap: str = ""

    def own_wait_s(self) -> float:
        """How long the id that got this answer waits on its own before asking for a slot again."""
        return 0.0 if self.pooled or self.retry_after_s is None else self.retry_after_s
