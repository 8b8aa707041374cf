"""congestion.AdaptiveRate on its own: what one cut does, which 429s count, when a cut is undone."""

from __future__ import annotations

import pytest

from exporter.congestion import AdaptiveRate, Change


def answers(rate: AdaptiveRate, start: float, end: float, per_s: float, *, refused_every: int = 0) -> float:
    """Feed answers at `per_s` from `start` to `end`, every `refused_every`-th a 429; returns the end."""
    step = 1.0 / per_s
    now, count = start, 0
    while now < end:
        count += 1
        rate.on_response(now, now - 0.001, limited=bool(refused_every) and count % refused_every == 0)
        now += step
    return now


def test_a_cut_goes_just_under_what_the_api_accepted_not_half() -> None:
    """Sending 100/s of which the API accepted 40/s: the 429 sets 0.9 x 40, then 0.97 x 40 after 2 s."""
    rate = AdaptiveRate(ceiling_per_s=1000)
    answers(rate, 0.0, 1.0, 40)  # what was accepted over the last second
    assert rate.on_response(1.0, 0.999, limited=True) is Change.CUT
    assert rate.rate(1.0) == pytest.approx(0.9 * 40, rel=0.05)
    assert rate.rate(3.0) == pytest.approx(0.97 * 40, rel=0.05)
    assert rate.rate(5.9) == pytest.approx(0.97 * 40, rel=0.05)  # held before probing above it
    assert rate.rate(30.0) > 40


def test_only_429s_of_requests_booked_after_the_cut_cut_again() -> None:
    """The 429s of requests already on their way at the old rate say nothing about the new one."""
    rate = AdaptiveRate(ceiling_per_s=100)
    answers(rate, 0.0, 1.0, 50)
    assert rate.on_response(1.0, 0.99, limited=True) is Change.CUT
    cut_to = rate.rate(1.0)
    for late in range(10):
        assert rate.on_response(1.0 + late / 100, 0.95, limited=True) is None
    assert rate.rate(1.1) >= cut_to
    assert rate.cuts == 1


def test_429s_that_slowing_down_does_not_reduce_are_noise_and_the_cut_is_undone() -> None:
    """One answer in ten is a 429 at any rate: after two cuts that changed nothing the rate goes back."""
    rate = AdaptiveRate(ceiling_per_s=200)
    now = answers(rate, 0.0, 5.0, 100, refused_every=10)
    assert rate.cuts == 2
    assert rate.rate(now) == 200
    now = answers(rate, now, now + 30.0, 100, refused_every=10)
    assert rate.cuts == 2  # learnt: 10% is the noise here
    assert rate.rate(now) == 200


def test_the_ceiling_is_never_exceeded_by_the_probe() -> None:
    """However long no 429 comes, the probe above the measured limit stops at --rate."""
    rate = AdaptiveRate(ceiling_per_s=60)
    answers(rate, 0.0, 1.0, 50)
    rate.on_response(1.0, 0.99, limited=True)
    assert rate.rate(1000.0) == 60
