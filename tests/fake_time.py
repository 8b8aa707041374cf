"""A clock for code that takes `clock`, `now_epoch` and `sleep`: it moves only when that code sleeps.

Monotonic seconds from `now` (0 unless given) and Unix time from `epoch0`; a sleep
moves both at once and is written down in `sleeps`, so waits are instant and exact.
For code that waits on the event loop's timers, use `virtual_loop.run_virtual` instead.
"""

from __future__ import annotations

#: Unix time at the fake clock's 0: 2027-01-15, far from any edge of the calendar.
EPOCH0 = 1_800_000_000.0


class FakeTime:
    """The clock, wall clock and sleep of the code under test, moved only by its sleeps (or the test)."""

    def __init__(self, now: float = 0.0, *, epoch0: float = EPOCH0) -> None:
        self.now = now
        self.epoch0 = epoch0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def epoch(self) -> float:
        return self.epoch0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __repr__(self) -> str:
        return f"<FakeTime now={self.now:.6f} sleeps={len(self.sleeps)}>"
