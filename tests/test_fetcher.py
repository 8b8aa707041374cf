"""fetcher.Fetcher with the real client against the fake API: outcomes, retries, auth.

Requests go over loopback; the pacer's and the fetcher's clocks are a `FakeTime`, so
their waits (backoffs, Retry-After, outages) are instant and exact.
"""

from __future__ import annotations

import json

import pytest
from fake_time import FakeTime
from fakeapi import FakeServerHandle
from runs import TOKEN

from exporter.config import HttpSettings, LimitSettings, RetrySettings, Secret
from exporter.errors import AuthRefused, Reason
from exporter.fetcher import Fetcher
from exporter.outcomes import Failure, Later, Success, Unfinished
from exporter.pacing import Halt, Pacer
from exporter.transport.client import RecordingsClient

FAST_RETRY = RetrySettings(max_attempts=4, backoff_base_s=0.001, backoff_cap_s=0.005)


def pacer_on(time: FakeTime, limits: LimitSettings, retry: RetrySettings = FAST_RETRY) -> Pacer:
    """A pacer on the fake clock: its waits are instant and exact; requests still go over loopback."""
    return Pacer(limits, retry, clock=time.clock, now_epoch=time.epoch, sleep=time.sleep)


async def fetch(
    api: FakeServerHandle,
    record_id: str,
    *,
    token: str = TOKEN,
    retry: RetrySettings = FAST_RETRY,
    time: FakeTime | None = None,
    pacer: Pacer | None = None,
    timeout_s: float = 5.0,
    query: tuple[tuple[str, str], ...] = (),
    max_response_bytes: int = 1 << 28,
) -> Success | Failure | Unfinished:
    """Fetch one id to its end on a fake clock (`time`, which `pacer` must be on too, if given)."""
    time = time or FakeTime()
    settings = HttpSettings(
        base_url=api.url,
        token=Secret(token),
        timeout_s=timeout_s,
        query=query,
        max_response_bytes=max_response_bytes,
    )
    async with RecordingsClient(settings) as client:
        pacer = pacer or pacer_on(time, LimitSettings(rate_per_s=0), retry)
        fetcher = Fetcher(client, pacer, retry, clock=time.clock)
        outcome = await fetcher.fetch(record_id)
        while isinstance(outcome, Later):
            # What the pipeline does with other ids meanwhile, done here by waiting (on the fake clock).
            await time.sleep(max(0.0, outcome.not_before - time.now))
            outcome = await fetcher.fetch(outcome.id, outcome.tries)
        return outcome


async def test_success_is_the_exact_data_line(api: FakeServerHandle) -> None:
    """A 200 gives a Success whose line is the served `data`, after one attempt."""
    result = await fetch(api, "rec-1")
    assert isinstance(result, Success)
    assert result.attempts == 1
    served = json.loads(api_body(api, "rec-1"))["data"]
    assert json.loads(bytes(result.line)) == served


def api_body(api: FakeServerHandle, record_id: str) -> bytes:
    import urllib.request

    request = urllib.request.Request(
        api.recording_url(record_id), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: bytes = response.read()
        return body


async def test_not_found_is_final(api: FakeServerHandle) -> None:
    """A 404 is recorded as not_found after a single request."""
    result = await fetch(api, "missing-7")
    assert isinstance(result, Failure)
    assert (result.reason, result.status, result.attempts) == (Reason.NOT_FOUND, 404, 1)
    assert api.stats()["per_id"]["missing-7"] == 1


@pytest.mark.parametrize(
    "kind",
    [
        "500",
        "502",
        "503",
        "429",
        "429date",
        "reset",
        "truncate",
        "html",
        "badjson",
        "empty",
        "wrongid",
        "nodata",
    ],
)
async def test_transient_faults_are_retried_until_success(api: FakeServerHandle, kind: str) -> None:
    """Every transient fault (5xx, 429, cut bodies, HTML, wrong id, ...) is retried and then succeeds."""
    api.configure(fail_first={"flaky-": [kind, 2]}, retry_after_s=0)
    result = await fetch(api, "flaky-1")
    assert isinstance(result, Success), result
    assert result.attempts == 3
    assert json.loads(bytes(result.line))["id"] == "flaky-1"
    assert api.stats()["per_id"]["flaky-1"] == 3


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("503", Reason.HTTP_ERROR),
        ("reset", Reason.NETWORK),
        ("html", Reason.BAD_RESPONSE),
    ],
)
async def test_attempts_run_out_with_the_last_reason(
    api: FakeServerHandle, kind: str, reason: Reason
) -> None:
    """When every attempt fails, the Failure names the reason and the number of attempts."""
    api.configure(fail_first={"bad-": [kind, 99]}, retry_after_s=0)
    result = await fetch(api, "bad-1")
    assert isinstance(result, Failure)
    assert result.reason == reason
    assert result.attempts == FAST_RETRY.max_attempts
    assert "gave up after 4 attempts" in result.error
    assert api.stats()["per_id"]["bad-1"] == 4


