"""A pool of workers, the exporter's Pacer and a simulated rate-limited server, in virtual time.

Discrete events on a heap: a worker asks the Pacer for a start time, its request
reaches the server half a latency later, the answer comes back after the other
half and goes to `Pacer.finish`, and the worker asks again for its next id.
Nothing sleeps, so ten minutes of a 400/s API run in a few seconds,
deterministically.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.config import LimitSettings, RetrySettings
from exporter.pacing import HaltDetail, Pacer, Ticket

EPOCH0 = 1_800_000_000.0

#: A status (None: no answer, e.g. a reset) and headers.
Answer = tuple[int | None, dict[str, str]]

#: Statuses the fetcher reports to the pacer as the API possibly being down (`fetcher._DOWN_STATUSES`).
DOWN_STATUSES = frozenset({500, 502, 503, 504})


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def epoch(self) -> float:
        return EPOCH0 + self.now

    async def sleep(self, seconds: float) -> None:  # never awaited in the simulation
        raise AssertionError("the simulation does not sleep")


class BucketServer:
    """The fake API's token bucket: 429 + Retry-After (whole seconds) + X-RateLimit-* when empty."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last = float(burst), 0.0

    def __call__(self, now: float) -> Answer:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        headers = {"X-RateLimit-Limit": str(self.burst)}
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            status = 200
        else:
            status = 429
            headers["Retry-After"] = str(math.ceil((1.0 - self.tokens) / self.rate))
        headers["X-RateLimit-Remaining"] = str(int(self.tokens))
        full_in = (self.burst - self.tokens) / self.rate
        headers["X-RateLimit-Reset"] = str(math.ceil(EPOCH0 + now + full_in))
        return status, headers


