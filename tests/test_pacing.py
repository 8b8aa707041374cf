"""Pacing in virtual time: the pool against simulated rate-limited servers for minutes, in milliseconds.

Each test asserts what the API's user gets: the share of the server's limit the
pool holds in the steady state and the share of its requests refused with 429.
"""

from __future__ import annotations

import pytest
from fake_time import FakeTime
from pacing_sim import Both, BucketServer, TransientFaults, flaky_api, simulate

from exporter.config import LimitSettings, RetrySettings
from exporter.pacing import Pacer, Ticket


@pytest.mark.parametrize(
    ("limit", "burst", "rate", "concurrency"),
    [
        (3, 3, 10, 8),
        (40, 5, 10_000, 32),
        (400, 40, 10_000, 64),
        (400, 400, 10_000, 64),
    ],
)
def test_a_token_bucket_limit_is_found_and_held(
    limit: float, burst: int, rate: float, concurrency: int
) -> None:
    """Against a token bucket of L/s, ten virtual minutes (two at 400/s): from 10 s on, every 10 s
    window holds >= 90% of L, and <= 5% of the requests are refused with 429.

    3/s runs with the defaults (--rate 10, 8 workers): issue 9 measured 15% of L there.
    """
    duration = 600.0 if limit < 100 else 120.0
    outcome = simulate(
        BucketServer(limit, burst), duration_s=duration, rate_per_s=rate, concurrency=concurrency
    )
    windows = [outcome.rate(start, start + 10.0) for start in range(10, int(duration), 10)]
    assert min(windows) >= 0.9 * limit, windows
    assert outcome.rate(10.0, duration) <= 1.01 * limit
    assert outcome.refused_share(10.0, duration) <= 0.05


def test_the_rate_never_exceeds_the_ceiling() -> None:
    """--rate stays the ceiling: an API that allows 400/s gets no more than --rate 50."""
    outcome = simulate(BucketServer(400, 40), duration_s=60.0, rate_per_s=50, concurrency=16)
    assert outcome.rate(1.0, 60.0) <= 50.5
    assert outcome.rate(1.0, 60.0) >= 49.0
    assert not outcome.refused


def test_random_429s_do_not_collapse_the_rate() -> None:
    """7% of answers are 429 whatever the rate (a flaky gateway), with no ceiling: the rate is not
    cut for good (at most a cut tried and undone now and then).

    8 workers and 20 ms answers can make 400 requests a second; refused ids wait out
    their Retry-After parked, while their workers go on with other ids.
    """
    outcome = simulate(
        TransientFaults(refused=0.07), duration_s=300.0, rate_per_s=0, concurrency=8, latency_s=0.02
    )
    assert outcome.rate(10.0, 300.0) >= 0.85 * 8 / 0.02
    assert outcome.pacer is not None
    assert outcome.pacer.report().rate_cuts <= 6


# --- noise: 429s that slowing down does not reduce (issue 16) -------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("rate", [1, 3, 10, 40])
def test_random_429s_among_transient_faults_never_slow_the_pace(rate: float, seed: int) -> None:
    """10% of answers are 429s (`Retry-After: 1`) whatever the pace, 20% are 5xx and 10% resets,
    for ten virtual minutes at --rate 1 to 40: the pace never drops under 0.8 x --rate and the
    server sees --rate. The old noise test needed many answers a second: at 10/s it halved the
    rate at the first 429 and kept cutting to a few percent of it."""
    server = TransientFaults(refused=0.10, errors=0.20, resets=0.10, seed=seed)
    outcome = simulate(server, duration_s=600.0, rate_per_s=rate, concurrency=8, latency_s=0.02)
    assert outcome.lowest_pace() >= 0.8 * rate
    assert outcome.sent_rate(10.0, 600.0) >= 0.95 * rate


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_flaky_api_keeps_the_default_rate(seed: int) -> None:
    """Issue 16's API (60% of first and second attempts fault: 8% of all answers are 429s, 16%
    5xx, 16% resets or half bodies) at the defaults (--rate 10, 8 workers): the pace stays at
    8/s or more and the server sees 9.5/s for two minutes, so its 784 requests take about 80 s.
    The old pacer went to 0.46/s (seed 1 here; the issue measured the same in 36 s)."""
    outcome = simulate(flaky_api(seed), duration_s=120.0, rate_per_s=10, concurrency=8, latency_s=0.02)
    assert outcome.lowest_pace() >= 8.0
    assert outcome.sent_rate(0.0, 120.0) >= 9.5


