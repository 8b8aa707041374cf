"""One pace for the whole pool: `Pacer`, and the values it hands out, are all the rest imports (`__all__`).

    pacer.py       Pacer: before each request (`start`), after each answer (`finish`), and
                   what the run reads (`poll`, `report`); wires the parts below
    tickets.py     Ticket (a request may start) and Effect (what an answer means for its id)
    limiter.py     the token bucket that books start times, and pool-wide pauses (pure)
    congestion.py  the API's rate limit learnt from its 429s: measure, cut, hold, probe (pure)
    quota.py       RateLimit / X-RateLimit headers, and the pace that spreads a quota (pure)
    outage.py      whose a failure is, an id's or the API's; in an outage, hold the pool and probe (pure)
    trouble.py     what failed when the API looks down, and how to say so
    halts.py       whether and why no more requests may start: the one rule (pure)
    pauses.py      seconds the pool was held, by reason: the one record of paused time (pure)
    notices.py     what the user is told of holds, as values the run takes (PauseNotice)
    waits.py       a wait and when it ends, for a person and for summary.json, whatever the number

    the fetcher --start/finish--> Pacer --> limiter (congestion, quota's pace)
                                        --> breaker (outage) --books--> pauses <--books-- limiter
                                        --> halts, notices
    the run <--poll: [PauseNotice], report(): PacingReport-- Pacer

Everything below the pacer is pure arithmetic on times handed in, so that
tests run it against simulated servers in virtual time (`tests/pacing_sim.py`).
Code outside the package imports this module only; tests of the pure parts
import the submodules.
"""

from .halts import Halt, HaltDetail
from .notices import PauseNotice
from .outage import Blame
from .pacer import Pacer, PacingReport
from .pauses import PauseReason
from .tickets import Effect, Ticket
from .trouble import Trouble

__all__ = [
    "Blame",
    "Effect",
    "Halt",
    "HaltDetail",
    "Pacer",
    "PacingReport",
    "PauseNotice",
    "PauseReason",
    "Ticket",
    "Trouble",
]
