"""Fetch one id to a final outcome: the attempt loop around limiter, client and payload.

Each attempt waits for the rate limiter, makes one request, and asks
`retry.classify_status` and `payload.decode_record` what the answer means. The
loop ends with a `Success` (the exact NDJSON line), a `Failure` (a reason worth
recording), or `AuthRefused`, which stops the whole run: with a refused token
every remaining request would be refused too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from .client import RawResponse
from .config import RetrySettings
from .errors import AuthRefused, BadResponse, Reason, TransportError
from .limiter import RateLimiter
from .payload import PayloadDecoder, Record
from .retry import Verdict, backoff_delay, classify_status, rate_limit_wait_s, retry_after_s

log = logging.getLogger(__name__)

_RATE_LIMIT_REMAINING = "X-RateLimit-Remaining"
#: Token renewals one id may go through (a token file flapping between refused tokens ends here).
_MAX_TOKEN_RENEWALS = 2


@dataclass(slots=True)
class Success:
    """A recording fetched and checked: `line` is what goes into the records file (no newline)."""

    id: str
    line: Record
    attempts: int


@dataclass(slots=True)
class Failure:
    """An id that did not export, and why; one line of failed.ndjson."""

    id: str
    reason: Reason
    error: str
    status: int | None = None
    attempts: int = 0
    #: The manifest line, for problems found in the manifest itself.
    line: int | None = None

    def to_json_line(self, *, run: int, at: str) -> bytes:
        entry: dict[str, object] = {
            "id": self.id,
            "reason": self.reason.value,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "run": run,
            "at": at,
        }
        if self.line is not None:
            entry["line"] = self.line
        return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


@dataclass(slots=True)
class FetchStats:
    """Counters for summary.json; touched only from the event loop."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


class Getter(Protocol):
    async def get(self, record_id: str) -> RawResponse: ...


class Fetcher:
    """Turns an id into a Success or a Failure, retrying what is worth retrying."""

    __slots__ = (
        "_client",
        "_decode",
        "_limiter",
        "_monotonic",
        "_now",
        "_rand",
        "_renew_token",
        "_retry",
        "_sleep",
        "stats",
    )

    def __init__(
        self,
        client: Getter,
        limiter: RateLimiter,
        retry: RetrySettings,
        *,
        stats: FetchStats | None = None,
        now_epoch: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        renew_token: Callable[[int], bool] | None = None,
    ) -> None:
        self._client = client
        #: Given the refused token's generation, True if another token is there to try
        #: (`credentials.TokenSource.renew`).
        self._renew_token = renew_token
        self._decode = PayloadDecoder()
        self._limiter = limiter
        self._retry = retry
        self._now = now_epoch
        self._monotonic = monotonic
        self._rand = rand
        self._sleep = sleep
        self.stats = stats if stats is not None else FetchStats()

    async def fetch(self, record_id: str) -> Success | Failure:
        """Fetch `record_id` until it succeeds, fails for good, or attempts run out."""
        retry = self._retry
        attempt = renewals = 0
        while True:
            attempt += 1
            started = await self._limiter.acquire()
            self.stats.requests += 1
            status: int | None = None
            wait_s: float | None = None
            try:
                response = await self._client.get(record_id)
            except TransportError as exc:
                verdict = Verdict("retry" if exc.retryable else "fail", exc.reason, str(exc))
            else:
                status = response.status
                if self._limiter.response(started, rate_limited=status == 429):
                    log.debug("the API keeps answering 429: lowering the request rate for all workers")
                if status != 200 or _RATE_LIMIT_REMAINING in response.headers:
                    wait_s = self._server_wait(response)
                verdict = classify_status(status)
                if verdict.action == "ok":
                    try:
                        return Success(record_id, self._decode(response.body, record_id), attempt)
                    except BadResponse as exc:
                        verdict = Verdict("retry", Reason.BAD_RESPONSE, str(exc))
            if verdict.action == "auth":
                if (
                    self._renew_token is not None
                    and renewals < _MAX_TOKEN_RENEWALS
                    and self._renew_token(response.token_generation)
                ):
                    renewals += 1  # the token was rotated: the same request, with the new one
                    continue
                raise AuthRefused(
                    f"the API refused the token ({verdict.message} for id {record_id!r}); "
                    "check EXPORTER_TOKEN or --token-file: the token may be wrong, expired or revoked"
                )
            reason = verdict.reason or Reason.HTTP_ERROR
            if verdict.action == "fail":
                return Failure(record_id, reason, verdict.message, status, attempt)
            if wait_s is not None and wait_s > retry.retry_after_max_s:
                return Failure(
                    record_id,
                    reason,
                    f"{verdict.message}; the API asked to wait {wait_s:.0f}s, more than "
                    f"{retry.retry_after_max_s:.0f}s: run again later",
                    status,
                    attempt,
                )
            if attempt >= retry.max_attempts:
                return Failure(
                    record_id,
                    reason,
                    f"{verdict.message} (gave up after {attempt} attempts; --max-attempts)",
                    status,
                    attempt,
                )
            self.stats.retries += 1
            delay = backoff_delay(
                attempt, base_s=retry.backoff_base_s, cap_s=retry.backoff_cap_s, rand=self._rand
            )
            log.debug(
                "retrying %r in %.2fs after attempt %d: %s",
                record_id,
                delay,
                attempt,
                verdict.message,
            )
            await self._sleep(delay)

    def _server_wait(self, response: RawResponse) -> float | None:
        """Apply what the server said about its limits to the whole pool; the wait it asked for."""
        headers = response.headers
        wait_s: float | None = None
        if response.status == 429:
            self.stats.rate_limited += 1
            wait_s = retry_after_s(headers.get("Retry-After"), now_epoch=self._now())
        if wait_s is None:
            wait_s = rate_limit_wait_s(headers, now_epoch=self._now())
        if wait_s is not None and wait_s <= self._retry.retry_after_max_s:
            self._limiter.pause_until(self._monotonic() + wait_s)
        return wait_s
