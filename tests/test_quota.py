"""pacing.quota: the quota a server announces in its RateLimit fields, and the pace that spreads it.

Pure: headers and an epoch in, a report out; the tracker on explicit instants.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.pacing.quota import FIELDS, QuotaTracker, parse_quota

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "remaining", "reset_s", "window_s"),
    [
        ({"X-RateLimit-Remaining": "37", "X-RateLimit-Reset": "4"}, 37, 4.0, None),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 30)}, 0, 30.0, None),
        ({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW) * 1000 + 2500)}, 5, 2.5, None),
        ({"RateLimit-Remaining": "9", "RateLimit-Reset": "60", "RateLimit-Limit": "100"}, 9, 60.0, None),
        ({"RateLimit": "limit=100, remaining=50, reset=10"}, 50, 10.0, None),
        ({"RateLimit": '"default";r=37;t=4', "RateLimit-Policy": '"default";q=100;w=10'}, 37, 4.0, 10.0),
        # Two policies: the one that leaves the slower pace binds (5 in 10 s, not 90 in 60 s).
        ({"RateLimit": '"min";r=5;t=10, "hour";r=90;t=60'}, 5, 10.0, None),
    ],
)
def test_quota_headers_are_read(
    headers: dict[str, str], remaining: int, reset_s: float, window_s: float | None
) -> None:
    """Every spelling of the RateLimit fields gives the remaining requests and the seconds to reset."""
    report = parse_quota(headers, now_epoch=NOW)
    assert report is not None
    assert report.remaining == remaining
    assert report.reset_s == pytest.approx(reset_s)
    assert report.window_s == window_s


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "4"},
        {"X-RateLimit-Remaining": "5"},
        {"X-RateLimit-Remaining": "9" * 400, "X-RateLimit-Reset": "4"},
        {"RateLimit": '"default";r=1e999;t=4'},
    ],
)
def test_unreadable_quota_headers_are_ignored(headers: dict[str, str]) -> None:
    """Missing, non-numeric, absurdly long or non-finite values announce no quota (and raise nothing)."""
    assert parse_quota(headers, now_epoch=NOW) is None


def test_a_quota_is_spread_over_its_window() -> None:
    """40 left with 10 s to go: 40 requests spread over the 10 s, fewer as requests start."""
    tracker = QuotaTracker()
    tracker.started()
    report = parse_quota({"X-RateLimit-Remaining": "40", "X-RateLimit-Reset": "10"}, now_epoch=NOW)
    tracker.answered(0.0, report)
    pace = tracker.pace(0.0)
    assert pace is not None
    assert pace[0] == pytest.approx(40 / 10.25)
    for _ in range(20):
        tracker.started()
    pace = tracker.pace(5.0)
    assert pace is not None
    assert pace[0] == pytest.approx(20 / 5.25)
    assert tracker.pace(10.3) is None


def test_a_small_bucket_announcing_itself_is_not_spread() -> None:
    """A bucket's 'reset' under 2 s (its time to refill) is not a window to spread: no pace."""
    tracker = QuotaTracker()
    tracker.started()
    tracker.answered(
        0.0, parse_quota({"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "1"}, now_epoch=NOW)
    )
    assert tracker.pace(0.0) is None


# Structured-field lists, well formed or nearly: names, parameters with odd numbers, a second item.
_STRUCTURED = r'"?[a-z]{0,6}"?(;[a-z]=-?[0-9.e+]{0,25}){0,4}(, ?"?[a-z]{0,4}"?;r=[0-9]{1,4};t=[0-9]{1,4})?'


@settings(max_examples=400, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(
            st.text(max_size=60),
            st.from_regex(
                r'"?[a-z]{0,6}"?(;[a-z]=-?[0-9.e+]{0,25}){0,4}(, ?"?[a-z]{0,4}"?;r=[0-9]{1,4};t=[0-9]{1,4})?'
            ),
            st.integers(min_value=-(10**30), max_value=10**30).map(str),
        ),
    )
)
def test_any_quota_fields_give_a_sane_report_or_none(fields: dict[str, str]) -> None:
    """Whatever a server puts in the quota fields: no exception, and a report, if any, has a
    non-negative count and a finite, non-negative reset, and the pace it leads to is a real number."""
    report = parse_quota(fields, now_epoch=NOW)
    if report is None:
        return
    assert report.remaining >= 0
    assert math.isfinite(report.reset_s)
    assert report.reset_s >= 0
    tracker = QuotaTracker()
    tracker.started()
    tracker.answered(0.0, report)
    pace = tracker.pace(0.0)
    if pace is not None:
        assert math.isfinite(pace[0])
        assert pace[0] >= 0
        assert math.isfinite(pace[1])
