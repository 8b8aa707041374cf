"""Fetch one id to a final outcome: the attempt loop around limiter, client and payload.

Each attempt waits for the pool's pacer (`pacing.py`), makes one request, tells
the pacer what came back, and asks `retry.classify_status` and the payload
decoder what the answer means. The loop ends with a `Success` (the exact NDJSON
line), a `Failure` (a reason worth recording), `Later` (try again after a wait),
`Unfinished` (the pool may send no more: a budget or an outage), or
`AuthRefused`, which stops the whole run: with a refused token every remaining
request would be refused too.

Whose a failure is, the id's or the API's, is the pacer's to say
(`outage.OutageBreaker`), and not always at once: a failure while the API
answers nobody uses an attempt provisionally, and an id whose attempts are all
used that way waits for the verdict before it fails (an outage gives them
back). The pacer may also hand a worker a check instead of a slot: a
recording served earlier, asked for again to learn whether the API is up;
its record is dropped.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from .archive.layout import REPORTED_ID_BYTES
from .config import RetrySettings
from .errors import AuthRefused, BadResponse, Reason, TransportError
from .logs import event
from .outcomes import Failure, FetchStats, Later, Outcome, Success, Tries, Unfinished, answer_class
from .pacing import Blame, Effect, HaltDetail, Pacer, Ticket, Trouble
from .payload import PayloadDecoder
from .retry import Verdict, backoff_delay, classify_status
from .transport.client import RawResponse

log = logging.getLogger(__name__)

#: Token renewals one id may go through (a token file flapping between refused tokens ends here).
_MAX_TOKEN_RENEWALS = 2


class Getter(Protocol):
    async def get(self, record_id: str) -> RawResponse: ...


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
        retry = self._retry
        tries = tries if tries is not None else Tries()
        renewals = 0
        while True:
            self._judge(tries)
            if tries.counted >= retry.max_attempts:
                return self._gave_up(record_id, tries)
            # All attempts used, some provisionally: no further one before the verdict on those.
            pending = tries.spell if tries.counted + tries.provisional >= retry.max_attempts else None
            ticket = await self._pacer.start(pending=pending)
            if ticket is None:
                continue  # the verdict is in
            if isinstance(ticket, HaltDetail):
                return Unfinished(record_id, ticket.halt, ticket.message)
            if ticket.canary is not None:
                await self._ask(ticket, ticket.canary)
                continue
            tries.sent += 1
            effect, answer = await self._ask(ticket, record_id)
            status: int | None = None
            generation = 0
            if isinstance(answer, TransportError):
                verdict = Verdict("retry" if answer.retryable else "fail", answer.reason, str(answer))
            else:
                status, generation = answer.status, answer.token_generation
                verdict = classify_status(status)
                if verdict.action == "ok":
                    try:
                        line = self._decode(answer.body, record_id)
                    except BadResponse as exc:
                        verdict = Verdict("retry", Reason.BAD_RESPONSE, str(exc))
                    else:
                        self._pacer.served(record_id, len(line))
                        return Success(record_id, line, tries.sent)
            if verdict.action == "auth":
                if (
                    self._renew_token is not None
                    and renewals < _MAX_TOKEN_RENEWALS
                    and self._renew_token(generation)
                ):
                    renewals += 1  # the token was rotated: the same request, with the new one
                    continue
                raise AuthRefused(
                    f"the API refused the token ({verdict.message} for id {record_id!r}); "
                    "check EXPORTER_TOKEN or --token-file: the token may be wrong, expired or revoked"
                )
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
                continue
            if effect.outage:
                # The pool waits for the API as one (Pacer.start); no attempt is used up.
                continue
            tries.last = (reason, verdict.message, status)
            if effect.spell:
                self._judge(tries)  # an earlier spell of this id is over, so judged
                tries.spell = effect.spell
                tries.provisional += 1
            else:
                tries.counted += 1
            used = tries.counted + tries.provisional
            if used >= retry.max_attempts:
                if not tries.provisional:
                    return self._gave_up(record_id, tries)
                continue  # wait for the verdict on the provisional ones (Pacer.start(pending=...))
            delay = backoff_delay(
                used, base_s=retry.backoff_base_s, cap_s=retry.backoff_cap_s, rand=self._rand
            )
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

    async def _ask(self, ticket: Ticket, record_id: str) -> tuple[Effect, RawResponse | TransportError]:
        """One request for `record_id` on `ticket`, told to the pacer; what it means and what came back.

        A check (`ticket.canary`) goes through here too: the pacer learns from it whether
        the API is up, and its answer goes no further.
        """
        self.stats.requests += 1
        self.stats.in_flight += 1
        try:
            response = await self._client.get(record_id)
        except TransportError as exc:
            self.stats.in_flight -= 1
            self.stats.answers["error"] += 1
            trouble = Trouble(str(exc), exc.cause, exc.connected) if exc.down else None
            return self._pacer.finish(ticket, status=None, record_id=record_id, trouble=trouble), exc
        except BaseException:
            self.stats.in_flight -= 1  # cancelled at a stop: never answered
            raise
        self.stats.in_flight -= 1
        status = response.status
        self.stats.answers[answer_class(status)] += 1
        trouble = Trouble(classify_status(status).message) if status in _DOWN_STATUSES else None
        effect = self._pacer.finish(
            ticket, status=status, headers=response.headers, record_id=record_id, trouble=trouble
        )
        return effect, response

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