class WindowServer:
    """A fixed-window quota (`limit` per `window_s`), announced with X-RateLimit-* (reset: Unix time)."""

    def __init__(self, limit: int, window_s: float, *, ietf: bool = False) -> None:
        self.limit, self.window_s, self.ietf = limit, window_s, ietf
        self.window, self.used = 0, 0

    def __call__(self, now: float) -> Answer:
        window = int(now // self.window_s)
        if window != self.window:
            self.window, self.used = window, 0
        reset_at = (window + 1) * self.window_s
        if self.used < self.limit:
            self.used += 1
            status = 200
        else:
            status = 429
        left = self.limit - self.used
        headers: dict[str, str]
        if self.ietf:
            headers = {
                "RateLimit-Policy": f'"default";q={self.limit};w={self.window_s:g}',
                "RateLimit": f'"default";r={left};t={math.ceil(reset_at - now)}',
            }
        else:
            headers = {
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": str(math.ceil(EPOCH0 + reset_at)),
            }
        if status == 429:
            headers["Retry-After"] = str(math.ceil(reset_at - now))
        return status, headers


class TransientFaults:
    """A flaky API, whatever the rate: a share of answers are 429 (`Retry-After: 1`, nothing else),
    a share 5xx, a share resets (no answer); the rest are 200s (a 200 whose body is wrong, HTML or
    another id's record, is a 200 to the pacer: the fetcher retries it)."""

    def __init__(self, *, refused: float, errors: float = 0.0, resets: float = 0.0, seed: int = 7) -> None:
        self.bounds = list(itertools.accumulate((refused, errors, resets)))
        if self.bounds[-1] > 1.0:
            raise ValueError("the shares add up to more than 1")
        self.rng = random.Random(seed)

    def __call__(self, now: float) -> Answer:
        draw = self.rng.random()
        if draw < self.bounds[0]:
            return 429, {"Retry-After": "1"}
        if draw < self.bounds[1]:
            return self.rng.choice((500, 502, 503, 504)), {}
        if draw < self.bounds[2]:
            return None, {}
        return 200, {}


def flaky_api(seed: int = 7) -> TransientFaults:
    """Issue 16's flaky API as the pacer sees it: 60% of first and second attempts fault, which
    makes 784 answers for 400 ids, and the faults are drawn evenly from 500, 502, 503, 504, two
    each of resets and half bodies, HTML with 200, another id's record, and two of 429 with
    `Retry-After: 1` (scripts/bench.py's case g): 8% of the answers are 429s, 16% 5xx and 16%
    resets; the 8% with a wrong body are 200s to the pacer."""
    return TransientFaults(refused=0.08, errors=0.16, resets=0.16, seed=seed)


class Both:
    """Transient faults or random refusals in front of a real limit: a request the first refuses
    never reaches the limit."""

    def __init__(self, *servers: Callable[[float], Answer]) -> None:
        self.servers = servers

    def __call__(self, now: float) -> Answer:
        for server in self.servers:
            status, headers = server(now)
            if status != 200:
                return status, headers
        return 200, {}


@dataclass
class Outcome:
    """What the server saw: when it accepted requests and when it refused them."""

    accepted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    #: Other faults (5xx, resets, bad bodies): answered, neither accepted nor a 429.
    faulted: list[float] = field(default_factory=list)
    #: (time, the pace allowed) after every answer.
    paces: list[tuple[float, float]] = field(default_factory=list)
    pacer: Pacer | None = None

    def rate(self, start: float, end: float) -> float:
        return sum(1 for t in self.accepted if start <= t < end) / (end - start)

    def sent_rate(self, start: float, end: float) -> float:
        """Requests per second that reached the server, whatever it answered."""
        times = (self.accepted, self.refused, self.faulted)
        return sum(1 for ts in times for t in ts if start <= t < end) / (end - start)

    def lowest_pace(self, start: float = 0.0) -> float:
        """The lowest pace the pacer allowed from `start` on."""
        return min(pace for t, pace in self.paces if t >= start)

    def refused_share(self, start: float, end: float) -> float:
        ok = sum(1 for t in self.accepted if start <= t < end)
        bad = sum(1 for t in self.refused if start <= t < end)
        return bad / max(1, ok + bad)

    def converged_at(self, target: float, *, window_s: float = 5.0, until: float) -> float:
        """The first time after which every `window_s` window's accepted rate stays >= target."""
        step = 0.5
        last_bad = 0.0
        t = 0.0
        while t + window_s <= until:
            if self.rate(t, t + window_s) < target:
                last_bad = t + window_s
            t += step
        return last_bad


def simulate(
    server: Callable[[float], Answer],
    *,
    duration_s: float,
    rate_per_s: float,
    concurrency: int,
    latency_s: float = 0.01,
    burst: int | None = None,
) -> Outcome:
    """Run `concurrency` workers against `server` for `duration_s` virtual seconds."""
    clock = VirtualClock()
    limits = LimitSettings(
        concurrency=concurrency,
        rate_per_s=rate_per_s,
        burst=burst if burst is not None else max(1, math.ceil(rate_per_s or 1)),
    )
    pacer = Pacer(limits, RetrySettings(), clock=clock, now_epoch=clock.epoch, sleep=clock.sleep)
    outcome = Outcome(pacer=pacer)
    seq = 0
    # (time, seq, kind, worker, ticket): kinds "want", "arrive", "answer".
    events: list[tuple[float, int, str, Ticket | None, Answer | None]] = []

    def push(at: float, kind: str, ticket: Ticket | None = None, answer: Answer | None = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, ticket, answer))

    for _ in range(concurrency):
        push(0.0, "want")
    while events:
        at, _, kind, ticket, answer = heapq.heappop(events)
        if at > duration_s:
            break
        clock.now = at
        if kind == "want":
            admitted = pacer.reserve(at)
            if isinstance(admitted, HaltDetail):
                continue
            if isinstance(admitted, float):
                push(at + min(admitted, 1.0), "want")
                continue
            push(admitted.started_at + latency_s / 2, "arrive", admitted)
        elif kind == "arrive":
            assert ticket is not None
            pacer.going(ticket)
            status, headers = server(at)
            kept = {200: outcome.accepted, 429: outcome.refused}.get(status or 0, outcome.faulted)
            kept.append(at)
            push(at + latency_s / 2, "answer", ticket, (status, headers))
        else:
            assert ticket is not None
            assert answer is not None
            status, headers = answer
            pacer.finish(
                ticket, status=status, headers=headers, down=status is None or status in DOWN_STATUSES
            )
            outcome.paces.append((at, pacer.rate_now()))
            # A refused id is parked until its Retry-After (jobs.JobSource) and the worker takes
            # another: ids are endless here, so the worker simply asks again at once.
            push(at, "want")
    return outcome
