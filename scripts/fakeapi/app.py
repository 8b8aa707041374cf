"""The aiohttp app: the gate (outage, auth, quota, rate limit), the answer, the control endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import urllib.parse
from typing import Final

import orjson
from aiohttp import web

from fakeapi.config import API_PATH, ServerConfig, config_to_json, merge_config
from fakeapi.faults import FAULT_RESPONDERS, choose_fault, error_response, json_response, ok_body
from fakeapi.limits import FixedWindowQuota, TokenBucket, quota_headers, rate_limit_headers
from fakeapi.state import ServerState

STATE_KEY: Final = web.AppKey("fake_api_state", ServerState)


def parse_recording_path(raw_target: str, prefix: str) -> str | None:
    """The decoded id from a raw request target, or None if it is not the API path.

    Works on the raw target so an encoded slash stays inside one segment: 'a%2Fb' is the
    id 'a/b', while a literal 'a/b' is not an API path at all.
    """
    raw_path = raw_target.split("?", 1)[0].split("#", 1)[0]
    base = prefix + API_PATH
    if not raw_path.startswith(base):
        return None
    segment = raw_path[len(base) :]
    if not segment or "/" in segment:
        return None
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return None


def quote_id(recording_id: str) -> str:
    """Percent-encode an id as exactly one path segment, the inverse of parse_recording_path.

    Dots are unreserved, so quote() leaves '.' and '..' alone and a client would resolve them
    as dot-segments; encoding them keeps those ids addressable.
    """
    segment = urllib.parse.quote(recording_id, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _limiter_headers(bucket: TokenBucket) -> dict[str, str]:
    """X-RateLimit-* for the live bucket, after this request took its token (or not)."""
    return rate_limit_headers(
        limit=bucket.capacity,
        remaining=int(bucket.tokens),
        reset_in_s=bucket.seconds_until_full(),
        now_epoch_s=time.time(),
    )


def _quota_headers(quota: FixedWindowQuota, config: ServerConfig) -> dict[str, str]:
    """The quota's announcement for the live window, after this request was counted (or not)."""
    return quota_headers(
        limit=quota.limit,
        remaining=quota.remaining,
        reset_in_s=quota.reset_in_s(),
        window_s=quota.window_s,
        style=config.quota_reset_style,
        now_epoch_s=time.time(),
    )


def _gate(
    request: web.Request, state: ServerState, config: ServerConfig
) -> tuple[web.Response | None, dict[str, str]]:
    """Outage, auth, revocation, the quota and the rate limiter, in that order.

    Returns the refusal (None lets the request on) and the quota's headers, which every
    answer of the API proper carries. A request either limit refuses counts against neither.
    """
    if config.outage_mode == "503" and state.outage_remaining_s() > 0:
        return error_response(503, "service unavailable"), {}
    authorization = request.headers.get("Authorization")
    if authorization != f"Bearer {config.token}" and (
        config.previous_token is None or authorization != f"Bearer {config.previous_token}"
    ):
        state.stats.bad_auth += 1
        return error_response(401, "missing or invalid bearer token"), {}
    if config.revoke_after is not None and state.stats.requests_total > config.revoke_after:
        return error_response(403, "token revoked"), {}
    quota = state.quota
    if quota is not None and quota.remaining <= 0:
        state.stats.quota_limited += 1
        headers = _quota_headers(quota, config)
        headers["Retry-After"] = str(math.ceil(quota.reset_in_s()))
        return error_response(429, "quota exceeded", headers), {}
    if state.bucket is not None:
        wait_s = state.bucket.try_acquire()
        if wait_s > 0:
            state.stats.rate_limited += 1
            headers = _limiter_headers(state.bucket)
            if quota is not None:  # X-RateLimit-* describe the quota when there is one
                headers.update(_quota_headers(quota, config))
            headers["Retry-After"] = str(math.ceil(wait_s))
            return error_response(429, "rate limit exceeded", headers), {}
    if quota is None:
        return None, {}
    quota.try_acquire()
    return None, _quota_headers(quota, config)


async def _sleep_latency(state: ServerState, config: ServerConfig) -> None:
    """Delay the answer by latency_ms plus up to jitter_ms, like a distant server."""
    delay_ms = config.latency_ms + state.jitter_rng.uniform(0.0, config.jitter_ms)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)


async def _answer(
    request: web.Request, state: ServerState, config: ServerConfig, rid: str
) -> web.StreamResponse:
    """Decide and build the answer to one API request that has arrived."""
    if request.method != "GET":
        return error_response(405, "only GET is supported", {"Allow": "GET"})
    refusal, announce = _gate(request, state, config)
    await _sleep_latency(state, config)
    if refusal is not None:
        return refusal
    state.attempts[rid] += 1
    fault = choose_fault(config, rid, state.attempts[rid])
    if fault is not None:
        state.stats.faults[fault] += 1
        return await FAULT_RESPONDERS[fault](request, config, rid, fault)
    if rid.startswith("missing-"):
        return error_response(404, f"recording {rid!r} not found", announce)
    response = web.Response(body=ok_body(request, config, rid), content_type="application/json")
    if state.bucket is not None:
        response.headers.update(_limiter_headers(state.bucket))
    response.headers.update(announce)  # the quota's X-RateLimit-* win over the bucket's
    return response


