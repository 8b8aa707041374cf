"""run/state: the run's phase and its one stop record, moved on by `stop` and `settle` only."""

from __future__ import annotations

import asyncio

from exporter.errors import ExitCode
from exporter.run.state import Phase, RunState
from exporter.stops import Stop

SIGINT = Stop(ExitCode.SIGINT, "interrupted by SIGINT; run the same command again to continue")
BUDGET = Stop(ExitCode.BUDGET, "--max-requests reached", drain=False)
OUTAGE = Stop(ExitCode.API_UNAVAILABLE, "the API was unavailable", drain=False)
DISK = Stop(ExitCode.ARCHIVE, "cannot write the run's reports in out: No space left on device")


def _woken(state: RunState, *stops: Stop) -> bool:
    """Whether a task waiting in `state.draining()` wakes once `stops` have been given."""

    async def wait() -> bool:
        waiter = asyncio.create_task(state.draining())
        await asyncio.sleep(0)  # the waiter is waiting before the stops come
        for stop in stops:
            state.stop(stop)
        for _ in range(3):
            await asyncio.sleep(0)
        woken = waiter.done()
        waiter.cancel()
        return woken

    return asyncio.run(wait())


def _reason(state: RunState) -> ExitCode | None:
    return None if state.stopping is None else state.stopping.reason


def test_a_new_run_is_fetching_with_no_reason_to_stop() -> None:
    """Before any stop the run fetches, has no stop record and no drain is asked."""
    state = RunState()
    assert (state.phase, state.stopping) == (Phase.FETCHING, None)
    assert not _woken(state)


def test_a_stop_that_lets_requests_finish_winds_down_once() -> None:
    """A budget takes the run to WINDING_DOWN and says once to hand out no more ids; no drain is asked."""
    state = RunState()
    assert state.stop(BUDGET) is True
    assert state.stop(OUTAGE) is False
    assert state.phase is Phase.WINDING_DOWN
    assert state.stopping == BUDGET.merge(OUTAGE)
    assert not _woken(RunState(), BUDGET, OUTAGE)


def test_a_drain_after_winding_down_drains_and_the_first_reason_stays() -> None:
    """Ctrl-C after a budget: the run drains (the waiter wakes); the budget, first, keeps the exit code."""
    state = RunState()
    state.stop(BUDGET)
    assert state.stop(SIGINT) is False
    assert state.phase is Phase.DRAINING
    assert _reason(state) is ExitCode.BUDGET
    assert _woken(RunState(), BUDGET, SIGINT)


def test_draining_never_goes_back_to_winding_down() -> None:
    """A budget after Ctrl-C leaves the run draining and asks nothing more of it."""
    state = RunState()
    state.stop(SIGINT)
    assert state.stop(BUDGET) is False
    assert state.phase is Phase.DRAINING
    assert _reason(state) is ExitCode.SIGINT


def test_after_settling_a_stop_changes_the_reason_not_the_phase() -> None:
    """After the fetch loop, reports that cannot be written make exit code 4; nothing drains or winds down."""
    state = RunState()
    state.settle()
    assert state.stop(BUDGET) is False
    assert state.stop(DISK) is False
    assert state.phase is Phase.SETTLED
    assert _reason(state) is ExitCode.ARCHIVE
    assert state.stopping == BUDGET.merge(DISK)
    settled = RunState()
    settled.settle()
    assert not _woken(settled, SIGINT)


def test_settling_keeps_the_record_of_an_earlier_stop() -> None:
    """A run stopped by Ctrl-C and then settled still ends with the signal's code and message."""
    state = RunState()
    state.stop(SIGINT)
    state.settle()
    assert (state.phase, state.stopping) == (Phase.SETTLED, SIGINT)
