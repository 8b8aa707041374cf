"""What the server counts (Stats, for GET /_stats) and the live state one config runs with."""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from collections.abc import Callable, Collection
from typing import Any

from fakeapi.config import (
    OUTAGE_FIELDS,
    QUERIES_LIMIT,
    REQUEST_TIMES_LIMIT,
    UNKNOWN_PATHS_LIMIT,
    ServerConfig,
)
from fakeapi.limits import FixedWindowQuota, OutageSchedule, TokenBucket


class Stats:
    """Counters the tests assert on; touched only from the server's event loop."""

    __slots__ = (
        "bad_auth",
        "by_status",
        "faults",
        "in_flight",
        "max_in_flight",
        "per_id",
        "queries",
        "quota_limited",
        "rate_limited",
        "request_times",
        "requests_total",
        "responses",
        "responses_total",
        "unknown_path_requests",
        "unknown_paths",
    )

    def __init__(self) -> None:
        self.requests_total = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.per_id: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bad_auth = 0
        self.rate_limited = 0
        self.quota_limited = 0
        self.faults: collections.Counter[str] = collections.Counter()
        self.queries: collections.Counter[str] = collections.Counter()
        self.request_times: collections.deque[float] = collections.deque(maxlen=REQUEST_TIMES_LIMIT)
        # (clock, status) per API response, so a benchmark can see accepted rate and 429 share
        # over time; responses_total numbers them, for GET /_stats/responses?since=N.
        self.responses: collections.deque[tuple[float, int]] = collections.deque(maxlen=REQUEST_TIMES_LIMIT)
        self.responses_total = 0
        self.unknown_path_requests = 0
        self.unknown_paths: collections.deque[str] = collections.deque(maxlen=UNKNOWN_PATHS_LIMIT)

    def on_arrival(self, recording_id: str, raw_query: str, now: float) -> None:
        """Count an API request as it arrives, before any decision about it."""
        self.requests_total += 1
        self.per_id[recording_id] += 1
        self.request_times.append(now)
        if raw_query and (raw_query in self.queries or len(self.queries) < QUERIES_LIMIT):
            self.queries[raw_query] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def on_response(self, status: int, now: float) -> None:
        """Count an API response as it leaves."""
        self.by_status[status] += 1
        self.responses.append((now, status))
        self.responses_total += 1

    def responses_since(self, since: int) -> dict[str, Any]:
        """The timeline from response number since on (those still kept): for polling."""
        first = self.responses_total - len(self.responses)
        skip = min(len(self.responses), max(0, since - first))
        kept = list(itertools.islice(self.responses, skip, None))
        return {"total": self.responses_total, "first": first + skip, "responses": kept}

    def snapshot(self) -> dict[str, Any]:
        """The JSON served by GET /_stats (status codes become string keys)."""
        return {
            "requests_total": self.requests_total,
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "per_id": dict(self.per_id),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "bad_auth": self.bad_auth,
            "rate_limited": self.rate_limited,
            "quota_limited": self.quota_limited,
            "faults": dict(self.faults),
            "queries": dict(self.queries),
            "request_times": list(self.request_times),
            "responses": [list(entry) for entry in self.responses],
            "responses_total": self.responses_total,
            "unknown_path_requests": self.unknown_path_requests,
            "unknown_paths": list(self.unknown_paths),
        }


class ServerState:
    """The live config plus everything that changes per request; one per app."""

    __slots__ = ("attempts", "bucket", "changed", "clock", "config", "jitter_rng", "outage", "quota", "stats")

    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.config = config
        self.stats = Stats()
        # Requests per id that got past auth and the rate limiter: drives fail_first and
        # fault_rate, so a 401 or a limiter 429 does not use up an id's scripted faults.
        self.attempts: collections.Counter[str] = collections.Counter()
        self.jitter_rng = random.Random(config.seed)
        self.bucket = self._new_bucket(config)
        self.quota = self._new_quota(config)
        self.outage = OutageSchedule(config.outage_s, config.outage_after_s, clock())
        # Set whenever the outage schedule may have moved, to wake the listener's driver.
        self.changed = asyncio.Event()

    def _new_quota(self, config: ServerConfig) -> FixedWindowQuota | None:
        """A fresh quota whose windows start now, or None when the quota is off."""
        if config.quota_limit is None:
            return None
        return FixedWindowQuota(config.quota_limit, config.quota_window_s, self.clock)

    def on_api_request(self) -> None:
        """An API request arrived: it may fix the start of an outage scheduled 'after'."""
        if self.outage.on_request(self.clock()):
            self.changed.set()

    def outage_remaining_s(self) -> float:
        """Seconds of the outage left now (0.0 when the API is up)."""
        return self.outage.remaining_s(self.clock())

    def snapshot(self) -> dict[str, Any]:
        """GET /_stats: the counters, plus the clock the timelines use and where windows start."""
        out = self.stats.snapshot()
        out["clock"] = self.clock()
        out["quota_origin"] = None if self.quota is None else self.quota.origin
        out["outage_start"] = self.outage.start
        return out

    def _new_bucket(self, config: ServerConfig) -> TokenBucket | None:
        """A full bucket for the config's limit, or None when the limit is off."""
        if config.rate_limit_rps is None:
            return None
        return TokenBucket(config.rate_limit_rps, config.effective_burst, self.clock)

    def apply(self, config: ServerConfig, changed: Collection[str] = ()) -> None:
        """Switch to a new config; changed names the fields the caller set.

        The bucket restarts full and the quota's windows restart only if their settings
        changed; naming outage_s or outage_after_s schedules the outage anew, even with the
        same values (that is how a test starts a second one).
        """
        old = self.config
        self.config = config
        limits = (config.rate_limit_rps, config.effective_burst)
        if limits != (old.rate_limit_rps, old.effective_burst):
            self.bucket = self._new_bucket(config)
        if (config.quota_limit, config.quota_window_s) != (old.quota_limit, old.quota_window_s):
            self.quota = self._new_quota(config)
        if config.seed != old.seed:
            self.jitter_rng = random.Random(config.seed)
        if OUTAGE_FIELDS & set(changed):
            self.outage = OutageSchedule(config.outage_s, config.outage_after_s, self.clock())
        self.changed.set()  # a change of outage_mode alone matters to the driver too

    def reset(self) -> None:
        """As if just started with this config: stats, fail_first counts, revocation, the
        bucket's level and the quota's windows are fresh, and the outage is scheduled anew."""
        self.stats = Stats()
        self.attempts.clear()
        self.bucket = self._new_bucket(self.config)
        self.quota = self._new_quota(self.config)
        self.outage = OutageSchedule(self.config.outage_s, self.config.outage_after_s, self.clock())
        self.changed.set()
