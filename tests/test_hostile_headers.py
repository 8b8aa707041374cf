"""No header value a server (or a proxy) sends can crash a run, stall it past the cap, or put a
number JSON cannot hold in summary.json: property tests over every header the exporter parses.

`X-RateLimit-Remaining: 0` with `X-RateLimit-Reset: 999999999999999` once crashed every run in
`datetime` (year 33658), a 20-digit reset in `fromtimestamp` (EOVERFLOW), and a quota spent until
48 h later held a run forever. The pacer's part is pure, so it is driven here directly, with
virtual time; the client's part (framing and codings) through a bare `http1.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time as real_time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_time import FakeTime as BaseTime
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from on_disk import read_summary, write_manifest
from runs import cli
from scripted import Conversation, scripted

from exporter.config import LimitSettings, RetrySettings
from exporter.logs import rfc3339
from exporter.pacing import Halt, HaltDetail, Pacer, PauseNotice, Ticket
from exporter.pacing.quota import FIELDS as QUOTA_FIELDS
from exporter.pacing.waits import clock_text, duration_text, seconds_text, until_text, utc_text
from exporter.summary import pacing_report
from exporter.transport.client import _decoded
from exporter.transport.http1 import Connection, ConnectionClosed, ProtocolError, Refused, Response

NOW = 1_800_000_000.0
CAP_S = RetrySettings().retry_after_max_s

#: Every response header the pacer reads.
PACER_FIELDS = ("Retry-After", *QUOTA_FIELDS)
#: Every response header the client reads to frame and decode a body.
CLIENT_FIELDS = ("Content-Length", "Transfer-Encoding", "Content-Encoding", "Connection")

_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["999999999999999", "9" * 20, "9" * 400, "1e308", "-0", "0", "nan", "inf", "0x10"]),
)
_dates = st.sampled_from(
    [
        "Fri, 31 Dec 9999 23:59:59 -2359",
        "Mon, 01 Jan 0001 00:00:00 +2359",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Thu, 01 Jan 2099 00:00:00 GMT",
        "Tue, 29 Feb 2000 25:61:61 GMT",
    ]
)
_structured = st.from_regex(
    r'"?[a-z]{0,4}"?(;[a-z]=-?[0-9.e+]{0,25}){0,4}(, ?"?[a-z]{0,3}"?;r=[0-9]{1,22};t=[0-9]{1,22})?'
)
_values = st.one_of(st.text(max_size=40), _numbers, _dates, _structured)


class FakeTime(BaseTime):
    """The pacer's clocks: monotonic seconds from 0 and Unix time from `epoch0`, moved only by the test."""

    def __init__(self, epoch0: float = NOW) -> None:
        super().__init__(epoch0=epoch0)
        self._pacer: Pacer | None = None
        self._told: list[PauseNotice] = []

    def pacer(self, limits: LimitSettings | None = None) -> Pacer:
        """A pacer on these clocks, its notices kept in `notices`."""
        self._pacer = Pacer(
            limits or LimitSettings(),
            RetrySettings(),
            clock=self.clock,
            now_epoch=self.epoch,
            sleep=self.sleep,
        )
        return self._pacer

    @property
    def notices(self) -> list[PauseNotice]:
        """Every notice the pacer has told so far, polled as the run polls it."""
        if self._pacer is not None:
            self._told.extend(self._pacer.poll())
        return self._told


def sane_notice(notice: PauseNotice) -> None:
    assert isinstance(notice.message, str)
    status = notice.status()
    assert status is None or isinstance(status, str)
    if notice.until_epoch is not None:
        assert math.isfinite(notice.until_epoch)
        rfc3339(notice.until_epoch)  # what a JSON log line writes of it


