"""jobs.JobSource: parked ids come back when due, workers never end while an id may still come back.

Timing is tested on a virtual-time loop (`virtual_loop.run_virtual`) with the
source on the loop's clock: waits take no wall-clock time and end at exact
virtual instants.
"""

from __future__ import annotations

import asyncio

import pytest
from virtual_loop import run_virtual

from exporter.jobs import Job, JobSource
from exporter.outcomes import Tries


def _source(*, max_parked: int) -> JobSource:
    """A source on the running (virtual) loop's clock."""
    return JobSource(queue_size=4, max_parked=max_parked, clock=asyncio.get_running_loop().time)


def test_a_parked_id_comes_back_when_due_and_new_ids_go_first() -> None:
    """While an id waits out its time, workers take the manifest's ids; then the parked one, tries kept."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        jobs = _source(max_parked=8)
        await jobs.put("a")
        await jobs.put("b")
        first = await jobs.next()
        assert first == Job("a")
        jobs.park(Job("a", Tries(sent=1)), loop.time() + 0.2)
        jobs.done()
        assert await jobs.next() == Job("b")
        assert loop.time() == 0.0, "a new id waited for the parked one"
        jobs.done()
        again = await jobs.next()
        assert again == Job("a", Tries(sent=1))
        assert loop.time() == pytest.approx(0.2)

    run_virtual(main())


def test_the_end_comes_only_when_nothing_is_parked_or_held() -> None:
    """With the manifest read, a worker waits while another holds an id that may be parked again."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        jobs = _source(max_parked=8)
        await jobs.put("a")
        jobs.fed_all()
        held = await jobs.next()
        assert held == Job("a")
        idle = asyncio.create_task(jobs.next())
        await asyncio.sleep(0.05)
        assert not idle.done()  # "a" may still come back
        jobs.park(Job("a", Tries(sent=1)), loop.time() + 0.05)
        jobs.done()
        assert await asyncio.wait_for(idle, 1.0) == Job("a", Tries(sent=1))
        assert loop.time() == pytest.approx(0.1)
        last = asyncio.create_task(jobs.next())
        jobs.done()
        assert await asyncio.wait_for(last, 1.0) is None

    run_virtual(main())


def test_parked_ids_are_bounded() -> None:
    """With max_parked ids parked, a worker waits for the earliest rather than take a new id."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        jobs = _source(max_parked=2)
        for name in ("a", "b", "new"):
            await jobs.put(name)
        for name, due in (("a", 0.1), ("b", 0.2)):
            assert await jobs.next() == Job(name)
            jobs.park(Job(name, Tries(sent=1)), due)
            jobs.done()
        assert await jobs.next() == Job("a", Tries(sent=1))
        assert loop.time() == pytest.approx(0.1)

    run_virtual(main())


def test_close_ends_every_worker_and_leaves_the_rest() -> None:
    """close() (a budget or an outage ended the run): waiting workers get None, queued ids stay unfetched."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        jobs = _source(max_parked=8)
        waiting = asyncio.create_task(jobs.next())
        await asyncio.sleep(0.01)
        jobs.park(Job("x"), loop.time() + 10)
        jobs.close()
        assert await asyncio.wait_for(waiting, 1.0) is None
        assert await jobs.next() is None
        assert jobs.parked == 1
        assert loop.time() == pytest.approx(0.01), "close waited for the parked id"

    run_virtual(main())
