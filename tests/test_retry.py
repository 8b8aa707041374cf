"""Unit tests for `exporter.retry`: response classification, backoff and server-requested waits."""

from __future__ import annotations

import pytest

from exporter.errors import Reason
from exporter.retry import (
    OK,
    Action,
    Verdict,
    backoff_delay,
    classify_status,
    retry_after_s,
)

#: 2023-11-14 22:13:20 UTC, the "now" of every date test.
NOW = 1_700_000_000.0
#: The largest float below 1.0: what `random.random()` can return at most.
ALMOST_ONE = 1.0 - 2.0**-53

_REDIRECT = (
    "the API redirected and redirects are not followed "
    "(the token must not travel to another address); point --base-url at the final URL"
)


# --- classify_status ------------------------------------------------------------------------------


def test_200_is_ok() -> None:
    """200 is the only status that is simply accepted, with no reason and no message."""
    assert classify_status(200) == OK == Verdict("ok", None, "")


@pytest.mark.parametrize(
    ("status", "action", "reason", "message"),
    [
        (201, "retry", Reason.BAD_RESPONSE, "HTTP 201 Created: expected 200 with a recording"),
        (204, "retry", Reason.BAD_RESPONSE, "HTTP 204 No Content: expected 200 with a recording"),
        (301, "fail", Reason.HTTP_ERROR, f"HTTP 301 Moved Permanently: {_REDIRECT}"),
        (302, "fail", Reason.HTTP_ERROR, f"HTTP 302 Found: {_REDIRECT}"),
        (307, "fail", Reason.HTTP_ERROR, f"HTTP 307 Temporary Redirect: {_REDIRECT}"),
        (400, "fail", Reason.HTTP_ERROR, "HTTP 400 Bad Request"),
        (401, "auth", Reason.AUTH, "HTTP 401 Unauthorized"),
        (403, "auth", Reason.AUTH, "HTTP 403 Forbidden"),
        (404, "fail", Reason.NOT_FOUND, "HTTP 404 Not Found"),
        (408, "retry", Reason.HTTP_ERROR, "HTTP 408 Request Timeout"),
        (410, "fail", Reason.NOT_FOUND, "HTTP 410 Gone"),
        (425, "retry", Reason.HTTP_ERROR, "HTTP 425 Too Early"),
        (429, "retry", Reason.RATE_LIMITED, "HTTP 429 Too Many Requests"),
        (500, "retry", Reason.HTTP_ERROR, "HTTP 500 Internal Server Error"),
        (502, "retry", Reason.HTTP_ERROR, "HTTP 502 Bad Gateway"),
        (503, "retry", Reason.HTTP_ERROR, "HTTP 503 Service Unavailable"),
        (504, "retry", Reason.HTTP_ERROR, "HTTP 504 Gateway Timeout"),
        (599, "retry", Reason.HTTP_ERROR, "HTTP 599"),
        (499, "fail", Reason.HTTP_ERROR, "HTTP 499"),
    ],
)
def test_classify_status(status: int, action: Action, reason: Reason, message: str) -> None:
    """Each status maps to its documented action and reason, with a label that names the status."""
    assert classify_status(status) == Verdict(action, reason, message)


# --- backoff_delay --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 5, 30, 200])
def test_backoff_is_zero_when_rand_is_zero(attempt: int) -> None:
    """Full jitter: the low end of the range is no wait at all, whatever the attempt."""
    assert backoff_delay(attempt, base_s=0.5, cap_s=30.0, rand=lambda: 0.0) == 0.0


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (8, 30.0), (60, 30.0), (1000, 30.0)],
)
def test_backoff_approaches_the_capped_exponential(attempt: int, ceiling: float) -> None:
    """With rand near 1 the wait approaches min(cap, base * 2**(attempt-1)) from below."""
    delay = backoff_delay(attempt, base_s=0.5, cap_s=30.0, rand=lambda: ALMOST_ONE)
    assert delay < ceiling
    assert delay == pytest.approx(ceiling, rel=1e-12)


def test_backoff_scales_rand_over_the_range() -> None:
    """The wait is rand times the ceiling: rand 0.25 at attempt 3 (ceiling 4 s) waits 1 s."""
    assert backoff_delay(3, base_s=1.0, cap_s=100.0, rand=lambda: 0.25) == 1.0


def test_first_attempt_uses_the_base() -> None:
    """Attempt 1 draws from [0, base), not [0, 2 * base)."""
    assert backoff_delay(1, base_s=2.0, cap_s=100.0, rand=lambda: 0.5) == 1.0


def test_backoff_draws_one_random_number_per_call() -> None:
    """Each call consumes exactly one value from the injected source, so runs are reproducible."""
    values = iter([0.1, 0.9])
    assert backoff_delay(4, base_s=1.0, cap_s=100.0, rand=lambda: next(values)) == pytest.approx(0.8)
    assert backoff_delay(4, base_s=1.0, cap_s=100.0, rand=lambda: next(values)) == pytest.approx(7.2)


def test_backoff_cap_holds_for_huge_attempt_numbers() -> None:
    """The cap bounds the wait even for attempt numbers whose uncapped backoff overflows a float."""
    assert backoff_delay(2000, base_s=0.5, cap_s=30.0, rand=lambda: 0.5) == 15.0


# --- retry_after_s --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("  30\t", 30.0),
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120.0),
        ("Wed, 15 Nov 2023 00:15:20 +0200", 120.0),
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),
        ("Tue, 14 Nov 2023 21:13:20 GMT", 0.0),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 0.0),
    ],
)
def test_retry_after_readable(value: str, expected: float) -> None:
    """Delta-seconds are taken as they are; an HTTP-date is seconds after now_epoch, never negative."""
    assert retry_after_s(value, now_epoch=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "-1", "-0.5", "soon", "12 seconds", "nan", "inf", "Tue, 14 Nov 2023 22:15:20"],
)
def test_retry_after_unreadable(value: str | None) -> None:
    """Absent, negative, non-finite, garbage, and zone-less dates all read as "no instruction"."""
    assert retry_after_s(value, now_epoch=NOW) is None


def test_retry_after_date_is_relative_to_the_given_now() -> None:
    """The same HTTP-date means a shorter wait for a later now_epoch: the wall clock is not read."""
    date = "Tue, 14 Nov 2023 22:15:20 GMT"
    assert retry_after_s(date, now_epoch=NOW + 100) == 20.0
