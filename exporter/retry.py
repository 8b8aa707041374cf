"""What to do with a response, and how long to wait before trying again.

Plain functions with no I/O and no event loop: the fetcher asks `classify_status`
for a verdict and `backoff_delay` for a wait, and the pacer asks `retry_after_s`
what the server asked for. Time and randomness come in as arguments.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from http import HTTPStatus
from typing import Literal, NamedTuple

from .errors import Reason

Action = Literal["ok", "retry", "fail", "auth"]

# Statuses worth another try: the server or something in between is busy or
# broken for now. Everything else in 4xx is the request's fault and would fail
# the same way again.
_TRANSIENT_4XX = frozenset({408, 425, 429})


class Verdict(NamedTuple):
    """What the fetcher should do next, and the reason to record if it gives up."""

    action: Action
    reason: Reason | None = None
    message: str = ""


OK = Verdict("ok")


def classify_status(status: int) -> Verdict:
    """The verdict for an HTTP status, before the body is looked at."""
    if status == 200:
        return OK
    label = _label(status)
    if status in (401, 403):
        return Verdict("auth", Reason.AUTH, label)
    if status in (404, 410):
        return Verdict("fail", Reason.NOT_FOUND, label)
    if status == 429:
        return Verdict("retry", Reason.RATE_LIMITED, label)
    if status >= 500 or status in _TRANSIENT_4XX:
        return Verdict("retry", Reason.HTTP_ERROR, label)
    if 300 <= status < 400:
        return Verdict(
            "fail",
            Reason.HTTP_ERROR,
            f"{label}: the API redirected and redirects are not followed "
            "(the token must not travel to another address); point --base-url at the final URL",
        )
    if 200 <= status < 300:
        return Verdict("retry", Reason.BAD_RESPONSE, f"{label}: expected 200 with a recording")
    return Verdict("fail", Reason.HTTP_ERROR, label)


def _label(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): full jitter.

    Uniform over [0, min(cap, base * 2**(attempt-1))): the spread keeps a pool of
    workers that failed together from retrying together.
    """
    doublings = max(0, attempt - 1)
    # 2**1024 overflows a float; long before that the cap has taken over anyway.
    ceiling = cap_s if doublings > 60 else min(cap_s, base_s * float(2**doublings))
    return rand() * ceiling


def retry_after_s(value: str | None, *, now_epoch: float) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or HTTP-date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds + 0.0 if math.isfinite(seconds) and seconds >= 0 else None  # -0 is 0
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch)
