"""Tests for scripts/fakeapi/: the pure parts directly, the server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import email.utils
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fakeapi import (
    API_PATH,
    FAULT_KINDS,
    TOGGLES,
    FakeServerHandle,
    FixedWindowQuota,
    OutageSchedule,
    ServerConfig,
    ServerState,
    Stats,
    TokenBucket,
    build_parser,
    choose_fault,
    config_from_args,
    config_to_json,
    deep_record,
    edge_body,
    edge_record,
    is_large,
    make_record,
    merge_config,
    parse_recording_path,
    quota_headers,
    quote_id,
    running_server,
    success_body,
)
from multidict import CIMultiDictProxy
from yarl import URL

#: Run as a script, as the demo and the README do.
FAKE_API_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fake_api.py"

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclasses.dataclass(frozen=True)
class Reply:
    """What a test needs from one HTTP exchange, read fully before the connection is reused."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed with Python's json, the reference reading of what was served."""
        return json.loads(self.body)


async def fetch(
    session: aiohttp.ClientSession,
    server: FakeServerHandle,
    recording_id: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    timeout_s: float = 5.0,
) -> Reply:
    """GET one recording the way the exporter will: id percent-encoded, no redirects."""
    async with session.get(
        URL(server.recording_url(recording_id, query), encoded=True),
        headers=AUTH if headers is None else headers,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        return Reply(response.status, response.headers, await response.read())


@pytest.fixture
def server() -> Iterator[FakeServerHandle]:
    with running_server(ServerConfig(token=TOKEN)) as handle:
        yield handle


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@contextlib.contextmanager
def unlimited_int_digits() -> Iterator[None]:
    """Let json.loads read the edge record's 5000-digit integer, then restore the limit."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


def assert_same_json(actual: Any, expected: Any, path: str = "$") -> None:
    """Equal as JSON values *and* types, key order and float sign (so -0.0 != 0.0, 1.0 != 1)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys differ"
        for key, value in expected.items():
            assert_same_json(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: lengths differ"
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same_json(left, right, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual.hex() == expected.hex(), f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def depth(value: Any) -> int:
    """How many containers deep a JSON value goes."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# --- records (pure) -----------------------------------------------------------------------


def test_records_are_a_function_of_id_and_seed() -> None:
    """The same (id, seed) always gives the same record; another seed gives another one."""
    assert make_record("rec-1", seed=3) == make_record("rec-1", seed=3)
    assert make_record("rec-1", seed=3) != make_record("rec-1", seed=4)
    assert make_record("rec-1", seed=3)["id"] == "rec-1"


def test_most_bodies_are_1_to_20_kb() -> None:
    """Ordinary bodies follow a realistic size mix: at least 90% are between 1 and 20 KB."""
    sizes = [len(success_body(f"rec-{i}", ServerConfig())) for i in range(300)]
    share = sum(1_000 <= size <= 20_000 for size in sizes) / len(sizes)
    assert share >= 0.9
    assert len(set(sizes)) > 100


def test_large_fraction_picks_a_stable_share_of_ids() -> None:
    """large_fraction marks about that share of ids, always the same ones, with large_bytes text."""
    config = ServerConfig(large_fraction=0.25, large_bytes=50_000)
    large = [rid for rid in (f"rec-{i}" for i in range(2_000)) if is_large(rid, config)]
    assert 400 <= len(large) <= 600
    assert large == [rid for rid in (f"rec-{i}" for i in range(2_000)) if is_large(rid, config)]
    record = orjson.loads(success_body(large[0], config))["data"]
    assert len(record["redactedTranscript"]) == 50_000


@pytest.mark.parametrize("size", [300, 2_000, 20_000, 3_000_000])
def test_record_bytes_serves_bodies_of_exactly_that_size(size: int) -> None:
    """record_bytes makes every ordinary body that many bytes, a valid record of its id."""
    config = ServerConfig(record_bytes=size)
    for rid in ("rec-1", "rec-2", "flaky-3"):
        body = success_body(rid, config)
        assert len(body) == size
        assert orjson.loads(body)["data"]["id"] == rid
    assert success_body("rec-1", config) == success_body("rec-1", config)
    assert len(success_body("rec-1", ServerConfig(record_bytes=1))) < 300, "the compact record grew"


def test_toggles_only_add_their_field() -> None:
    """An include toggle adds (or fills) its field and leaves every other field unchanged."""
    plain = make_record("rec-1")
    with_photos = make_record("rec-1", include=frozenset({"images"}))
    assert "images" not in plain
    assert with_photos.pop("images")
    assert with_photos == plain
    assert plain["crmCustomer"] is None
    assert make_record("rec-1", include=frozenset({"crmCustomer"}))["crmCustomer"]["id"]


def test_edge_body_encodes_the_tricky_spellings() -> None:
    """The raw edge body holds an escaped surrogate pair, raw UTF-8, raw U+2028 and -0.0."""
    body = edge_body("edge-1")
    assert b'"escaped \\ud83d\\ude00 as a surrogate pair"' in body
    assert "raw \U0001f600".encode() in body
    assert "a\u2028b".encode() in body
    assert b"\\u0000" in body
    assert b":-0.0," in body
    assert b'"a\\/b"' in body
    assert b'"hugeInt":1' + b"0" * 4989 + b"1234567890," in body


def test_deep_record_is_too_deep_for_orjson() -> None:
    """deep-* data nests 300 levels, which orjson refuses to write (so the server uses json)."""
    assert depth(deep_record("deep-1")) == 301
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(deep_record("deep-1"))


# --- faults and rate limiting (pure) --------------------------------------------------------


def test_fail_first_faults_the_first_k_attempts_then_serves() -> None:
    """fail_first faults an id's first k attempts and no later ones; the longest prefix wins."""
    config = ServerConfig(fail_first={"flaky-": ("503", 2), "flaky-slow-": ("slow", 1)})
    assert [choose_fault(config, "flaky-1", n) for n in (1, 2, 3, 4)] == ["503", "503", None, None]
    assert [choose_fault(config, "flaky-slow-1", n) for n in (1, 2)] == ["slow", None]
    assert choose_fault(config, "steady-1", 1) is None


def test_random_faults_are_seeded_and_follow_the_rate() -> None:
    """fault_rate faults about that share of attempts, only of the listed kinds, reproducibly."""
    config = ServerConfig(fault_rate=0.2, fault_kinds=("500", "reset"), seed=7)
    draws = [choose_fault(config, f"rec-{i}", 1) for i in range(3_000)]
    assert draws == [choose_fault(config, f"rec-{i}", 1) for i in range(3_000)]
    assert 450 <= sum(d is not None for d in draws) <= 750
    assert {d for d in draws if d is not None} == {"500", "reset"}
    assert draws != [choose_fault(ServerConfig(fault_rate=0.2, seed=8), f"rec-{i}", 1) for i in range(3_000)]


def test_random_faults_can_be_kept_to_the_first_attempts() -> None:
    """fault_attempts 2: about fault_rate of first and second attempts fault, never a third."""
    config = ServerConfig(fault_rate=0.6, fault_kinds=("504", "html"), fault_attempts=2, seed=3)
    for attempt in (1, 2):
        faulted = sum(choose_fault(config, f"rec-{i}", attempt) is not None for i in range(2_000))
        assert 1_100 <= faulted <= 1_300
    assert all(choose_fault(config, f"rec-{i}", 3) is None for i in range(2_000))
    with pytest.raises(ValueError, match="fault_attempts"):
        ServerConfig(fault_attempts=0)


def test_token_bucket_allows_a_burst_then_paces() -> None:
    """The bucket passes `capacity` requests at once, then one per 1/rate seconds, and says when."""
    now = [100.0]
    bucket = TokenBucket(rate=10.0, capacity=3, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.1)
    now[0] += 0.05
    assert bucket.try_acquire() == pytest.approx(0.05)
    now[0] += 0.05
    assert bucket.try_acquire() == 0.0
    now[0] += 60
    assert bucket.tokens == 3.0


def test_parse_recording_path_keeps_encoded_slashes_in_the_id() -> None:
    """%2F decodes into the id, a literal slash or a foreign prefix is not an API path."""
    assert parse_recording_path("/v1/core/recordings/a%2Fb%20c?x=1", "") == "a/b c"
    assert parse_recording_path("/api/v1/core/recordings/%25", "/api") == "%"
    assert parse_recording_path("/v1/core/recordings/a/b", "") is None
    assert parse_recording_path("/v1/core/recordings/", "") is None
    assert parse_recording_path("/v1/core/recordings/x", "/api") is None
    assert parse_recording_path("/v1/core/recordings/%ff", "") is None


def test_merge_config_validates_json_shaped_changes() -> None:
    """Config patches are coerced from JSON shapes and bad fields are named in the error."""
    config = merge_config(ServerConfig(), {"fail_first": {"f-": ["429", 1]}, "fault_kinds": "500,html"})
    assert config.fail_first == {"f-": ("429", 1)}
    assert config.fault_kinds == ("500", "html")
    with pytest.raises(ValueError, match="nope"):
        merge_config(config, {"nope": 1})
    with pytest.raises(ValueError, match="fault_rate"):
        merge_config(config, {"fault_rate": 2})
    with pytest.raises(ValueError, match="seed"):
        merge_config(config, {"seed": True})
    with pytest.raises(ValueError, match="unknown fault kind"):
        merge_config(config, {"fault_kinds": ["418"]})


def test_config_json_round_trips() -> None:
    """config_to_json's output is accepted back by merge_config, as tests use to restore defaults."""
    custom = ServerConfig(
        token="x",
        path_prefix="/api",
        fail_first={"f-": ("reset", 2)},
        rate_limit_rps=5.0,
        quota_limit=100,
        quota_reset_style="epoch",
        outage_s=30.0,
        outage_after_s=15.0,
        outage_mode="refuse",
    )
    assert merge_config(ServerConfig(), config_to_json(custom)) == custom


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quota_limit": 0}, "quota_limit"),
        ({"quota_window_s": 0}, "quota_window_s"),
        ({"quota_window_s": 2.5}, "quota_window_s"),
        ({"quota_reset_style": "http-date"}, "quota_reset_style"),
        ({"outage_mode": "down"}, "outage_mode"),
        ({"outage_s": -1}, "outage_s"),
        ({"outage_s": math.nan}, "outage_s"),
        ({"outage_s": math.inf}, "outage_s"),
        ({"outage_after_s": -0.5}, "outage_after_s"),
    ],
)
def test_limit_and_outage_settings_are_validated(changes: dict[str, object], field: str) -> None:
    """Impossible quota and outage settings are refused with the field named."""
    with pytest.raises(ValueError, match=field):
        merge_config(ServerConfig(), changes)


def test_outage_mode_may_be_given_as_a_number() -> None:
    """outage_mode 503 arrives as a JSON number from a hand-written POST /_config."""
    assert merge_config(ServerConfig(), {"outage_mode": 503}).outage_mode == "503"


# --- quota and outage arithmetic (virtual time) ---------------------------------------------


class VirtualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_fixed_window_quota_resets_at_window_boundaries_aligned_to_its_start() -> None:
    """limit per window, refused requests not counted, fresh at each multiple of window_s."""
    clock = VirtualClock(1000.0)
    quota = FixedWindowQuota(3, 10, clock)
    clock.advance(6.5)
    assert [quota.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    assert quota.remaining == 0
    assert quota.reset_in_s() == pytest.approx(3.5)
    clock.advance(3.4999)
    assert not quota.try_acquire()
    clock.advance(0.0001)  # exactly 10 s after the start: a new window
    assert quota.reset_in_s() == pytest.approx(10.0)
    assert quota.try_acquire()
    assert quota.remaining == 2
    clock.advance(25.5)  # skip windows: still aligned to the start, not to the last request
    assert quota.remaining == 3
    assert quota.reset_in_s() == pytest.approx(4.5)


def test_fixed_window_quota_admits_exactly_limit_per_window_over_virtual_minutes() -> None:
    """A client hammering every 10 ms gets exactly limit per window for ten minutes."""
    clock = VirtualClock(0.0)
    quota = FixedWindowQuota(100, 10, clock)
    accepted: collections.Counter[int] = collections.Counter()
    for step in range(60_000):
        clock.now = step * 0.01
        if quota.try_acquire():
            accepted[int(clock.now // 10)] += 1
    assert set(accepted.values()) == {100}
    assert len(accepted) == 60


def test_quota_headers_announce_the_window_both_ways() -> None:
    """X-RateLimit-* (reset as delta or epoch) and the IETF fields, reset rounded up."""
    delta = quota_headers(
        limit=100, remaining=37, reset_in_s=3.2, window_s=10, style="delta", now_epoch_s=1000.5
    )
    assert delta == {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "37",
        "X-RateLimit-Reset": "4",
        "RateLimit-Policy": '"default";q=100;w=10',
        "RateLimit": '"default";r=37;t=4',
    }
    epoch = quota_headers(
        limit=100, remaining=-1, reset_in_s=3.2, window_s=10, style="epoch", now_epoch_s=1000.5
    )
    assert epoch["X-RateLimit-Reset"] == "1004"
    assert (epoch["X-RateLimit-Remaining"], epoch["RateLimit"]) == ("0", '"default";r=0;t=4')


def test_outage_from_now_lasts_its_duration() -> None:
    """An outage scheduled without a delay covers [now, now + duration) and then ends."""
    outage = OutageSchedule(30.0, None, now=5.0)
    assert outage.remaining_s(5.0) == 30.0
    assert outage.next_change_s(5.0) == 30.0
    assert outage.remaining_s(34.5) == pytest.approx(0.5)
    assert outage.remaining_s(35.0) == 0.0
    assert outage.next_change_s(35.0) is None
    assert not outage.on_request(40.0)
    assert OutageSchedule(0.0, None, now=5.0).remaining_s(5.0) == 0.0


def test_outage_after_counts_from_the_first_request() -> None:
    """With a delay, the first API request fixes the start; later ones do not move it."""
    outage = OutageSchedule(30.0, 15.0, now=0.0)
    assert (outage.remaining_s(50.0), outage.next_change_s(50.0)) == (0.0, None)
    assert outage.on_request(100.0)
    assert not outage.on_request(110.0)
    assert outage.next_change_s(100.0) == 15.0
    assert outage.remaining_s(114.9) == 0.0
    assert outage.remaining_s(115.0) == 30.0
    assert outage.next_change_s(120.0) == 25.0
    assert outage.remaining_s(145.0) == 0.0


def test_server_state_schedules_outages_and_quota_windows_anew() -> None:
    """Naming outage_s schedules an outage again (same value too); reset restarts the windows."""
    clock = VirtualClock(0.0)
    state = ServerState(ServerConfig(quota_limit=2, quota_window_s=10), clock)
    state.apply(merge_config(state.config, {"outage_s": 10}), ["outage_s"])
    assert state.outage_remaining_s() == 10.0
    clock.advance(20)
    assert state.outage_remaining_s() == 0.0
    state.apply(merge_config(state.config, {"latency_ms": 1}), ["latency_ms"])
    assert state.outage_remaining_s() == 0.0
    state.apply(merge_config(state.config, {"outage_s": 10}), ["outage_s"])
    assert state.outage_remaining_s() == 10.0
    assert state.quota is not None
    clock.advance(13)  # 3 s into the quota's second window
    assert state.quota.reset_in_s() == pytest.approx(7.0)
    state.reset()
    assert state.quota.reset_in_s() == pytest.approx(10.0)
    assert state.outage_remaining_s() == 10.0


def test_stats_timeline_is_bounded_and_numbered() -> None:
    """responses_since(N) returns responses from number N on, of those still kept."""
    stats = Stats()
    stats.responses = collections.deque(maxlen=3)
    for n, status in enumerate([200, 429, 200, 503, 200]):
        stats.on_response(status, float(n))
    assert stats.responses_since(0) == {
        "total": 5,
        "first": 2,
        "responses": [(2.0, 200), (3.0, 503), (4.0, 200)],
    }
    assert stats.responses_since(4) == {"total": 5, "first": 4, "responses": [(4.0, 200)]}
    assert stats.responses_since(9) == {"total": 5, "first": 5, "responses": []}
    assert stats.by_status == {200: 3, 429: 1, 503: 1}


def test_quote_id_makes_one_addressable_segment() -> None:
    """quote_id encodes slashes, percent signs and dot-segments so parse_recording_path inverts it."""
    for rid in ("a/b", "100%", ".", "..", "ключ", "a?b#c"):
        assert parse_recording_path(API_PATH + quote_id(rid), "") == rid


# --- the server over HTTP -----------------------------------------------------------------


async def test_serves_the_record_with_exact_headers(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A 200 carries application/json, an exact Content-Length and the envelope around data."""
    reply = await fetch(session, server, "rec-42")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert reply.body == success_body("rec-42", server.config)
    envelope = reply.json()
    assert envelope["data"]["id"] == "rec-42"
    assert (envelope["cursor"], envelope["pageSize"], envelope["limit"]) == (None, 1, 1)


async def test_missing_or_wrong_token_gets_401(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """No token or a wrong one gets 401 with a JSON error, counted in bad_auth."""
    assert (await fetch(session, server, "rec-1", headers={})).status == 401
    wrong = await fetch(session, server, "rec-1", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert wrong.json()["error"]["code"] == 401
    assert server.stats()["bad_auth"] == 2


async def test_revoke_after_turns_every_later_request_into_403(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """After revoke_after requests the token is revoked: every request gets 403."""
    server.configure(revoke_after=2)
    statuses = [(await fetch(session, server, f"rec-{i}")).status for i in range(4)]
    assert statuses == [200, 200, 403, 403]


async def test_missing_ids_get_404(server: FakeServerHandle, session: aiohttp.ClientSession) -> None:
    """missing-* ids get 404 with a JSON error body."""
    reply = await fetch(session, server, "missing-7")
    assert reply.status == 404
    assert "missing-7" in reply.json()["error"]["message"]


async def test_unknown_paths_get_404_and_are_recorded(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A request outside the API path gets 404 and shows up in unknown_paths, not per_id."""
    async with session.get(f"{server.root_url}/v1/core/recordings/a/b", headers=AUTH) as response:
        assert response.status == 404
    stats = server.stats()
    assert stats["unknown_paths"] == ["/v1/core/recordings/a/b"]
    assert stats["unknown_path_requests"] == 1
    assert stats["requests_total"] == 0


async def test_percent_encoded_ids_round_trip(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """Ids with slashes, spaces, percent signs and non-ASCII come back exactly as data.id."""
    for rid in ("a/b", "with space", "100%", "ключ?#&=+", "..", "rec:1;2"):
        reply = await fetch(session, server, rid)
        assert reply.status == 200, rid
        assert reply.json()["data"]["id"] == rid
    assert set(server.stats()["per_id"]) == {
        "a/b",
        "with space",
        "100%",
        "ключ?#&=+",
        "..",
        "rec:1;2",
    }


async def test_path_prefix_moves_the_api(session: aiohttp.ClientSession) -> None:
    """With path_prefix the API lives under it and the bare path is unknown."""
    with running_server(ServerConfig(token=TOKEN, path_prefix="/api")) as server:
        assert server.url.endswith("/api")
        assert (await fetch(session, server, "rec-1")).status == 200
        bare = f"{server.root_url}/v1/core/recordings/rec-1"
        async with session.get(bare, headers=AUTH) as response:
            assert response.status == 404
        assert server.stats()["unknown_path_requests"] == 1


async def test_edge_record_is_served_exactly(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """Python's json reading of an edge-* body equals edge_record: types, signs, order, all."""
    reply = await fetch(session, server, "edge-9")
    assert reply.body == edge_body("edge-9")
    with unlimited_int_digits():
        data = reply.json()["data"]
        expected = edge_record("edge-9")
        assert_same_json(data, expected)
        assert len(str(data["hugeInt"])) == 5000
    assert math.copysign(1.0, data["negativeZero"]) == -1.0
    assert data["twoTo64"] == 2**64
    assert depth(data["nested200"]) == 200
    assert len(data["bigString"]) == 2_000_000
    assert data["emojiEscaped"].startswith("escaped \U0001f600")


async def test_deep_and_pretty_bodies(server: FakeServerHandle, session: aiohttp.ClientSession) -> None:
    """deep-* nests 300 levels and pretty-* is indented over many lines, both valid JSON."""
    deep = (await fetch(session, server, "deep-1")).json()["data"]
    assert deep == deep_record("deep-1")
    pretty = await fetch(session, server, "pretty-1")
    assert pretty.body.count(b"\n") > 50
    assert b'\n  "data": {\n    "id": "pretty-1"' in pretty.body
    assert pretty.json()["data"] == make_record("pretty-1")


async def test_query_toggles_arrive_and_are_recorded(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """includeX=true adds the matching field; every query string is recorded verbatim."""
    query = "includePhotos=true&includeFollowups=false&includeCrmAccounts=TRUE&vendorFlag=x%20y"
    data = (await fetch(session, server, "rec-1", query=query)).json()["data"]
    assert data["images"]
    assert data["crmCustomer"]
    assert "followups" not in data
    everything = "&".join(f"{name}=true" for name in TOGGLES)
    data = (await fetch(session, server, "rec-1", query=everything)).json()["data"]
    assert all(data[field] for field in TOGGLES.values())
    assert server.stats()["queries"] == {query: 1, everything: 1}


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
async def test_server_error_faults(
    server: FakeServerHandle, session: aiohttp.ClientSession, status: str
) -> None:
    """5xx faults answer with that status and a JSON error body, then the id is served."""
    server.configure(fail_first={"f-": [status, 1]})
    reply = await fetch(session, server, "f-1")
    assert reply.status == int(status)
    assert reply.json()["error"]["code"] == int(status)
    assert (await fetch(session, server, "f-1")).status == 200
    assert server.stats()["faults"] == {status: 1}


async def test_429_fault_sends_retry_after_and_rate_limit_headers(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A 429 fault carries Retry-After in seconds (0 allowed) and X-RateLimit-* headers."""
    server.configure(fail_first={"f-": ["429", 1]}, retry_after_s=0)
    reply = await fetch(session, server, "f-1")
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "0"
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    assert int(reply.headers["X-RateLimit-Limit"]) > 0
    assert abs(int(reply.headers["X-RateLimit-Reset"]) - time.time()) < 5


async def test_429date_fault_sends_an_http_date(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A 429date fault's Retry-After is an HTTP date about retry_after_s in the future."""
    server.configure(fail_first={"f-": ["429date", 1]}, retry_after_s=30)
    reply = await fetch(session, server, "f-1")
    assert reply.status == 429
    when = email.utils.parsedate_to_datetime(reply.headers["Retry-After"]).timestamp()
    assert 25 <= when - time.time() <= 32


@pytest.mark.parametrize("kind", ["reset", "truncate"])
async def test_broken_bodies_raise_on_the_client(
    server: FakeServerHandle, session: aiohttp.ClientSession, kind: str
) -> None:
    """reset and truncate send half the promised body, which aiohttp reports as a payload error."""
    server.configure(fail_first={"f-": [kind, 1]})
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(session, server, "f-1")
    assert (await fetch(session, server, "f-1")).status == 200


async def test_bad_200_faults(server: FakeServerHandle, session: aiohttp.ClientSession) -> None:
    """html, badjson, empty, wrongid and nodata are 200s whose bodies are not the record."""
    server.configure(
        fail_first={
            "html-": ["html", 1],
            "badjson-": ["badjson", 1],
            "empty-": ["empty", 1],
            "wrongid-": ["wrongid", 1],
            "nodata-": ["nodata", 1],
        }
    )
    html = await fetch(session, server, "html-1")
    assert (html.status, html.headers["Content-Type"].split(";")[0]) == (200, "text/html")
    assert html.body.startswith(b"<!DOCTYPE html>")
    badjson = await fetch(session, server, "badjson-1")
    assert badjson.headers["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        badjson.json()
    empty = await fetch(session, server, "empty-1")
    assert (empty.status, empty.body, empty.headers["Content-Length"]) == (200, b"", "0")
    wrong = await fetch(session, server, "wrongid-1")
    assert wrong.json()["data"]["id"] != "wrongid-1"
    nodata = await fetch(session, server, "nodata-1")
    assert nodata.status == 200
    assert "data" not in nodata.json()


async def test_redirect_fault_points_at_another_origin(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A redirect fault is a 302 to 127.0.0.2 on the same port, off the API path."""
    server.configure(fail_first={"r-": ["redirect", 1]})
    reply = await fetch(session, server, "r-1")
    assert reply.status == 302
    location = reply.headers["Location"]
    assert location.startswith(f"http://127.0.0.2:{server.port}/")
    assert parse_recording_path(location.split(str(server.port), 1)[1], "") is None


async def test_slow_fault_trips_a_client_timeout(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A slow fault holds the answer for slow_s, long enough to time a client out."""
    server.configure(fail_first={"s-": ["slow", 1]}, slow_s=3.0)
    with pytest.raises(asyncio.TimeoutError):
        await fetch(session, server, "s-1", timeout_s=0.2)
    assert (await fetch(session, server, "s-1")).status == 200


async def test_fail_first_is_deterministic_per_id(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """Each flaky-* id fails exactly twice with 503, then works, whatever the interleaving."""
    server.configure(fail_first={"flaky-": ["503", 2]})
    ids = [f"flaky-{i}" for i in range(5)]
    rounds = [[(await fetch(session, server, rid)).status for rid in ids] for _ in range(3)]
    assert rounds == [[503] * 5, [503] * 5, [200] * 5]
    server.reset()
    assert (await fetch(session, server, "flaky-0")).status == 503


async def test_random_faults_come_from_the_listed_kinds(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """fault_rate=1 faults every request with a kind from fault_kinds."""
    server.configure(fault_rate=1.0, fault_kinds=["502", "empty"])
    statuses = {(await fetch(session, server, f"rec-{i}")).status for i in range(20)}
    assert statuses == {502, 200}
    assert set(server.stats()["faults"]) == {"502", "empty"}


async def test_rate_limiter_answers_429_with_headers(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """Past the burst the limiter answers 429 with Retry-After rounded up and X-RateLimit-*."""
    server.configure(rate_limit_rps=1.0, rate_limit_burst=3)
    replies = [await fetch(session, server, f"rec-{i}") for i in range(4)]
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert replies[0].headers["X-RateLimit-Limit"] == "3"
    assert replies[2].headers["X-RateLimit-Remaining"] == "0"
    assert replies[3].headers["Retry-After"] == "1"
    assert replies[3].headers["X-RateLimit-Limit"] == "3"
    stats = server.stats()
    assert (stats["rate_limited"], stats["by_status"]["429"], stats["faults"]) == (1, 1, {})


async def test_quota_announces_itself_and_refuses_until_the_window_resets(
    session: aiohttp.ClientSession,
) -> None:
    """Each answer carries the quota's headers, counting down; over it, 429 with Retry-After to the reset."""
    clock = VirtualClock(500.0)
    config = ServerConfig(token=TOKEN, quota_limit=3, quota_window_s=10)
    with running_server(config, clock=clock) as server:
        clock.advance(6.2)  # 3.8 s left in the first window
        replies = [await fetch(session, server, rid) for rid in ("rec-1", "rec-2", "missing-1", "rec-3")]
        assert [r.status for r in replies] == [200, 200, 404, 429]
        for reply, left in zip(replies, [2, 1, 0, 0], strict=True):
            assert reply.headers["X-RateLimit-Limit"] == "3"
            assert reply.headers["X-RateLimit-Remaining"] == str(left)
            assert reply.headers["X-RateLimit-Reset"] == "4"
            assert reply.headers["RateLimit-Policy"] == '"default";q=3;w=10'
            assert reply.headers["RateLimit"] == f'"default";r={left};t=4'
        assert replies[3].headers["Retry-After"] == "4"
        assert "Retry-After" not in replies[0].headers
        clock.advance(3.8)
        again = await fetch(session, server, "rec-3")
        assert (again.status, again.headers["RateLimit"]) == (200, '"default";r=2;t=10')
        stats = server.stats()
        assert (stats["quota_limited"], stats["rate_limited"], stats["by_status"]["429"]) == (1, 0, 1)
        assert stats["quota_origin"] == 500.0
        server.configure(quota_reset_style="epoch")
        epoch = await fetch(session, server, "rec-4")
        assert abs(int(epoch.headers["X-RateLimit-Reset"]) - (time.time() + 10)) <= 1


async def test_429bare_sends_retry_after_only(
    server: FakeServerHandle, session: aiohttp.ClientSession
) -> None:
    """A flaky gateway's 429: Retry-After seconds and no rate-limit headers at all."""
    server.configure(fail_first={"g-": ["429bare", 1]}, retry_after_s=2, quota_limit=10)
    reply = await fetch(session, server, "g-1")
    assert (reply.status, reply.headers["Retry-After"]) == (429, "2")
    assert not [name for name in reply.headers if "ratelimit" in name.lower()]
    assert (await fetch(session, server, "g-1")).status == 200


async def test_outage_503_mode_answers_503_to_every_api_request(session: aiohttp.ClientSession) -> None:
    """An outage from now gets 503 even without a token; one 'after' starts from the next request."""
    clock = VirtualClock()
    with running_server(ServerConfig(token=TOKEN), clock=clock) as server:
        server.configure(outage_s=30)
        assert (await fetch(session, server, "rec-1")).status == 503
        assert (await fetch(session, server, "rec-1", headers={})).status == 503
        clock.advance(30)
        assert (await fetch(session, server, "rec-1")).status == 200
        server.configure(outage_s=30, outage_after_s=5)
        clock.advance(100)  # the delay counts from the next request, not from the setting
        assert (await fetch(session, server, "rec-1")).status == 200
        clock.advance(5)
        assert (await fetch(session, server, "rec-1")).status == 503
        clock.advance(30)
        assert (await fetch(session, server, "rec-1")).status == 200
        timeline = server.stats()["responses"]
        assert [status for _, status in timeline] == [503, 503, 200, 200, 503, 200]
        assert [t for t, _ in timeline] == [1000.0, 1000.0, 1030.0, 1130.0, 1135.0, 1165.0]


def _get_on(sock: socket.socket, recording_id: str) -> bytes:
    """Send one keep-alive GET on a raw socket and read its whole answer (Content-Length)."""
    sock.sendall(
        f"GET {API_PATH}{recording_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_outage_refuse_mode_refuses_connections_then_listens_on_the_same_port() -> None:
    """Open connections are closed, connect() gets ECONNREFUSED, and the same port serves again after."""
    with running_server(ServerConfig(token=TOKEN)) as server:
        port = server.port
        kept = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert _get_on(kept, "rec-1").startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        server.configure(outage_s=1.0, outage_mode="refuse")
        with contextlib.suppress(ConnectionResetError):
            assert kept.recv(1) == b""  # closed by the server, not left hanging
        kept.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        while True:
            try:
                back = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() - started < 10, "the port never came back"
                time.sleep(0.02)
        refused_for = time.monotonic() - started
        with back:
            assert _get_on(back, "rec-2").startswith(b"HTTP/1.1 200")
        assert 0.9 <= refused_for < 3.0
        assert server.port == port
        assert server.stats()["by_status"] == {"200": 2}


async def test_stats_count_every_request(server: FakeServerHandle, session: aiohttp.ClientSession) -> None:
    """Stats count totals, statuses, per-id hits, concurrency and arrival times; reset clears."""
    server.configure(latency_ms=150)
    before = time.monotonic()
    started = time.perf_counter()
    replies = await asyncio.gather(*(fetch(session, server, f"rec-{i % 3}") for i in range(6)))
    assert time.perf_counter() - started >= 0.15
    assert {r.status for r in replies} == {200}
    await fetch(session, server, "missing-1")
    stats = server.stats()
    assert stats["requests_total"] == 7
    assert stats["by_status"] == {"200": 6, "404": 1}
    assert stats["per_id"] == {"rec-0": 2, "rec-1": 2, "rec-2": 2, "missing-1": 1}
    assert (stats["max_in_flight"], stats["in_flight"]) == (6, 0)
    assert len(stats["request_times"]) == 7
    assert all(before <= t <= time.monotonic() for t in stats["request_times"])
    server.reset()
    assert server.stats()["requests_total"] == 0
    assert server.config.latency_ms == 150


async def test_control_endpoints_over_http(server: FakeServerHandle, session: aiohttp.ClientSession) -> None:
    """POST /_config merges JSON into the live config and names bad fields; /_reset keeps it."""
    async with session.post(
        f"{server.root_url}/_config", json={"fail_first": {"x-": ["503", 1]}}
    ) as response:
        assert response.status == 200
        assert (await response.json())["fail_first"] == {"x-": ["503", 1]}
    assert (await fetch(session, server, "x-1")).status == 503
    async with session.post(f"{server.root_url}/_config", json={"fault_rat": 1}) as response:
        assert response.status == 400
        assert "fault_rat" in (await response.json())["error"]["message"]
    async with session.get(f"{server.root_url}/_stats") as response:
        assert (await response.json())["by_status"] == {"503": 1}
    async with session.post(f"{server.root_url}/_reset") as response:
        assert response.status == 200
    async with session.get(f"{server.root_url}/_config") as response:
        assert (await response.json())["fail_first"] == {"x-": ["503", 1]}
    assert server.stats()["requests_total"] == 0


def test_running_server_works_from_a_sync_test() -> None:
    """The server runs its own loop, so a plain test can drive it with asyncio.run."""

    async def get_status(server: FakeServerHandle) -> int:
        async with aiohttp.ClientSession() as client:
            return (await fetch(client, server, "rec-1")).status

    with running_server(ServerConfig(token=TOKEN)) as server:
        assert asyncio.run(get_status(server)) == 200
        assert server.stats()["requests_total"] == 1
    server.stop()


def test_help_documents_every_config_field() -> None:
    """Every ServerConfig field has a command-line flag, and the help names every fault kind."""
    text = build_parser().format_help()
    for field in ServerConfig.__dataclass_fields__:
        assert f"--{field.replace('_', '-')} " in text, field
    for kind in FAULT_KINDS:
        assert f" {kind} " in text, kind


def test_limit_and_outage_flags_reach_the_config() -> None:
    """The quota, 429bare and outage flags land in the ServerConfig the server runs with."""
    argv = ["--token", "t", "--quota-limit", "100", "--quota-window-s", "10", "--quota-reset-style", "epoch",
            "--fault-kinds", "429bare,503", "--outage-s", "30", "--outage-after-s", "15",
            "--outage-mode", "refuse"]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv), {})
    assert (config.quota_limit, config.quota_window_s, config.quota_reset_style) == (100, 10, "epoch")
    assert config.fault_kinds == ("429bare", "503")
    assert (config.outage_s, config.outage_after_s, config.outage_mode) == (30.0, 15.0, "refuse")


def test_command_line_server_announces_serves_and_stops(tmp_path: Path) -> None:
    """The CLI prints its URL, writes the port file, serves, and exits 0 on SIGTERM."""

    async def get_status(url: str) -> int:
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{url}/v1/core/recordings/rec-1", headers=AUTH) as response,
        ):
            return response.status

    port_file = tmp_path / "url"
    command = [sys.executable, str(FAKE_API_SCRIPT), "--port", "0",
               "--path-prefix", "api/", "--port-file", str(port_file)]  # fmt: skip
    env = {**os.environ, "FAKE_API_TOKEN": TOKEN}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("listening on http://127.0.0.1:")
            url = line.removeprefix("listening on ")
            assert url.endswith("/api")
            assert port_file.read_text().strip() == url
            assert asyncio.run(get_status(url)) == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
