"""Fetch one id to an outcome: a slot from the pacer, one request, and what it means, until done.

`Fetcher.fetch` repeats two steps until the id's turn ends:

* `_attempt`: one request on a `Ticket` from the pool's pacer
  (`exporter.pacing`), told to the pacer (`Pacer.finish`, which answers with an
  `Effect`: the Retry-After, whether the API is down, whether the attempt is
  provisional), classified (`retry.classify_status`) and, for a 200, decoded
  into the exact NDJSON line (`payload.py`). The counters (`FetchStats`) are
  kept there, the in-flight count in a `finally`, so a request abandoned at a
  stop is counted out too.
* `_decide`: what that attempt means for the id, without I/O or waiting: a
  `Success`, a `Failure`, `Later` (try again after a wait: its Retry-After or a
  backoff), the same id again at once (a 429 whose wait holds the whole pool,
  an outage, a verdict awaited), or a token to renew.

The turn ends with an outcome (`outcomes.py`): `Success`, `Failure`, `Later`,
`Unfinished` when the pacer says no request may start any more (a budget, an
outage, a wait beyond the cap; it carries the line that says why), or
`AuthRefused`, which stops the whole run: with a refused token, once a rotated
one (`--token-file`) has been tried, every remaining request would be refused
too.

Whose a failure is, the id's or the API's, is the pacer's to say
(`Effect.outage`, `Effect.spell`), and not always at once: a failure while the
API answers nobody uses an attempt provisionally, and an id whose attempts are
all used that way waits for the verdict before it fails (an outage gives them
back). The pacer may also hand a worker a check instead of a slot: a
recording served earlier, asked for again to learn whether the API is up;
its record is dropped.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .archive.layout import REPORTED_ID_BYTES
from .config import RetrySettings
from .errors import AuthRefused, BadResponse, Reason, TransportError
from .logs import event
from .outcomes import Failure, FetchStats, Later, Outcome, Success, Tries, Unfinished, answer_class
from .pacing import Blame, Effect, HaltDetail, Pacer, Ticket, Trouble
from .payload import PayloadDecoder, Record
from .retry import Verdict, backoff_delay, classify_status
from .transport.client import RawResponse

log = logging.getLogger(__name__)

#: Token renewals one id may go through (a token file flapping between refused tokens ends here).
_MAX_TOKEN_RENEWALS = 2


class Getter(Protocol):
    async def get(self, record_id: str) -> RawResponse: ...


class _Next(enum.Enum):
    """What the fetch loop does after an attempt that did not end the id's turn."""

    #: Ask the pacer for another slot for the same id (a 429 the whole pool waits out, an
    #: outage, or the verdict on provisional attempts awaited).
    AGAIN = enum.auto()
    #: The token was refused: renew it and send the same request again, or stop the run.
    RENEW_TOKEN = enum.auto()


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one request for an id came to: the pacer's word on it and what the answer means."""

    effect: Effect
    verdict: Verdict
    #: None: no answer (a transport error).
    status: int | None = None
    #: The generation of the token the request carried, to renew it if it was refused.
    token_generation: int = 0
    #: The recording's line, checked, when the answer was one.
    line: Record | None = None


