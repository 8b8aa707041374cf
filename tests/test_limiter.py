"""Unit tests for `exporter.limiter`: GCRA spacing, pauses and 429 back-off, on a fake clock."""

from __future__ import annotations

import heapq
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.limiter import RateLimiter


class FakeTime:
    """A clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_limiter(
    time: FakeTime,
    *,
    rate_per_s: float,
    burst: int = 1,
    recovery_s: float = 10.0,
    min_rate_per_s: float = 0.2,
) -> RateLimiter:
    return RateLimiter(
        rate_per_s=rate_per_s,
        burst=burst,
        recovery_s=recovery_s,
        min_rate_per_s=min_rate_per_s,
        clock=time.clock,
        sleep=time.sleep,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_per_s": -1.0},
        {"rate_per_s": 1.0, "burst": 0},
        {"rate_per_s": 1.0, "recovery_s": 0.0},
        {"rate_per_s": 1.0, "min_rate_per_s": 0.0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    """A negative rate, an empty burst, or a non-positive recovery or floor is refused at construction."""
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
    """After pause_until(t) the next request starts at t and the ones after it are spaced, not bursted."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5)
    assert [limiter.reserve(0.0) for _ in range(2)] == pytest.approx([0.0, 0.1])
    limiter.pause_until(5.0)
    assert [limiter.reserve(0.0) for _ in range(4)] == pytest.approx([5.0, 5.1, 5.2, 5.3])
    # Once the pause is long over, the bucket drains and bursts again.
    assert [limiter.reserve(20.0) for _ in range(6)] == pytest.approx([20.0] * 5 + [20.1])


def test_pause_applies_to_requests_arriving_during_it() -> None:
    """A request that arrives while the pause lasts starts when it ends, not when it arrives."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5)
    limiter.pause_until(5.0)
    assert limiter.reserve(3.0) == 5.0
    assert limiter.reserve(4.0) == pytest.approx(5.1)
    assert limiter.reserve(9.0) == 9.0


def test_pause_delays_unlimited_requests() -> None:
    """Even without a rate limit, no request starts during a pause."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0)
    limiter.pause_until(5.0)
    assert [limiter.reserve(1.0) for _ in range(3)] == [5.0, 5.0, 5.0]
    assert limiter.reserve(6.0) == 6.0


def test_shorter_pause_does_not_shorten_a_longer_one() -> None:
    """A second, earlier pause_until leaves the later deadline in place."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0)
    limiter.pause_until(5.0)
    limiter.pause_until(3.0)
    assert limiter.reserve(1.0) == 5.0


# --- throttled -----------------------------------------------------------------------------------


def test_throttled_halves_the_rate_once_per_round() -> None:
    """A 429 halves the rate; a 429 for a request started before that halving is False and changes nothing."""
    time = FakeTime(1.0)
    limiter = make_limiter(time, rate_per_s=10, recovery_s=10.0)
    started = [limiter.reserve(1.0) for _ in range(3)]
    time.now = 2.0
    assert limiter.throttled(started[0]) is True
    assert limiter.current_rate(2.0) == 5.0
    time.now = 2.5
    assert limiter.throttled(started[1]) is False
    assert limiter.throttled(started[2]) is False
    # The halving still dates from t=2.0: 5/s grows by 5/s per 10 s from there.
    assert limiter.current_rate(7.0) == pytest.approx(7.5)


def test_a_429_started_after_the_halving_halves_again() -> None:
    """A request started at or after the last halving is news: it halves the current (recovering) rate."""
    time = FakeTime(0.0)
    limiter = make_limiter(time, rate_per_s=10, recovery_s=10.0)
    assert limiter.throttled(0.0) is True
    time.now = 1.0
    assert limiter.throttled(0.0) is True  # started exactly at the halving
    # 5/s had grown to 5.5/s by t=1.0; half of that.
    assert limiter.current_rate(1.0) == pytest.approx(2.75)
    time.now = 2.0
    assert limiter.throttled(1.5) is True
    assert limiter.current_rate(2.0) == pytest.approx(2.75 * 1.1 / 2)


def test_throttled_never_goes_below_the_floor() -> None:
    """Repeated halvings stop at min_rate_per_s."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=1.0, min_rate_per_s=0.4, recovery_s=1e9)
    rates = []
    for step in range(5):
        time.now = float(step)
        assert limiter.throttled(time.now) is True
        rates.append(limiter.current_rate(time.now))
    assert rates == pytest.approx([0.5, 0.4, 0.4, 0.4, 0.4], rel=1e-6)


