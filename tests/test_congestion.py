"""congestion.AdaptiveRate on its own: what a cut needs and does, which 429s count, how noise is told
from a limit, and the tests on counts it decides with."""

from __future__ import annotations

import random

import pytest

from exporter.pacing.congestion import AdaptiveRate, Change, binomial_tail, settle_limit, share_drop


def answers(
    rate: AdaptiveRate, start: float, end: float, per_s: float, *, refused: float = 0.0, seed: int = 1
) -> tuple[float, list[Change]]:
    """Feed answers at `per_s` from `start` to `end`, each a 429 with probability `refused`; returns
    the end and the changes."""
    rng = random.Random(seed)
    step = 1.0 / per_s
    now = start
    changes = []
    while now < end:
        change = rate.on_response(now, now - 0.001, limited=rng.random() < refused)
        if change is not None:
            changes.append(change)
        now += step
    return now, changes


def refuse_until_cut(rate: AdaptiveRate, now: float, per_s: float) -> float:
    """Answers at `per_s`, every other one a 429 (a limit at half the pace), until the rate is cut."""
    for count in range(1000):
        if rate.on_response(now, now - 0.001, limited=count % 2 == 0) is Change.CUT:
            return now
        now += 1.0 / per_s
    raise AssertionError("never cut")


def test_a_cut_goes_just_under_what_the_api_accepted_not_half() -> None:
    """Sending 80/s of which the API accepts 40/s: the cut sets 0.9 x 40, then 0.97 x 40 after 2 s,
    held before probing above it."""
    rate = AdaptiveRate(ceiling_per_s=80)
    at = refuse_until_cut(rate, 0.0, 80)
    assert at < 0.5  # a limit refusing half the answers is found within a few dozen of them
    assert rate.rate(at) == pytest.approx(0.9 * 40, rel=0.1)
    assert rate.rate(at + 2.0) == pytest.approx(0.97 * 40, rel=0.1)
    assert rate.rate(at + 4.9) == pytest.approx(0.97 * 40, rel=0.1)
    assert rate.rate(at + 30.0) > 45


def test_one_429_does_not_cut() -> None:
    """A lone 429 among answers at the ceiling is as likely noise as a limit: the rate stays."""
    rate = AdaptiveRate(ceiling_per_s=10)
    now, _ = answers(rate, 0.0, 5.0, 10)
    assert rate.on_response(now, now - 0.001, limited=True) is None
    assert rate.on_response(now + 0.1, now + 0.099, limited=True) is None
    assert rate.rate(now + 0.1) == 10
    assert rate.cuts == 0


@pytest.mark.parametrize("per_s", [1, 3, 10, 40])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_429s_up_to_a_tenth_never_cut(per_s: float, seed: int) -> None:
    """10% of answers are 429s at random, at 1 to 40 answers a second, for 3,000 answers: never a
    cut, whatever the pace (the old rule cut on the first 429 and halved the rate)."""
    rate = AdaptiveRate(ceiling_per_s=per_s)
    now, changes = answers(rate, 0.0, 3000 / per_s, per_s, refused=0.10, seed=seed)
    assert changes == []
    assert rate.rate(now) == per_s


def test_only_429s_of_requests_booked_after_the_cut_cut_again() -> None:
    """The 429s of requests already on their way at the old rate say nothing about the new one."""
    rate = AdaptiveRate(ceiling_per_s=100)
    at = refuse_until_cut(rate, 0.0, 100)
    cut_to = rate.rate(at)
    for late in range(40):
        assert rate.on_response(at + late / 100, at - 0.01, limited=True) is None
    assert rate.rate(at + 0.4) >= cut_to
    assert rate.cuts == 1


def test_a_round_still_refused_goes_deeper() -> None:
    """After the first cut, the API still refuses half the answers (the first measure held a burst):
    the round after the cut is judged and the rate is cut again, from what that round measured."""
    rate = AdaptiveRate(ceiling_per_s=100)
    at = refuse_until_cut(rate, 0.0, 100)
    first = rate.rate(at)
    now, count = at, 0
    while rate.cuts == 1:
        now += 1.0 / 40
        count += 1
        rate.on_response(now, now - 0.001, limited=count % 2 == 0)
    assert rate.rate(now) < 0.8 * first


