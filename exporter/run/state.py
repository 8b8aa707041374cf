"""Where a run is, and why it ends early: one value, changed by two transitions.

    FETCHING  --stop (lets requests finish)-->  WINDING_DOWN  --stop (drains)-->  DRAINING
        |                                                                           ^
        +---------------------------stop (drains)-----------------------------------+
    any of them  --settle-->  SETTLED

- FETCHING: no reason to stop yet.
- WINDING_DOWN: no id is handed out any more; the requests in flight finish.
- DRAINING: the requests in flight are abandoned; what was fetched is committed.
- SETTLED: the fetch loop is over; the exit code is decided by the stop record
  as it then stands, and the reports are being written.

A phase never goes back: `Stop.merge` keeps `drain` once any reason asked for
it, and nothing leaves SETTLED. After SETTLED a stop still folds into the
record (reports that cannot be written make the exit code 4) but changes the
phase no more; whether a signal may stop the run at all is the run's rule
(`pipeline._Run.on_signal`), read from the phase.

The waiters of `draining()` wake once, on the one transition into DRAINING:
the event is part of this value, not a flag kept beside it.
"""

from __future__ import annotations

import asyncio
import enum

from exporter.stops import Stop


class Phase(enum.Enum):
    """Where the run is; see the module's docstring for what each phase means."""

    FETCHING = "fetching"
    WINDING_DOWN = "winding-down"
    DRAINING = "draining"
    SETTLED = "settled"


class RunState:
    """The run's phase and its one stop record; `stop` and `settle` are the only ways to change them."""

    __slots__ = ("_drained", "_phase", "_stop")

    def __init__(self) -> None:
        self._phase = Phase.FETCHING
        #: Why the run ends early (None: it has not been asked to).
        self._stop: Stop | None = None
        # An asyncio.Event binds to a loop only when first awaited, so the state is
        # usable (and testable) before one runs.
        self._drained = asyncio.Event()

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def stopping(self) -> Stop | None:
        """Why the run ends early, all reasons folded by `Stop.merge`; None if it was not asked to."""
        return self._stop

    def stop(self, stop: Stop) -> bool:
        """Fold `stop` into the record and move the phase on; True when the run must now hand out
        no more ids (the one stop that takes it from FETCHING to WINDING_DOWN)."""
        merged = stop if self._stop is None else self._stop.merge(stop)
        self._stop = merged
        before = self._phase
        if before is Phase.SETTLED:
            return False
        self._phase = Phase.DRAINING if merged.drain else Phase.WINDING_DOWN
        if self._phase is Phase.DRAINING:
            self._drained.set()
        return before is Phase.FETCHING and self._phase is Phase.WINDING_DOWN

    def settle(self) -> None:
        """The fetch loop is over (or never ran): from now on a stop changes the record, not the phase."""
        self._phase = Phase.SETTLED

    async def draining(self) -> None:
        """Returns once a stop has asked the run to drain (at once if one has)."""
        await self._drained.wait()

    def __repr__(self) -> str:
        return f"<RunState {self._phase.value} stopping={self._stop!r}>"
