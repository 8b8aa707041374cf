"""Quotas the API announces in its headers, and the pace that spends them evenly.

Pure: header values and times in, numbers out.

Three spellings are read (the first found wins):

* the IETF fields of draft-ietf-httpapi-ratelimit-headers (-07 and later):
  `RateLimit-Policy: "default";q=100;w=10` and `RateLimit: "default";r=37;t=4`
  (r: requests remaining, t: seconds until the quota is restored). With
  several policies, the one that leaves the slowest pace binds;
* the draft's older fields `RateLimit-Limit/-Remaining/-Reset` (and the
  single-field `RateLimit: limit=100, remaining=37, reset=4`);
* the common `X-RateLimit-Limit/-Remaining/-Reset`, whose reset is either
  delta-seconds or a Unix time (GitHub), told apart by size.

Spreading what is left over what is left of the window is exact for a fixed
window and, for a token bucket whose refill takes seconds, settles at its rate
with the bucket half full. But a small bucket also sends these fields (limit =
its burst, reset = time until it is full again, often rounded up to a whole
second): spreading 3 remaining over a rounded-up second would pace a 40/s API
at a few per second. So an announcement whose window (or reset) is under
2 s is not spread; such limits are found from their 429s (`congestion.py`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: Every field read here (each spelling's, as tried in `parse_quota`).
FIELDS = (
    "RateLimit",
    "RateLimit-Policy",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)
# X-RateLimit-Reset above this is a Unix time (seconds), above the next in milliseconds.
_EPOCH_S = 1_000_000_000
_EPOCH_MS = 1_000_000_000_000
# Reset times of one window may differ by this much (whole-second rounding, latency).
_SAME_WINDOW_S = 1.5
# Windows shorter than this are not worth spreading (and are how token buckets look).
_MIN_WINDOW_S = 2.0
# Start spreading a little after the announced reset: its rounding may be ours to absorb.
RESET_MARGIN_S = 0.25
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")
_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*(\d+(?:\.\d+)?)\s*(?=;|$)")


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """One answer's word on the quota: what is left, and when it is whole again."""

    remaining: int
    reset_s: float
    limit: int | None = None
    #: The window's length when the policy names it (IETF `w`), else None.
    window_s: float | None = None


def parse_quota(headers: Mapping[str, str], *, now_epoch: float) -> QuotaReport | None:
    """The quota an answer announces, or None when it announces none (or nothing readable)."""
    ietf = headers.get("RateLimit")
    if ietf is not None and ";" in ietf:
        report = _ietf(ietf, headers.get("RateLimit-Policy"))
        if report is not None:
            return report
    if ietf is not None and "remaining" in ietf.lower():
        fields = dict(_pairs(ietf))
        return _report(fields.get("limit"), fields.get("remaining"), fields.get("reset"), now_epoch)
    for prefix in ("RateLimit-", "X-RateLimit-"):
        remaining = headers.get(prefix + "Remaining")
        if remaining is not None:
            return _report(headers.get(prefix + "Limit"), remaining, headers.get(prefix + "Reset"), now_epoch)
    return None


def _ietf(value: str, policy: str | None) -> QuotaReport | None:
    windows: dict[str, tuple[float | None, float | None]] = {}
    if policy is not None:
        for item in _items(policy):
            name, params = item
            windows[name] = (params.get("q"), params.get("w"))
    best: QuotaReport | None = None
    for name, params in _items(value):
        remaining, reset = params.get("r"), params.get("t")
        if remaining is None or reset is None:
            continue
        quota, window = windows.get(name, (None, None))
        report = QuotaReport(
            remaining=int(remaining),
            reset_s=reset,
            limit=None if quota is None else int(quota),
            window_s=window,
        )
        if best is None or _pace(report) < _pace(best):
            best = report
    return best


def _pace(report: QuotaReport) -> float:
    return report.remaining / max(report.reset_s, 1e-3)


def _items(value: str) -> list[tuple[str, dict[str, float]]]:
    """Items of a structured-field list: `"name";k=v;k=v, ...` (names may be tokens too)."""
    items = []
    for raw in value.split(","):
        name, _, rest = raw.strip().partition(";")
        params = {key: float(number) for key, number in _PARAM.findall(";" + rest) if _finite(number)}
        items.append((name.strip().strip('"'), params))
    return items


def _pairs(value: str) -> list[tuple[str, str]]:
    pairs = []
    for part in value.split(","):
        key, _, number = part.partition("=")
        pairs.append((key.strip().lower(), number.strip()))
    return pairs


def _finite(text: str) -> bool:
    return len(text) < 20 and math.isfinite(float(text))


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    match = _NUMBER.match(text)
    if match is None or len(match.group(1)) > 20:
        return None
    return float(match.group(1))


def _report(
    limit: str | None, remaining: str | None, reset: str | None, now_epoch: float
) -> QuotaReport | None:
    left, when = _number(remaining), _number(reset)
    if left is None or when is None:
        return None
    if when > _EPOCH_MS:
        when = when / 1000 - now_epoch
    elif when > _EPOCH_S:
        when -= now_epoch
    cap = _number(limit)
    return QuotaReport(remaining=int(left), reset_s=max(0.0, when), limit=None if cap is None else int(cap))


class QuotaTracker:
    """Follows an announced quota from answer to answer and says how fast it may be spent.

    Times are the caller's monotonic clock. `pace(now)` is None while no quota
    binds; otherwise the rate that spreads what is left evenly over the rest of
    the window, counting as spent every request started since (or still in
    flight at) the answer that said what is left.
    """

    __slots__ = ("_in_flight", "_left", "_reset_at", "_sent")

    def __init__(self) -> None:
        self._reset_at = -math.inf  # when the tracked quota is whole again
        self._left = 0  # the lowest "remaining" any answer about that window gave
        self._sent = 0  # requests that may not be counted in `_left` yet
        self._in_flight = 0

    def started(self) -> None:
        """A request was started: one less to spend until an answer says otherwise."""
        self._sent += 1
        self._in_flight += 1

    def answered(self, now: float, report: QuotaReport | None) -> None:
        """A request was answered at `now`, announcing `report` (None: it said nothing)."""
        self._in_flight = max(0, self._in_flight - 1)
        if report is None:
            return
        reset_at = now + report.reset_s
        if abs(reset_at - self._reset_at) <= _SAME_WINDOW_S and now < self._reset_at:
            if report.remaining < self._left - self._sent + self._in_flight:
                self._left, self._sent = report.remaining, self._in_flight
            return
        window = report.window_s if report.window_s is not None else report.reset_s
        if window < _MIN_WINDOW_S or (report.reset_s < _MIN_WINDOW_S and now < self._reset_at):
            # A token bucket's "time until full", or a window about to end: nothing to spread.
            return
        self._reset_at = reset_at
        self._left = report.remaining
        self._sent = self._in_flight

    def pace(self, now: float) -> tuple[float, float] | None:
        """(requests per second, until when) that spend what is left evenly; None: no quota binds."""
        until = self._reset_at + RESET_MARGIN_S
        if now >= until:
            return None
        left = max(0, self._left - self._sent)
        return left / (until - now), until

    def __repr__(self) -> str:
        return f"<QuotaTracker left={self._left - self._sent} reset_at={self._reset_at:.3f}>"