def test_429s_that_slowing_down_does_not_reduce_are_noise_and_the_cut_is_undone() -> None:
    """A fifth of the answers are 429s at any pace (more than the tenth tolerated at once): a cut,
    then a round as refused as before: the cut is undone, and that share, learnt, cuts no more."""
    rate = AdaptiveRate(ceiling_per_s=200)
    now, changes = answers(rate, 0.0, 120.0, 100, refused=0.2)
    assert Change.CUT in changes
    assert Change.UNDONE in changes
    assert rate.noise() == pytest.approx(0.2, abs=0.06)
    cuts = rate.cuts
    now, changes = answers(rate, now, now + 120.0, 100, refused=0.2, seed=2)
    assert rate.cuts <= cuts + 1
    assert rate.rate(now) >= 0.9 * 200


def test_a_probe_that_noise_ends_keeps_the_limit_held() -> None:
    """An API that accepts 45/s, and refuses 7% at random whatever the pace: once the noise is
    learnt (a minute), probes that noise ends cost the probe, not the pace, which stays over 0.8 of
    the limit for the next nine minutes and averages over 0.9 of it."""
    rate = AdaptiveRate(ceiling_per_s=1000)
    at = refuse_until_cut(rate, 0.0, 80)
    paces = []
    now = at
    rng = random.Random(5)
    while now < at + 600.0:
        pace = rate.rate(now)
        if now > at + 60.0:
            paces.append(pace)
        over = max(0.0, 1.0 - 45 / pace)
        rate.on_response(now, now - 0.001, limited=rng.random() < 0.07 or rng.random() < over)
        now += 1.0 / pace
    assert rate.noise() == pytest.approx(0.07, abs=0.04)
    assert min(paces) >= 0.8 * 45
    assert len(paces) / 540 >= 0.9 * 45


def test_with_no_noise_seen_a_429_at_the_held_pace_cuts() -> None:
    """A first cut measured high (a bucket's burst): its round is clean, then a 429 comes while the
    rate holds under that limit. With no noise seen, that is the limit: it cuts to what the API
    accepts, without waiting for a probe."""
    rate = AdaptiveRate(ceiling_per_s=1000)
    at = refuse_until_cut(rate, 0.0, 100)
    now, changes = answers(rate, at, at + 4.0, 45)
    assert changes == []
    held = rate.rate(now)
    assert rate.on_response(now, now - 0.001, limited=True) is Change.CUT
    assert rate.rate(now) < held


def test_the_ceiling_is_never_exceeded_by_the_probe() -> None:
    """However long no 429 comes, the probe above the measured limit stops at --rate."""
    rate = AdaptiveRate(ceiling_per_s=60)
    at = refuse_until_cut(rate, 0.0, 60)
    assert rate.rate(at + 1000.0) == 60


def test_a_probe_moves_the_limit_up_at_once_and_down_slowly_on_few_answers() -> None:
    """After a probe the limit learnt goes up to a higher measure; a lower one over a second of
    answers leaves it, one over few answers (a slow API) moves it a tenth of the way down."""
    assert settle_limit(10.0, 12.0, few=True) == 12.0
    assert settle_limit(10.0, 12.0, few=False) == 12.0
    assert settle_limit(12.0, 10.0, few=False) == 12.0
    assert settle_limit(12.0, 10.0, few=True) == pytest.approx(11.8)
    held = 12.0
    for _ in range(40):
        held = settle_limit(held, 10.0, few=True)
    assert held == pytest.approx(10.0 + 2.0 * 0.9**40)


def test_binomial_tail_and_share_drop() -> None:
    """The two tests on counts: how likely k 429s in n are as noise, and the two-proportion z."""
    assert binomial_tail(0, 10, 0.1) == 1.0
    assert binomial_tail(1, 10, 0.0) == 0.0
    assert binomial_tail(1, 10, 0.1) == pytest.approx(1 - 0.9**10)
    assert binomial_tail(3, 30, 0.1) == pytest.approx(0.5886, abs=1e-4)
    assert binomial_tail(11, 10, 0.5) == 0.0
    assert share_drop((100, 50), (100, 10)) > 5
    assert share_drop((100, 10), (100, 50)) < -5
    assert abs(share_drop((30, 3), (30, 4))) < 1
    assert share_drop((0, 0), (10, 1)) == 0.0