class Fetcher:
    """Turns an id into a Success, a Failure, Later or Unfinished, retrying what is worth retrying."""

    __slots__ = ("_client", "_clock", "_decode", "_pacer", "_rand", "_renew_token", "_retry", "stats")

    def __init__(
        self,
        client: Getter,
        pacer: Pacer,
        retry: RetrySettings,
        *,
        stats: FetchStats | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        renew_token: Callable[[int], bool] | None = None,
    ) -> None:
        self._client = client
        #: Given the refused token's generation, True if another token is there to try
        #: (`credentials.TokenSource.renew`).
        self._renew_token = renew_token
        self._decode = PayloadDecoder()
        self._pacer = pacer
        self._retry = retry
        self._rand = rand
        self._clock = clock
        self.stats = stats if stats is not None else FetchStats()

    async def fetch(self, record_id: str, tries: Tries | None = None) -> Outcome:
        """Try `record_id` until it succeeds, fails for good, must wait (`Later`), or the pool halts.

        A 429 is the API pacing us, and an outage of the whole API is not this id's
        fault: neither uses up one of its --max-attempts. An id that must wait before
        its next try comes back as `Later`, so its worker takes other ids meanwhile
        instead of sleeping: a pool whose workers all sat out their Retry-Afters would
        send in bursts, once a second, and learn nothing about the rate in between.
        """
        max_attempts = self._retry.max_attempts
        tries = tries if tries is not None else Tries()
        renewals = 0
        while True:
            self._judge(tries)
            if tries.counted >= max_attempts:
                return self._gave_up(record_id, tries)
            # All attempts used, some provisionally: no further one before the verdict on those.
            pending = tries.spell if tries.counted + tries.provisional >= max_attempts else None
            ticket = await self._pacer.start(pending=pending)
            if ticket is None:
                continue  # the verdict is in
            if isinstance(ticket, HaltDetail):
                return Unfinished(record_id, ticket.halt, ticket.message)
            if ticket.canary is not None:
                await self._ask(ticket, ticket.canary)
                continue
            tries.sent += 1
            attempt = await self._attempt(ticket, record_id)
            decision = self._decide(record_id, attempt, tries)
            if decision is _Next.AGAIN:
                continue
            if decision is _Next.RENEW_TOKEN:
                if renewals < _MAX_TOKEN_RENEWALS and self._renewed(attempt.token_generation):
                    renewals += 1  # the token was rotated: the same request, with the new one
                    continue
                raise AuthRefused(
                    f"the API refused the token ({attempt.verdict.message} for id {record_id!r}); "
                    "check EXPORTER_TOKEN or --token-file: the token may be wrong, expired or revoked"
                )
            return decision

    async def _attempt(self, ticket: Ticket, record_id: str) -> Attempt:
        """One request for `record_id` on `ticket`: sent, told to the pacer, and what its answer means."""
        effect, answer = await self._ask(ticket, record_id)
        if isinstance(answer, TransportError):
            return Attempt(
                effect, Verdict("retry" if answer.retryable else "fail", answer.reason, str(answer))
            )
        verdict = classify_status(answer.status)
        line = None
        if verdict.action == "ok":
            try:
                line = self._decode(answer.body, record_id)
            except BadResponse as exc:
                verdict = Verdict("retry", Reason.BAD_RESPONSE, str(exc))
            else:
                self._pacer.served(record_id, len(line))
        return Attempt(effect, verdict, answer.status, answer.token_generation, line)

    async def _ask(self, ticket: Ticket, record_id: str) -> tuple[Effect, RawResponse | TransportError]:
        """One request for `record_id` on `ticket`, told to the pacer; what it means and what came back.

        A check (`ticket.canary`) goes through here too: the pacer learns from it whether
        the API is up, and its answer goes no further.
        """
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        try:
            answer: RawResponse | TransportError = await self._client.get(record_id)
        except TransportError as exc:
            answer = exc
        finally:
            stats.in_flight -= 1  # answered, failed, or abandoned at a stop
        if isinstance(answer, TransportError):
            stats.answers["error"] += 1
            trouble = Trouble(str(answer), answer.cause, answer.connected) if answer.down else None
            return self._pacer.finish(ticket, status=None, record_id=record_id, trouble=trouble), answer
        status = answer.status
        stats.answers[answer_class(status)] += 1
        trouble = Trouble(classify_status(status).message) if status in _DOWN_STATUSES else None
        effect = self._pacer.finish(
            ticket, status=status, headers=answer.headers, record_id=record_id, trouble=trouble
        )
        return effect, answer

    def _decide(self, record_id: str, attempt: Attempt, tries: Tries) -> Outcome | _Next:
        """What `attempt` means for `record_id`: an outcome, or what the fetch loop does next.

        No I/O and no waiting: it counts the attempt in `tries` (for good, or provisionally
        in a dry spell) and a retry in the counters, and reads the clock for `Later`.
        """
        verdict, effect, status = attempt.verdict, attempt.effect, attempt.status
        if attempt.line is not None:
            return Success(record_id, attempt.line, tries.sent)
        if verdict.action == "auth":
            return _Next.RENEW_TOKEN
        reason = verdict.reason or Reason.HTTP_ERROR
        if verdict.action == "fail":
            return Failure(record_id, reason, verdict.message, status, tries.sent)
        if effect.over_cap:
            return Failure(record_id, reason, f"{verdict.message}; {effect.over_cap}", status, tries.sent)
        self.stats.retries += 1
        if status == 429:
            self.stats.rate_limited += 1
            # Waiting is the answer: the pacer has slowed the pool; this id waits out its
            # Retry-After (unless the whole pool is waiting it out) and goes again.
            if own := effect.own_wait_s():
                return Later(record_id, self._clock() + own, tries)
            return _Next.AGAIN
        if effect.outage:
            # The pool waits for the API as one (Pacer.start); no attempt is used up.
            return _Next.AGAIN
        tries.last = (reason, verdict.message, status)
        if effect.spell:
            self._judge(tries)  # an earlier spell of this id is over, so judged
            tries.spell = effect.spell
            tries.provisional += 1
        else:
            tries.counted += 1
        used = tries.counted + tries.provisional
        if used >= self._retry.max_attempts:
            if not tries.provisional:
                return self._gave_up(record_id, tries)
            return _Next.AGAIN  # wait for the verdict on the provisional ones (Pacer.start(pending=...))
        retry = self._retry
        delay = backoff_delay(used, base_s=retry.backoff_base_s, cap_s=retry.backoff_cap_s, rand=self._rand)
        again_in_s = max(delay, effect.own_wait_s())
        log.debug(
            "retrying %r in %.2fs after attempt %d: %s",
            record_id,
            again_in_s,
            tries.sent,
            verdict.message,
            extra=event(
                "retry",
                id=record_id[:REPORTED_ID_BYTES],
                attempt=tries.sent,
                status=status,
                reason=reason.value,
                wait_s=round(again_in_s, 3),
                error=verdict.message,
            ),
        )
        return Later(record_id, self._clock() + again_in_s, tries)

    def _renewed(self, generation: int) -> bool:
        """Whether another token than the refused one (of `generation`) is there to try."""
        return self._renew_token is not None and self._renew_token(generation)

    def _judge(self, tries: Tries) -> None:
        """Settle the id's provisional attempts once their spell has a verdict."""
        if not tries.provisional:
            return
        blame = self._pacer.verdict(tries.spell)
        if blame is Blame.UNKNOWN:
            return
        if blame is Blame.ID:
            tries.counted += tries.provisional
        tries.provisional = 0

    def _gave_up(self, record_id: str, tries: Tries) -> Failure:
        reason, message, status = tries.last or (Reason.HTTP_ERROR, "no answer", None)
        return Failure(
            record_id,
            reason,
            f"{message} (gave up after {tries.sent} attempts; --max-attempts)",
            status,
            tries.sent,
        )


_DOWN_STATUSES = frozenset({500, 502, 503, 504})