def test_throttled_rate_recovers_linearly_over_recovery_s() -> None:
    """After one halving the rate climbs back in a line and reaches the configured one at recovery_s."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, recovery_s=8.0)
    assert limiter.throttled(0.0) is True
    samples = [limiter.current_rate(t) for t in (0.0, 2.0, 4.0, 6.0)]
    assert samples == pytest.approx([5.0, 6.25, 7.5, 8.75])
    assert limiter.current_rate(8.0) == 10.0
    assert limiter.current_rate(30.0) == 10.0
    assert "throttled=no" in repr(limiter)


def test_throttled_rate_governs_spacing() -> None:
    """While throttled, starts are spaced at the reduced rate."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, recovery_s=1e9)
    limiter.throttled(0.0)
    assert [limiter.reserve(0.0) for _ in range(3)] == pytest.approx([0.0, 0.2, 0.4])


def test_throttled_empties_the_bucket() -> None:
    """After a 429 there is no burst: a full bucket is emptied to one token and the rest is spaced."""
    time = FakeTime(10.0)
    limiter = make_limiter(time, rate_per_s=10, burst=5, recovery_s=1e9)
    assert limiter.throttled(10.0) is True
    assert [limiter.reserve(10.0) for _ in range(4)] == pytest.approx([10.0, 10.2, 10.4, 10.6])


def test_pause_and_halving_together() -> None:
    """A 429 during a pause lowers the rate the queue resumes at, and the pause still holds."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5, recovery_s=1e9)
    limiter.pause_until(10.0)
    time.now = 0.5
    assert limiter.throttled(0.0) is True
    assert [limiter.reserve(0.6) for _ in range(3)] == pytest.approx([10.0, 10.2, 10.4])


def test_pause_set_while_unlimited_survives_a_halving() -> None:
    """A Retry-After pause taken while unlimited still holds after a 429 gives the limiter a finite rate."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0, min_rate_per_s=0.1, recovery_s=1e9)
    limiter.pause_until(10.0)  # e.g. X-RateLimit-Remaining: 0 on a 200
    time.now = 0.5
    assert limiter.throttled(0.0) is True  # a 429 for a request started earlier
    starts = [limiter.reserve(0.6) for _ in range(3)]
    assert min(starts) >= 10.0, starts


def test_unlimited_throttled_uses_the_observed_rate() -> None:
    """Without a configured rate, a 429 halves the rate observed over the last second."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0, recovery_s=1e9)
    for i in range(21):  # t = 0.00, 0.05, ..., 1.00: 20 requests in (0.0, 1.0]
        assert limiter.reserve(i / 20) == i / 20
    time.now = 1.0
    assert limiter.throttled(1.0) is True
    assert limiter.current_rate(1.0) == pytest.approx(10.0)
    assert [limiter.reserve(1.0) for _ in range(3)] == pytest.approx([1.0, 1.1, 1.2])


def test_unlimited_throttled_rate_climbs_back_linearly() -> None:
    """Without a configured rate the reduced rate still grows in a line, doubling over recovery_s."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0, recovery_s=4.0)
    for i in range(12):
        limiter.reserve(i / 12)
    time.now = 1.0
    assert limiter.throttled(1.0) is True
    samples = [limiter.current_rate(1.0 + t) for t in (0.0, 1.0, 2.0, 4.0)]
    assert samples == pytest.approx([5.5, 6.875, 8.25, 11.0])


def test_unlimited_observed_rate_forgets_older_requests() -> None:
    """Only requests within the second before the 429 count towards the rate that is halved."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0, recovery_s=1e9)
    for i in range(50):  # a busy spell long before the 429
        limiter.reserve(i / 100)
    for i in range(8):  # 8 requests in the last second
        limiter.reserve(10.0 + i / 10)
    time.now = 10.75
    assert limiter.throttled(10.7) is True
    assert limiter.current_rate(10.75) == pytest.approx(4.0)


def test_unlimited_throttled_after_a_quiet_second_halves_one_request_per_second() -> None:
    """With no request in the last second the observed rate counts as 1/s, so the 429 sets 0.5/s."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0, min_rate_per_s=0.1, recovery_s=1e9)
    limiter.reserve(0.0)
    time.now = 5.0
    assert limiter.throttled(0.0) is True
    assert limiter.current_rate(5.0) == pytest.approx(0.5)


def test_unlimited_throttled_respects_the_floor() -> None:
    """Half of a low observed rate is still never below min_rate_per_s."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=0, min_rate_per_s=2.0, recovery_s=1e9)
    limiter.reserve(0.0)
    assert limiter.throttled(0.0) is True
    assert limiter.current_rate(0.0) == 2.0


def test_halving_never_lets_a_new_request_overtake_a_booked_one() -> None:
    """Requests asked for after a 429 start no earlier than those booked before it: served in order."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=10, recovery_s=1e9)
    booked = [limiter.reserve(0.0) for _ in range(40)]  # a pool of workers, booked up to t=3.0
    time.now = 0.5
    assert limiter.throttled(0.45) is True
    after = [limiter.reserve(0.5) for _ in range(5)]
    assert min(after) >= max(booked), (after, max(booked))


