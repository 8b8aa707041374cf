"""How a wait, and the moment it ends, are written: for a person, and for summary.json.

A server chooses these numbers (a `Retry-After`, a quota's reset), and
`X-RateLimit-Reset: 999999999999999` is the year 33658, which `datetime` cannot
hold. So every function here takes any float and returns text: a
moment `datetime` cannot hold (past the year 9999, or an overflow of the
platform's time functions) is said as such, never raised. A moment today is
written as a time of day; any other day carries its date.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

_MINUTE = 60.0
_HOUR = 3600.0
_DAY = 86400.0
_YEAR = 365.25 * _DAY


def _local(epoch: float) -> datetime | None:
    if not math.isfinite(epoch):
        return None
    try:
        return datetime.fromtimestamp(epoch)
    except (OverflowError, OSError, ValueError):
        return None


def seconds_text(seconds: float) -> str:
    """`3600 s`, or `1e+300 s` for a number no one would read digit by digit."""
    if math.isfinite(seconds) and abs(seconds) < 1e7:
        return f"{seconds:.0f} s"
    return f"{seconds:.3g} s"


def duration_text(seconds: float) -> str:
    """A wait in the unit a person thinks in: `45 s`, `12 min`, `5 h`, `3 days`, `31,688 years`."""
    if not math.isfinite(seconds) or seconds >= 1e6 * _YEAR:
        return "more than a million years"
    if seconds < 2 * _MINUTE:
        return f"{seconds:.0f} s"
    if seconds < 2 * _HOUR:
        return f"{seconds / _MINUTE:.0f} min"
    if seconds < 2 * _DAY:
        return f"{seconds / _HOUR:.0f} h"
    if seconds < 2 * _YEAR:
        return f"{seconds / _DAY:.0f} days"
    return f"{seconds / _YEAR:,.0f} years"


def clock_text(epoch: float, *, now_epoch: float) -> str | None:
    """Local time of day (`14:57:54`) if `epoch` falls today, with the date
    (`2026-12-04 14:57:54`) if not; None when it is past what a calendar here holds."""
    when = _local(epoch)
    if when is None:
        return None
    today = _local(now_epoch)
    if today is not None and when.date() == today.date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def until_text(epoch: float, *, now_epoch: float) -> str:
    """`until 14:57:54`, `until 2026-12-04 14:57:54`, or `for more than a million years`."""
    clock = clock_text(epoch, now_epoch=now_epoch)
    if clock is None:
        return f"for {duration_text(epoch - now_epoch)}"
    return f"until {clock}"


def utc_text(epoch: float) -> str | None:
    """RFC 3339 in UTC (`2026-12-04T13:57:54Z`), or None past what RFC 3339 can write (year 9999)."""
    if not math.isfinite(epoch):
        return None
    try:
        moment = datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
