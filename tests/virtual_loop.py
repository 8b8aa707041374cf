"""An asyncio event loop whose clock jumps ahead instead of sleeping: timing tests that are instant and exact.

`run_virtual(main)` runs a coroutine on a `VirtualTimeLoop`: `loop.time()`
starts at 0 and, whenever every task waits and nothing is ready, moves on to
the next timer at once, so `asyncio.sleep(5)` and `asyncio.wait_for(..., 5)`
take no wall-clock time and end exactly 5 virtual seconds later. Code under
test gets `loop.time` as its injected clock. Only for code that waits on
timers and other tasks, not on sockets or threads: the loop never blocks, so a
wait with no timer left is a deadlock and raises instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.BaseSelector):
    """The loop's selector: polls the real one without blocking, and moves the clock instead of sleeping."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("every task waits and no timer is set: the code under test would hang")
        self._loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock that starts at 0 and jumps to the next timer when idle."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock on; the loop calls this instead of sleeping."""
        self._now += seconds

    def __repr__(self) -> str:
        return f"<VirtualTimeLoop now={self._now:.6f}>"


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh VirtualTimeLoop, then close it."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