# --- acquire and repr ----------------------------------------------------------------------------


async def test_acquire_sleeps_via_the_injected_sleep() -> None:
    """acquire waits with the injected sleep for exactly the reserved delay and returns the start time."""
    time = FakeTime(100.0)
    limiter = make_limiter(time, rate_per_s=4, burst=2)
    starts = [await limiter.acquire() for _ in range(4)]
    assert starts == pytest.approx([100.0, 100.25, 100.5, 100.75])
    assert time.sleeps == pytest.approx([0.25, 0.25, 0.25])
    assert time.now == pytest.approx(100.75)


async def test_acquire_does_not_sleep_when_a_slot_is_free() -> None:
    """With room in the bucket acquire returns the current time without calling sleep at all."""
    time = FakeTime(7.0)
    limiter = make_limiter(time, rate_per_s=0)
    assert await limiter.acquire() == 7.0
    assert time.sleeps == []


async def test_acquire_honours_a_pause() -> None:
    """acquire during a pause sleeps until the pause ends."""
    time = FakeTime(1.0)
    limiter = make_limiter(time, rate_per_s=10, burst=3)
    limiter.pause_until(4.0)
    assert await limiter.acquire() == 4.0
    assert time.sleeps == [3.0]


def test_repr_shows_live_state() -> None:
    """repr reports the current rate, burst, how far ahead starts are booked, the pause, and throttling."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=10, burst=5, recovery_s=1e9)
    text = repr(limiter)
    assert text.startswith("<RateLimiter rate=10/s burst=5 ")
    for part in ("booked_ahead=0.000s", "paused_for=0.000s", "throttled=no>"):
        assert part in text
    for _ in range(8):
        limiter.reserve(0.0)
    assert "booked_ahead=0.700s" in repr(limiter)
    limiter.pause_until(3.0)
    assert "paused_for=3.000s" in repr(limiter)
    limiter.throttled(0.0)
    assert repr(limiter).startswith("<RateLimiter rate=5/s burst=5 ")
    assert repr(limiter).endswith("throttled=yes>")
    time.now = 2.0
    assert "paused_for=1.000s" in repr(limiter)


def test_repr_unlimited() -> None:
    """An unlimited limiter shows an infinite rate."""
    limiter = make_limiter(FakeTime(), rate_per_s=0)
    assert repr(limiter).startswith("<RateLimiter rate=inf/s burst=1 ")


# --- response: lone 429s versus a real limit -------------------------------------------------------


def test_a_lone_429_among_successes_does_not_lower_the_rate() -> None:
    """One 429 in a hundred successful responses leaves the rate alone (an API's odd 429)."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=100, burst=1)
    for _ in range(100):
        assert limiter.response(limiter.reserve(time.now), rate_limited=False) is False
    assert limiter.response(limiter.reserve(time.now), rate_limited=True) is False
    assert limiter.current_rate(time.now) == 100


def test_many_429s_lower_the_rate() -> None:
    """When five of the last hundred responses are 429s the next one halves the rate."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=100, burst=1, recovery_s=1e9)
    for _ in range(95):
        limiter.response(limiter.reserve(time.now), rate_limited=False)
    lowered = [limiter.response(limiter.reserve(time.now), rate_limited=True) for _ in range(5)]
    assert lowered == [False, False, False, False, True]
    assert limiter.current_rate(time.now) == 50


def test_a_429_at_the_start_lowers_the_rate_at_once() -> None:
    """With no successes to weigh it against, the first 429 counts."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=100, burst=1, recovery_s=1e9)
    assert limiter.response(limiter.reserve(time.now), rate_limited=True) is True
    assert limiter.current_rate(time.now) == 50


def test_old_429s_leave_the_window() -> None:
    """429s older than the last hundred responses no longer count towards lowering the rate."""
    time = FakeTime()
    limiter = make_limiter(time, rate_per_s=100, burst=1, recovery_s=1e9)
    for _ in range(4):
        limiter.response(limiter.reserve(time.now), rate_limited=True)
    for _ in range(200):
        limiter.response(limiter.reserve(time.now), rate_limited=False)
    rate = limiter.current_rate(time.now)
    assert limiter.response(limiter.reserve(time.now), rate_limited=True) is False
    assert limiter.current_rate(time.now) == rate