async def _handle_any(request: web.Request) -> web.StreamResponse:
    """Every request that is not a control endpoint: the API, or an unknown path."""
    state = request.app[STATE_KEY]
    config = state.config
    rid = parse_recording_path(request.raw_path, config.path_prefix)
    if rid is None:
        state.stats.unknown_path_requests += 1
        state.stats.unknown_paths.append(request.raw_path)
        return error_response(
            404,
            f"no such path {request.path!r}; the API is at {config.path_prefix}{API_PATH}{{id}}",
        )
    stats = state.stats  # reset mid-request must not make in_flight negative
    stats.on_arrival(rid, request.rel_url.raw_query_string, state.clock())
    state.on_api_request()
    try:
        response = await _answer(request, state, config, rid)
    finally:
        stats.in_flight -= 1
    stats.on_response(response.status, state.clock())
    return response


async def _handle_stats(request: web.Request) -> web.Response:
    """GET /_stats."""
    return json_response(200, request.app[STATE_KEY].snapshot())


async def _handle_responses(request: web.Request) -> web.Response:
    """GET /_stats/responses?since=N: the (clock, status) timeline from response N on."""
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        return error_response(400, "since must be a whole number (a responses_total seen before)")
    return json_response(200, request.app[STATE_KEY].stats.responses_since(since))


async def _handle_reset(request: web.Request) -> web.Response:
    """POST /_reset."""
    request.app[STATE_KEY].reset()
    return json_response(200, {"reset": True})


async def _handle_get_config(request: web.Request) -> web.Response:
    """GET /_config."""
    return json_response(200, config_to_json(request.app[STATE_KEY].config))


async def _handle_post_config(request: web.Request) -> web.Response:
    """POST /_config: merge a JSON object into the live config; 400 names a bad field."""
    state = request.app[STATE_KEY]
    try:
        changes = orjson.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object of config fields")
        state.apply(merge_config(state.config, changes), changes.keys())
    except (ValueError, TypeError) as exc:
        return error_response(400, str(exc))
    return json_response(200, config_to_json(state.config))


def build_app(state: ServerState) -> web.Application:
    """The aiohttp app: control endpoints first, then one catch-all for everything else.

    The catch-all parses the raw path itself (see parse_recording_path), which is what
    keeps %2F inside an id and lets unknown paths be counted.
    """
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_get("/_stats", _handle_stats)
    app.router.add_get("/_stats/responses", _handle_responses)
    app.router.add_post("/_reset", _handle_reset)
    app.router.add_get("/_config", _handle_get_config)
    app.router.add_post("/_config", _handle_post_config)
    app.router.add_route("*", "/{tail:.*}", _handle_any)
    return app


class Listener:
    """The listening socket, which a refuse-mode outage closes and reopens on the same port."""

    __slots__ = ("_runner", "_site", "host", "port")

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._site: web.TCPSite | None = None
        self.host = host
        self.port = port

    @property
    def is_open(self) -> bool:
        return self._site is not None

    async def open(self) -> None:
        """Listen on host:port (the first time port 0 picks one, kept from then on)."""
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self._site = site
        if self.port == 0:
            self.port = int(self._runner.addresses[-1][1])

    async def close(self) -> None:
        """Stop listening (connect() is refused from now on) and close every open connection."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        server = self._runner.server
        if server is not None:
            for handler in server.connections:
                handler.force_close()


async def _drive_outages(state: ServerState, listener: Listener) -> None:
    """Keep the listener closed exactly while a refuse-mode outage lasts.

    Sleeps until the schedule's next start or end, or until the state says it moved
    (a POST /_config, a reset, the request that fixes an 'after' start).
    """
    while True:
        state.changed.clear()
        now = state.clock()
        refusing = state.config.outage_mode == "refuse" and state.outage.remaining_s(now) > 0
        delay = state.outage.next_change_s(now)
        try:
            if refusing and listener.is_open:
                await listener.close()
            elif not refusing and not listener.is_open:
                await listener.open()
        except OSError as exc:  # the port was taken meanwhile: say so and try again soon
            print(f"fake_api: cannot listen again on port {listener.port}: {exc}", file=sys.stderr)
            delay = 0.5
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.changed.wait(), delay)


class Serving:
    """A started server: its runner, its listener and the task that drives outages."""

    __slots__ = ("_driver", "listener", "runner")

    def __init__(self, runner: web.AppRunner, listener: Listener, driver: asyncio.Task[None]) -> None:
        self.runner = runner
        self.listener = listener
        self._driver = driver

    @property
    def port(self) -> int:
        """The bound port, the same across outages."""
        return self.listener.port

    async def cleanup(self) -> None:
        """Stop the driver, then the server (sites, connections, handlers)."""
        self._driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._driver
        await self.runner.cleanup()


async def start_server(state: ServerState, host: str = "127.0.0.1", port: int = 0) -> Serving:
    """Bind and start serving; the returned Serving knows the bound port and how to stop."""
    runner = web.AppRunner(
        build_app(state),
        access_log=None,  # an access line per request would halve throughput
        handler_cancellation=True,  # a client timeout ends a 'slow' handler, not the test
        shutdown_timeout=1.0,
    )
    await runner.setup()
    listener = Listener(runner, host, port)
    try:
        await listener.open()
    except BaseException:
        await runner.cleanup()
        raise
    driver = asyncio.get_running_loop().create_task(_drive_outages(state, listener), name="fake-api-outages")
    return Serving(runner, listener, driver)


def base_url(host: str, port: int, prefix: str) -> str:
    """The base URL a client should use, prefix included."""
    if host in ("0.0.0.0", ""):  # a wildcard bind is dialled on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{prefix}"