@pytest.mark.parametrize(
    ("limit", "burst", "rate", "concurrency"),
    [(3, 3, 10, 8), (10, 10, 40, 16), (40, 5, 10_000, 32)],
)
def test_a_limit_behind_random_429s_is_held(limit: float, burst: int, rate: float, concurrency: int) -> None:
    """7% of answers are 429s at random in front of a token bucket of L/s (the case issue 9 left
    open at 40/s), ten virtual minutes: from the first minute on every minute holds >= 0.8 x L; at
    40/s the whole holds >= 0.9 x L with <= 10% 429s (the old pacer: 15%). At 3 and 10/s a probe's
    measure rests on few answers and the limit is held a little high: <= 15% 429s (9.6-12.7% over
    seeds 7-10; 12-17% when the limit learnt kept the highest measure, over half before issue 16)."""
    server = Both(TransientFaults(refused=0.07), BucketServer(limit, burst))
    outcome = simulate(server, duration_s=600.0, rate_per_s=rate, concurrency=concurrency, latency_s=0.02)
    minutes = [outcome.rate(start, start + 60.0) for start in range(60, 541, 30)]
    assert min(minutes) >= 0.8 * limit, minutes
    assert outcome.refused_share(60.0, 600.0) <= (0.10 if limit >= 40 else 0.15)
    if limit >= 40:
        assert outcome.rate(60.0, 600.0) >= 0.9 * limit


@pytest.mark.parametrize("seed", [7, 8, 9, 10])
def test_a_limit_with_random_429s_after_it_is_held(seed: int) -> None:
    """The fake API's order (`scripts/bench.py --scenario pacing`, case h): 7% of the answers the
    40/s bucket accepted are turned into 429s, so a noise 429 spends a token and at most 0.93 x L
    can be served; ten virtual minutes still hold >= 0.9 x L with <= 10% 429s (0.918-0.929 x L and
    8.6-9.5% measured over these seeds: the bench's 90-92% and 8.8-10.3% in real time)."""
    server = Both(BucketServer(40, 5), TransientFaults(refused=0.07, seed=seed))
    outcome = simulate(server, duration_s=600.0, rate_per_s=10_000, concurrency=32, latency_s=0.02)
    assert outcome.rate(60.0, 600.0) >= 0.9 * 40
    assert outcome.refused_share(60.0, 600.0) <= 0.10


# --- Pacer.start: the waiting, with an injected clock and sleep ----------------------------------


def _pacer(time: FakeTime, rate: float, burst: int = 1) -> Pacer:
    return Pacer(
        LimitSettings(rate_per_s=rate, burst=burst),
        RetrySettings(),
        clock=time.clock,
        now_epoch=time.epoch,
        sleep=time.sleep,
    )


async def test_start_sleeps_exactly_until_the_booked_slot() -> None:
    """At 4/s a request starts every 0.25 s, waited with the injected sleep, never early."""
    time = FakeTime(100.0)
    pacer = _pacer(time, 4, burst=1)
    starts = []
    for _ in range(4):
        ticket = await pacer.start()
        assert isinstance(ticket, Ticket)
        starts.append(ticket.started_at)
    assert starts == pytest.approx([100.0, 100.25, 100.5, 100.75])
    assert time.now == pytest.approx(100.75)


async def test_start_does_not_sleep_when_nothing_limits() -> None:
    """With no ceiling and no pause a request starts at once."""
    time = FakeTime(7.0)
    ticket = await _pacer(time, 0).start()
    assert isinstance(ticket, Ticket)
    assert ticket.started_at == 7.0
    assert time.sleeps == []


async def test_start_waits_out_a_pause_without_booking_far_ahead() -> None:
    """During a 3 s hold a worker asks again near its end, then starts when it is over."""
    time = FakeTime(1.0)
    pacer = _pacer(time, 10, burst=3)
    pacer.limiter.pause_until(4.0, "retry_after")
    ticket = await pacer.start()
    assert isinstance(ticket, Ticket)
    assert ticket.started_at == pytest.approx(4.0)
    assert time.now == pytest.approx(4.0)
    assert len(time.sleeps) <= 5