def assert_sane(pacer: Pacer, time: FakeTime) -> None:
    """Whatever the headers said: every output is a real number, no hold is longer than the cap, and
    everything summary.json would hold is exact JSON."""
    for notice in time.notices:
        sane_notice(notice)
    now = time.now
    halt = pacer.report().halt
    if halt is None:
        assert pacer.limiter.paused_until() - now <= CAP_S + 1.0
        rate = pacer.rate_now()
        assert rate > 0
        assert math.isinf(rate) or 1.0 / rate <= CAP_S
        admitted = pacer.reserve(now)
        if isinstance(admitted, Ticket):
            assert math.isfinite(admitted.started_at)
            assert now <= admitted.started_at <= now + CAP_S + 1.0
        elif isinstance(admitted, float):
            assert 0.0 <= admitted <= CAP_S + 1.0
    else:
        assert pacer.reserve(now) is halt
        assert halt.message
    json.dumps(pacing_report(pacer.report()), allow_nan=False)  # raises on NaN or infinity
    for seconds in pacer.report().paused_s.values():
        assert math.isfinite(seconds)
        assert seconds >= 0
    time.now += CAP_S + 2.0
    for notice in time.notices:
        sane_notice(notice)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answers=st.lists(
        st.tuples(
            st.sampled_from([200, 429, 503, 404]),
            st.dictionaries(st.sampled_from(PACER_FIELDS), _values, max_size=5),
        ),
        min_size=1,
        max_size=4,
    )
)
@example(answers=[(200, {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "451"})] * 2)
def test_no_header_value_crashes_or_stalls_the_pacer(answers: list[tuple[int, dict[str, str]]]) -> None:
    """Any values of Retry-After, RateLimit, RateLimit-Policy, RateLimit-* and X-RateLimit-* on a
    200, 429, 503 or 404, one answer after another: finish() raises nothing and gives a finite,
    non-negative wait; the notices and the halt can be written; no hold exceeds the cap."""
    time = FakeTime()
    pacer = time.pacer(LimitSettings(rate_per_s=10))
    for status, headers in answers:
        ticket = pacer.reserve(time.now)
        if not isinstance(ticket, Ticket):
            break
        pacer.going(ticket)
        effect = pacer.finish(ticket, status=status, headers=headers)
        if effect.retry_after_s is not None:
            assert math.isfinite(effect.retry_after_s)
            assert effect.retry_after_s >= 0
        assert 0 <= effect.own_wait_s() < math.inf
        time.now += 0.1
    assert_sane(pacer, time)


@pytest.mark.parametrize(
    ("headers", "wait_s"),
    [
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "999999999999999"}, 999_999_999_999.999 - NOW),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9" * 20}, 1e17 - NOW),
        ({"RateLimit": '"default";r=0;t=99999999999999999'}, 1e17),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 48 * 3600)}, 48 * 3600),
        ({"Retry-After": "1e300"}, 1e300),
    ],
)
def test_a_wait_beyond_the_cap_halts_with_when_it_would_resume(
    headers: dict[str, str], wait_s: float
) -> None:
    """The issue's headers: a quota spent for 31,688 years, 3 billion years, 48 hours, or a
    Retry-After of 1e300 s. No crash and no hold: the pool halts (exit 6) and says until when,
    with the date (or that no calendar reaches it), and summary.json says so exactly."""
    time = FakeTime()
    pacer = time.pacer()
    ticket = pacer.reserve(0.0)
    assert isinstance(ticket, Ticket)
    pacer.finish(ticket, status=429 if "Retry-After" in headers else 200, headers=headers)
    halted = pacer.reserve(0.1)
    assert isinstance(halted, HaltDetail)
    assert halted.halt is Halt.TOLD_TO_WAIT
    report = pacing_report(pacer.report())["halt"]
    assert report["reason"] == "told_to_wait"
    assert report["wait_s"] == pytest.approx(wait_s, rel=1e-6, abs=0.5)  # a quota's: 0.25 s past its reset
    resume = utc_text(NOW + report["wait_s"])
    assert report["resume_at"] == resume
    message = halted.message
    if resume is None:
        assert " for " in message
        assert " years" in message
    else:
        assert f"until {clock_text(NOW + report['wait_s'], now_epoch=NOW)} " in message
        assert resume[:10] in message  # not today: the date is there
    json.dumps(report, allow_nan=False)


def test_a_hold_ending_another_day_carries_its_date() -> None:
    """A Retry-After of 10 min at 23:55 local time: the notice says the date of 00:05, the bar too;
    the same wait at noon says only the time of day."""
    for hour, minute, dated in ((23, 55, True), (12, 0, False)):
        evening = real_time.mktime((2027, 1, 15, hour, minute, 0, 0, 0, -1))
        time = FakeTime(evening)
        pacer = time.pacer()
        ticket = pacer.reserve(0.0)
        assert isinstance(ticket, Ticket)
        pacer.finish(ticket, status=429, headers={"Retry-After": "600"})
        (notice,) = time.notices
        resume = real_time.strftime("%Y-%m-%d %H:%M:%S", real_time.localtime(evening + 600))
        expected = resume if dated else resume[11:]
        assert notice.message.endswith(f"resuming at {expected}")
        assert notice.status() == f"paused (retry_after) until {expected}"