async def test_nothing_but_429s_ends_as_unavailable_not_failed(api: FakeServerHandle) -> None:
    """An API that refuses everything with 429 for --max-outage halts the pool; the id is not failed."""
    api.configure(fail_first={"bad-": ["429", 10_000]}, retry_after_s=0)
    retry = RetrySettings(max_attempts=2, backoff_base_s=0.001, max_outage_s=1.0)
    time = FakeTime()
    result = await fetch(
        api, "bad-1", retry=retry, time=time, pacer=pacer_on(time, LimitSettings(rate_per_s=50), retry)
    )
    assert isinstance(result, Unfinished)
    assert result.halt is Halt.API_UNAVAILABLE
    # --max-outage, plus at most two spacings of the pace the 429s cut down to (0.2/s): the cut
    # needs a few 429s in a row, and the slot booked for the last of them is a token of debt.
    assert 1.0 <= time.now < 15.0, time
    assert api.stats()["per_id"]["bad-1"] >= retry.max_attempts


async def test_a_body_over_the_size_limit_fails_without_retrying(api: FakeServerHandle) -> None:
    """A response over --max-response-bytes would be as large next time: one attempt, then a Failure."""
    result = await fetch(api, "rec-1", max_response_bytes=100)
    assert isinstance(result, Failure)
    assert (result.reason, result.attempts) == (Reason.BAD_RESPONSE, 1)
    assert "--max-response-bytes" in result.error
    assert api.stats()["per_id"]["rec-1"] == 1


async def test_redirect_is_not_followed(api: FakeServerHandle) -> None:
    """A 302 to another origin fails the id with http_error; the token goes nowhere else."""
    api.configure(fail_first={"moved-": ["redirect", 1]})
    result = await fetch(api, "moved-1")
    assert isinstance(result, Failure)
    assert result.reason == Reason.HTTP_ERROR
    assert result.status == 302
    assert "redirect" in result.error
    assert api.stats()["requests_total"] == 1


async def test_slow_response_times_out(api: FakeServerHandle) -> None:
    """A response slower than --timeout is abandoned and retried, then fails as timeout."""
    api.configure(fail_first={"slow-": ["slow", 9]}, slow_s=2.0)
    result = await fetch(
        api, "slow-1", timeout_s=0.2, retry=RetrySettings(max_attempts=2, backoff_base_s=0.001)
    )
    assert isinstance(result, Failure)
    assert result.reason == Reason.TIMEOUT
    assert "0.2s" in result.error


async def test_refused_token_raises_without_leaking_it(api: FakeServerHandle) -> None:
    """401 raises AuthRefused at once; the message says what to do and never holds the token."""
    with pytest.raises(AuthRefused) as caught:
        await fetch(api, "rec-1", token="wrong-token-Qx7")
    assert "EXPORTER_TOKEN" in str(caught.value)
    assert "Qx7" not in str(caught.value)
    assert api.stats()["requests_total"] == 1


async def test_revoked_token_403_raises(api: FakeServerHandle) -> None:
    """A 403 (revoked token) also stops with AuthRefused."""
    api.configure(revoke_after=0)
    with pytest.raises(AuthRefused, match="403"):
        await fetch(api, "rec-1")


async def test_retry_after_pauses_the_whole_pool(api: FakeServerHandle) -> None:
    """A 429 with a Retry-After over a second holds every worker (the shared limiter) that long."""
    api.configure(fail_first={"busy-": ["429", 1]}, retry_after_s=2)
    time = FakeTime()
    pacer = pacer_on(time, LimitSettings(rate_per_s=100, burst=1))
    result = await fetch(api, "busy-1", time=time, pacer=pacer)
    assert isinstance(result, Success)
    assert result.attempts == 2
    assert time.now >= 2.0
    assert pacer.limiter.paused_until() >= 2.0
    # The fake API's 429 also says the quota is spent (X-RateLimit-Remaining: 0) until then.
    assert sum(pacer.report().paused_s.values()) >= 2.0


async def test_429s_do_not_use_up_attempts(api: FakeServerHandle) -> None:
    """An id refused with 429 more often than --max-attempts still arrives: waiting is the answer."""
    api.configure(fail_first={"busy-": ["429", 6]}, retry_after_s=0)
    result = await fetch(api, "busy-1", retry=RetrySettings(max_attempts=2, backoff_base_s=0.001))
    assert isinstance(result, Success)
    assert result.attempts == 7


async def test_retry_after_beyond_the_maximum_fails_now(api: FakeServerHandle) -> None:
    """An API asking to wait longer than allowed fails the id instead of blocking the run."""
    api.configure(fail_first={"busy-": ["429", 1]}, retry_after_s=120)
    retry = RetrySettings(max_attempts=3, backoff_base_s=0.001, retry_after_max_s=10)
    result = await fetch(api, "busy-1", retry=retry)
    assert isinstance(result, Failure)
    assert result.reason == Reason.RATE_LIMITED
    assert "asked to wait 120s" in result.error


async def test_ids_are_one_encoded_path_segment(api: FakeServerHandle) -> None:
    """Ids with ?, #, %, + and non-ASCII letters reach the server intact as one segment."""
    for record_id in ["a?b=c", "x#y", "50%", "a+b", "café-ü", "rec;1"]:
        result = await fetch(api, record_id)
        assert isinstance(result, Success), (record_id, result)
        assert json.loads(bytes(result.line))["id"] == record_id
    assert set(api.stats()["per_id"]) == {"a?b=c", "x#y", "50%", "a+b", "café-ü", "rec;1"}


async def test_query_parameters_are_sent(api: FakeServerHandle) -> None:
    """Include toggles and pass-through parameters arrive with the request."""
    result = await fetch(api, "rec-2", query=(("includePhotos", "true"), ("x-custom", "a b")))
    assert isinstance(result, Success)
    assert "images" in json.loads(bytes(result.line))
    assert list(api.stats()["queries"]) == ["includePhotos=true&x-custom=a%20b"]
