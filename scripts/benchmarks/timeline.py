"""Figures from the fake API's (time, status) timeline: accepted rate, convergence, quota windows.

Pure arithmetic on made-up or recorded timelines, so the pacing scenario's figures are tested
without running anything (tests/test_bench_smoke.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Final

#: The convergence rule: the accepted rate over a trailing window of this many seconds (or of
#: `CONVERGE_WINDOW_REQUESTS` of the limit's requests, when that is longer: at 3/s a 5 s window
#: holds 15, and one request less is 87%)...
CONVERGE_WINDOW_S: Final = 5.0
CONVERGE_WINDOW_REQUESTS: Final = 30
#: ... stays at or above this share of the limit from then on.
CONVERGE_SHARE: Final = 0.9

Timeline = list[tuple[float, int]]


def accepted_rates(
    ok_times: Sequence[float], start: float, end: float, window_s: float, step_s: float = 0.5
) -> list[tuple[float, float]]:
    """(t, accepted per second over (t - window_s, t]) at every step from start + window_s to end.

    ok_times must be sorted.
    """
    rates: list[tuple[float, float]] = []
    low = high = 0
    t = start + window_s
    while t <= end + 1e-9:
        while high < len(ok_times) and ok_times[high] <= t:
            high += 1
        while low < high and ok_times[low] <= t - window_s:
            low += 1
        rates.append((t, (high - low) / window_s))
        t += step_s
    return rates


def convergence_s(
    ok_times: Sequence[float],
    start: float,
    end: float,
    limit: float,
    *,
    window_s: float = CONVERGE_WINDOW_S,
    share: float = CONVERGE_SHARE,
) -> float | None:
    """Seconds from start until the accepted rate over the trailing window stays >= share x limit.

    None when it is below at the end (or the run is shorter than one window).
    """
    rates = accepted_rates(ok_times, start, end, window_s)
    if not rates or rates[-1][1] < share * limit:
        return None
    last_low = next((i for i in range(len(rates) - 1, -1, -1) if rates[i][1] < share * limit), None)
    first_good = rates[0 if last_low is None else last_low + 1][0]
    return first_good - start


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteadyState:
    """What a stretch of the timeline shows: accepted rate and the share of 429s."""

    start_s: float
    """Seconds after the run's start where the stretch begins."""
    seconds: float
    accepted_per_s: float
    share_429: float
    responses: int


def steady_state(timeline: Timeline, start: float, end: float, from_s: float) -> SteadyState:
    """The timeline from start + from_s to end: accepted (200) per second and the 429 share."""
    low = start + from_s
    window = [(t, status) for t, status in timeline if low <= t <= end]
    span = max(end - low, 1e-9)
    ok = sum(status == 200 for _, status in window)
    limited = sum(status == 429 for _, status in window)
    return SteadyState(
        start_s=from_s,
        seconds=span,
        accepted_per_s=ok / span,
        share_429=limited / len(window) if window else 0.0,
        responses=len(window),
    )


def quota_windows(
    timeline: Timeline, origin: float, window_s: float, start: float, end: float
) -> list[tuple[int, int, int]]:
    """(window index, accepted, 429s) for each quota window wholly inside [start, end]."""
    first = math.ceil((start - origin) / window_s - 1e-9)
    last = math.floor((end - origin) / window_s + 1e-9)  # windows [first, last) are whole
    counts = {k: [0, 0] for k in range(first, last)}
    for t, status in timeline:
        k = math.floor((t - origin) / window_s)
        if k in counts:
            counts[k][0] += status == 200
            counts[k][1] += status == 429
    return [(k, ok, limited) for k, (ok, limited) in sorted(counts.items())]