def test_a_quota_spread_thin_says_why_nothing_is_sent() -> None:
    """10 requests left for the next hour: one every 6 min, and a notice says so (with when the
    window ends); the bar says the pool is slowed, not what it waits for."""
    time = FakeTime()
    pacer = time.pacer()
    ticket = pacer.reserve(0.0)
    assert isinstance(ticket, Ticket)
    pacer.going(ticket)
    pacer.finish(ticket, status=200, headers={"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "3600"})
    (notice,) = time.notices
    when = until_text(NOW + 3600.25, now_epoch=NOW)
    assert notice.message == (
        f"the API's announced quota leaves 10 requests {when}: one every 6 min, nothing in between"
    )
    assert notice.status() == f"slowed (quota) {when}"
    assert pacer.rate_now() == pytest.approx(10 / 3600.25)


def test_a_quota_too_thin_to_spread_within_the_cap_is_spent_and_then_halts() -> None:
    """2 requests left for the next hour would be one every 30 min, longer than the 15 min the run
    sits out: the two go at the usual pace, and once the quota is spent the run halts until its reset."""
    time = FakeTime()
    pacer = time.pacer(LimitSettings(rate_per_s=10))
    for left in ("2", "1", "0"):
        ticket = pacer.reserve(time.now)
        assert isinstance(ticket, Ticket)
        assert ticket.started_at - time.now < 1.0
        time.now = ticket.started_at
        pacer.going(ticket)
        pacer.finish(
            ticket,
            status=200,
            headers={"X-RateLimit-Remaining": left, "X-RateLimit-Reset": str(int(NOW) + 3600)},
        )
    halted = pacer.reserve(time.now)
    assert isinstance(halted, HaltDetail)
    assert halted.halt is Halt.TOLD_TO_WAIT
    assert "quota is spent until" in halted.message


@pytest.mark.parametrize(
    "seconds", [0.0, -5.0, 59.4, 3599.0, 1e12, 1e17, 1e300, math.inf, -math.inf, math.nan, 2**63]
)
def test_waits_are_written_whatever_the_number(seconds: float) -> None:
    """Times a server chose are written without raising: past the year 9999 as a duration, never a date."""
    for text in (seconds_text(seconds), duration_text(seconds), until_text(NOW + seconds, now_epoch=NOW)):
        assert isinstance(text, str)
        assert text
    utc = utc_text(NOW + seconds)
    assert utc is None or utc.endswith("Z")
    clock = clock_text(NOW + seconds, now_epoch=NOW)
    assert clock is None or len(clock) in (8, 19)


# --- the client's headers ----------------------------------------------------------------------


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _read(loop: asyncio.AbstractEventLoop, raw: bytes) -> Response | Exception:
    """One response read by a bare Connection from `raw`, then the connection closed."""

    async def read() -> Response | Exception:
        connection = Connection(1 << 20)
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        request = asyncio.ensure_future(connection.request(b"GET / HTTP/1.1\r\n\r\n"))
        await asyncio.sleep(0)
        connection.data_received(raw)
        connection.connection_lost(None)
        try:
            return await request
        except (ProtocolError, Refused, ConnectionClosed) as exc:
            return exc

    return loop.run_until_complete(read())


_wire_values = st.one_of(
    st.binary(max_size=30),
    st.text(st.characters(max_codepoint=255), max_size=30).map(lambda t: t.encode("latin-1")),
    _numbers.map(str.encode),
    st.sampled_from(
        [b"chunked", b"gzip, chunked", b"gzip", b"deflate", b"x-gzip, identity", b"br", b"close"]
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    fields=st.lists(
        st.tuples(st.sampled_from(CLIENT_FIELDS + PACER_FIELDS), _wire_values), min_size=1, max_size=6
    ),
    status=st.sampled_from([200, 429, 503]),
    body=st.binary(max_size=40),
)
def test_no_header_value_crashes_the_client_or_the_pacer_behind_it(
    loop: asyncio.AbstractEventLoop, fields: list[tuple[str, bytes]], status: int, body: bytes
) -> None:
    """A response head with any values of the framing and coding fields (and the pacer's): the
    connection reads a response or refuses it with one of its three errors, a Content-Encoding
    is undone or refused, and the headers that come through are harmless to the pacer."""
    head = b"HTTP/1.1 %d X\r\n" % status + b"".join(
        name.encode() + b": " + value + b"\r\n" for name, value in fields
    )
    outcome = _read(loop, head + b"\r\n" + body)
    if isinstance(outcome, Exception):
        return
    coding = outcome.headers.get("content-encoding")
    if coding is not None and outcome.body:
        with contextlib.suppress(ProtocolError, Refused, ConnectionClosed):
            loop.run_until_complete(_decoded(coding, outcome.body, 1 << 20))
    time = FakeTime()
    pacer = time.pacer()
    ticket = pacer.reserve(0.0)
    assert isinstance(ticket, Ticket)
    pacer.finish(ticket, status=outcome.status, headers=outcome.headers)
    assert_sane(pacer, time)


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        "X-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 999999999999999\r\n",
        f"X-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: {'9' * 20}\r\n",
        'RateLimit: "default";r=0;t=99999999999999999\r\n',
        "X-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: {in_48_h}\r\n",
    ],
)
async def test_a_quota_spent_far_ahead_ends_the_run_saying_until_when(tmp_path: Path, fields: str) -> None:
    """A real run (a process) against a server whose first answer says its quota is spent for
    31,688 years, 3 billion years, or 48 hours: exit 6 within seconds, not a traceback (exit 70) or
    a run held for ever; the message says until when (with the date), summary.json too, and the
    ids not fetched stay for the next run."""
    in_48_h = int(real_time.time()) + 48 * 3600
    fields = fields.replace("{in_48_h}", str(in_48_h))

    async def quota_spent(conv: Conversation) -> None:
        while (head := await conv.read_request()) is not None:
            rid = head.split(b" ")[1].rsplit(b"/", 1)[1].decode()
            await conv.respond(json.dumps({"data": {"id": rid}}).encode(), headers=fields)

    manifest = write_manifest(tmp_path / "ids.txt", [f"q-{i}" for i in range(5)])
    out = tmp_path / "out"
    async with scripted(quota_spent) as server:
        args = ["export", str(manifest), "--base-url", f"http://127.0.0.1:{server.port}", "--out", str(out)]
        started = real_time.monotonic()
        result = await asyncio.to_thread(
            cli, *args, "--concurrency", "1", "--rate", "0", "--no-progress", timeout=60
        )
    assert result.returncode == 6, result.stderr
    assert real_time.monotonic() - started < 30
    assert "Traceback" not in result.stderr
    halt = read_summary(out)["pacing"]["halt"]
    assert (halt["reason"], halt["cause"]) == ("told_to_wait", "quota")
    assert halt["message"] in result.stderr
    assert "quota is spent " in halt["message"]
    if str(in_48_h) in fields:
        assert f"until {real_time.strftime('%Y-%m-%d', real_time.localtime(in_48_h))} " in halt["message"]
        assert halt["resume_at"][:16] == real_time.strftime("%Y-%m-%dT%H:%M", real_time.gmtime(in_48_h))
        assert abs(halt["wait_s"] - 48 * 3600) < 30
    else:
        assert halt["resume_at"] is None
    assert read_summary(out)["counts"]["not_attempted"] == 4


def test_a_503s_retry_after_holds_the_pool_like_a_429s() -> None:
    """A 503 with `Retry-After: 120` (maintenance): the id does not come back sooner and the whole
    pool waits it out, as for a 429; one beyond the cap halts the run the same way."""
    time = FakeTime()
    pacer = time.pacer()
    ticket = pacer.reserve(0.0)
    assert isinstance(ticket, Ticket)
    effect = pacer.finish(ticket, status=503, headers={"Retry-After": "120"}, down=True, record_id="a")
    assert effect.retry_after_s == 120
    assert effect.pooled
    time.now = 60.0
    wait = pacer.reserve(time.now)
    assert isinstance(wait, float)
    assert wait >= 59.0
    assert [n.reason.value for n in time.notices] == ["retry_after"]

    time = FakeTime()
    pacer = time.pacer()
    ticket = pacer.reserve(0.0)
    assert isinstance(ticket, Ticket)
    pacer.finish(ticket, status=503, headers={"Retry-After": "86400"}, down=True, record_id="a")
    halted = pacer.reserve(0.1)
    assert isinstance(halted, HaltDetail)
    assert halted.halt is Halt.TOLD_TO_WAIT
