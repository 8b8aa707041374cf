"""Unit tests for `exporter.pacing.limiter`: GCRA spacing, pauses and 429 back-off, on a fake clock."""

from __future__ import annotations

import heapq
import math
import random

import pytest
from fake_time import FakeTime
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.pacing.limiter import RateLimiter


def make_limiter(time: FakeTime, *, rate_per_s: float, burst: int = 1) -> RateLimiter:
    return RateLimiter(rate_per_s=rate_per_s, burst=burst, clock=time.clock)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_per_s": -1.0},
        {"rate_per_s": 1.0, "burst": 0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    """A negative rate or an empty burst is refused at construction."""
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


# --- spacing -------------------------------------------------------------------------------------


def test_unlimited_grants_immediately() -> None:
    """Rate 0 means no limit: every request may start at the moment it asks."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0)
    assert [limiter.reserve(0.0) for _ in range(1_000)] == [0.0] * 1_000
    assert limiter.reserve(3.5) == 3.5
    assert limiter.current_rate(3.5) == math.inf


def test_rate_10_burst_1_spaces_starts_by_a_tenth() -> None:
    """At 10/s with no burst, requests asked for together start 0.1 s apart."""
    limiter = make_limiter(FakeTime(), rate_per_s=10)
    starts = [limiter.reserve(0.0) for _ in range(5)]
    assert starts == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_burst_5_then_spacing() -> None:
    """At 10/s with burst 5 and a full bucket, five requests start at once and the rest 0.1 s apart."""
    limiter = make_limiter(FakeTime(), rate_per_s=10, burst=5)
    limiter.reserve(-10.0)  # long ago: the bucket has filled since
    starts = [limiter.reserve(0.0) for _ in range(8)]
    assert starts == pytest.approx([0.0] * 5 + [0.1, 0.2, 0.3])


def test_slow_start_no_burst_on_the_first_requests() -> None:
    """A new limiter lets one request go at once and fills towards the burst at the rate."""
    limiter = make_limiter(FakeTime(), rate_per_s=10, burst=5)
    assert [limiter.reserve(0.0) for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_burst_refills_after_idle() -> None:
    """After the bucket has had time to drain, a full burst is available again."""
    limiter = make_limiter(FakeTime(), rate_per_s=10, burst=3)
    limiter.reserve(-10.0)
    assert [limiter.reserve(0.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])
    assert [limiter.reserve(5.0) for _ in range(4)] == pytest.approx([5.0, 5.0, 5.0, 5.1])


def test_partial_refill() -> None:
    """Half-way through draining, only the drained part of the burst is available."""
    limiter = make_limiter(FakeTime(), rate_per_s=10, burst=4)
    limiter.reserve(-10.0)
    assert [limiter.reserve(0.0) for _ in range(4)] == [0.0] * 4
    # 0.2 s later two slots have drained: two immediate starts, then spacing.
    assert [limiter.reserve(0.2) for _ in range(3)] == pytest.approx([0.2, 0.2, 0.3])


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 10.0, 37.5, 100.0]),
    burst=st.integers(min_value=1, max_value=8),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0, allow_nan=False), min_size=1, max_size=60),
)
def test_gcra_bound_holds_for_any_arrivals(rate: float, burst: int, gaps: list[float]) -> None:
    """In any window of length w at most burst + rate*w requests start; none starts early or out of order."""
    limiter = make_limiter(FakeTime(), rate_per_s=rate, burst=burst)
    arrivals: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        arrivals.append(now)
    starts = [limiter.reserve(arrival) for arrival in arrivals]

    assert all(start >= arrival for start, arrival in zip(starts, arrivals, strict=True))
    assert starts == sorted(starts)
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            window = starts[j] - starts[i]
            assert j - i + 1 <= burst + rate * window + 1e-6, (i, j, starts)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.sampled_from([1.0, 4.0, 10.0]),
    burst=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0, allow_nan=False), min_size=1, max_size=40),
)
def test_a_request_waits_only_as_long_as_the_bound_requires(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Each request starts at the earliest time that keeps the GCRA bound with the starts before it."""
    interval = 1.0 / rate
    limiter = make_limiter(FakeTime(), rate_per_s=rate, burst=burst)
    now = 0.0
    starts: list[float] = []
    for index, gap in enumerate(gaps):
        now += gap
        if index == 0:
            # Slow start: the bucket begins with one token, as if burst - 1 requests had just started.
            starts = [now] * (burst - 1)
        # Starting at s with the m requests before it means m + 1 starts in [starts[-m], s], which
        # the bound allows only when s >= starts[-m] + (m + 1 - burst) * interval.
        earliest = max(
            [now] + [starts[-m] + (m + 1 - burst) * interval for m in range(burst, len(starts) + 1)]
        )
        start = limiter.reserve(now)
        assert start == pytest.approx(earliest, abs=1e-9)
        starts.append(start)


def test_long_run_rate_equals_the_configured_rate_despite_timer_jitter() -> None:
    """Ten workers that wake up late by a random amount still achieve exactly the configured rate."""
    rng = random.Random(42)
    rate = 20.0
    limiter = make_limiter(FakeTime(), rate_per_s=rate, burst=4)
    ready = [(0.0, worker) for worker in range(10)]
    heapq.heapify(ready)
    starts: list[float] = []
    while len(starts) < 2_000:
        now, worker = heapq.heappop(ready)
        start = limiter.reserve(now)
        starts.append(start)
        # The request takes 50-300 ms and the timer overshoots by up to 20 ms.
        heapq.heappush(ready, (start + rng.uniform(0.05, 0.3) + rng.uniform(0.0, 0.02), worker))
    # After the initial burst the starts are exactly one interval apart: no drift at all.
    achieved = (len(starts) - 4) / (starts[-1] - starts[3])
    assert achieved == pytest.approx(rate, rel=1e-9)


# --- pause_until ---------------------------------------------------------------------------------


def test_pause_delays_later_requests_without_a_burst_after_it() -> None:
    """After a pause until t the next request starts at t and the ones after it are spaced, not bursted."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5)
    assert [limiter.reserve(0.0) for _ in range(2)] == pytest.approx([0.0, 0.1])
    limiter.pause_until(5.0, "retry_after")
    assert [limiter.reserve(0.0) for _ in range(4)] == pytest.approx([5.0, 5.1, 5.2, 5.3])
    # Once the pause is long over, the bucket drains and bursts again.
    assert [limiter.reserve(20.0) for _ in range(6)] == pytest.approx([20.0] * 5 + [20.1])


def test_pause_applies_to_requests_arriving_during_it() -> None:
    """A request that arrives while the pause lasts starts when it ends, not when it arrives."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5)
    limiter.pause_until(5.0, "retry_after")
    assert limiter.reserve(3.0) == 5.0
    assert limiter.reserve(4.0) == pytest.approx(5.1)
    assert limiter.reserve(9.0) == 9.0


def test_pause_delays_unlimited_requests() -> None:
    """Even without a rate limit, no request starts during a pause."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0)
    limiter.pause_until(5.0, "retry_after")
    assert [limiter.reserve(1.0) for _ in range(3)] == [5.0, 5.0, 5.0]
    assert limiter.reserve(6.0) == 6.0


def test_shorter_pause_does_not_shorten_a_longer_one() -> None:
    """A second, earlier pause_until leaves the later deadline in place."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0)
    limiter.pause_until(5.0, "retry_after")
    limiter.pause_until(3.0, "retry_after")
    assert limiter.reserve(1.0) == 5.0


# --- repr ---------------------------------------------------------------------------------------


def test_repr_shows_live_state() -> None:
    """repr reports the current rate, burst, how far ahead starts are booked, the pause, and the learner."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5)
    text = repr(limiter)
    assert text.startswith("<RateLimiter rate=10/s burst=5 ")
    for part in ("booked_ahead=0.000s", "paused_for=0.000s", "<AdaptiveRate ceiling=10/s base=none"):
        assert part in text
    for _ in range(8):
        limiter.reserve(0.0)
    assert "booked_ahead=0.700s" in repr(limiter)
    limiter.pause_until(3.0, "retry_after")
    assert "paused_for=3.000s" in repr(limiter)
    time.now = 2.0
    assert "paused_for=1.000s" in repr(limiter)


def test_repr_unlimited() -> None:
    """An unlimited limiter shows an infinite rate."""
    limiter = make_limiter(FakeTime(), rate_per_s=0)
    assert repr(limiter).startswith("<RateLimiter rate=inf/s burst=1 ")
