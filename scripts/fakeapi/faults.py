"""Which fault a request gets (a pure function of config, id and attempt), and how each is served.

The API's JSON answers (json_response, and error_response, its error shape) live here because the
faults are their first users; the app's refusals and control endpoints use them too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from fakeapi.config import NOMINAL_RATE_LIMIT, FaultKind, ServerConfig
from fakeapi.limits import rate_limit_headers, retry_after_value
from fakeapi.records import success_body, toggled_fields, unit_hash


def fail_first_rule(
    rules: Mapping[str, tuple[FaultKind, int]], recording_id: str
) -> tuple[FaultKind, int] | None:
    """The fail_first rule for an id: the longest matching prefix wins."""
    prefix = max((p for p in rules if recording_id.startswith(p)), key=len, default=None)
    return None if prefix is None else rules[prefix]


def choose_fault(config: ServerConfig, recording_id: str, attempt: int) -> FaultKind | None:
    """The fault for the attempt-th request (1-based) for an id, or None to serve it.

    A function of (config, id, attempt) only, not of arrival order, so a run with
    concurrent workers sees the same faults per id every time for the same seed.
    """
    rule = fail_first_rule(config.fail_first, recording_id)
    if rule is not None and attempt <= rule[1]:
        return rule[0]
    if config.fault_attempts is not None and attempt > config.fault_attempts:
        return None
    if config.fault_kinds and unit_hash(config.seed, "fault", recording_id, attempt) < (config.fault_rate):
        pick = unit_hash(config.seed, "kind", recording_id, attempt)
        return config.fault_kinds[int(pick * len(config.fault_kinds))]
    return None


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response with an exact Content-Length (aiohttp sets it from the body)."""
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The API's JSON error shape."""
    return json_response(status, {"error": {"code": status, "message": message}}, headers)


async def _send_partial(request: web.Request, body: bytes, *, reset: bool) -> web.StreamResponse:
    """Promise the full body in Content-Length, send half, then drop the connection.

    reset=True sends a TCP RST (SO_LINGER 0), like a crashed proxy; otherwise a clean FIN,
    like a server that gave up, so the client sees the body end short of Content-Length.
    """
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return response


_Fault = Callable[[web.Request, ServerConfig, str, FaultKind], Awaitable[web.StreamResponse]]


async def _fault_status(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """500, 502, 503 or 504 with the JSON error body."""
    return error_response(int(kind), f"injected {kind} for {rid}")


async def _fault_429(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """429 with Retry-After (seconds or an HTTP date) and X-RateLimit-* headers."""
    now = time.time()
    as_date = kind == "429date"
    limit = config.effective_burst if config.rate_limit_rps is not None else NOMINAL_RATE_LIMIT
    headers = rate_limit_headers(limit=limit, remaining=0, reset_in_s=config.retry_after_s, now_epoch_s=now)
    headers["Retry-After"] = retry_after_value(config.retry_after_s, as_date=as_date, now_epoch_s=now)
    return error_response(429, f"too many requests (injected for {rid})", headers)


async def _fault_429bare(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """429 with Retry-After seconds and nothing else, as a flaky gateway sends it."""
    return error_response(429, "too many requests", {"Retry-After": str(config.retry_after_s)})


async def _fault_reset(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """Headers and half the body, then a TCP reset."""
    return await _send_partial(request, ok_body(request, config, rid), reset=True)


async def _fault_truncate(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """Headers and half the body, then a clean close short of Content-Length."""
    return await _send_partial(request, ok_body(request, config, rid), reset=False)


async def _fault_html(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 whose body is a proxy's HTML error page."""
    page = (
        "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        "<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>\n"
    )
    return web.Response(status=200, text=page, content_type="text/html")


async def _fault_badjson(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 application/json body that is not valid JSON (cut mid-string)."""
    body = json.dumps({"data": {"id": rid, "title": "unterminated"}})[:-8].encode()
    return web.Response(status=200, body=body, content_type="application/json")


async def _fault_empty(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 application/json with Content-Length: 0."""
    return web.Response(status=200, body=b"", content_type="application/json")


async def _fault_wrongid(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A valid 200 for a different id, as a mixed-up cache would serve."""
    body = success_body(f"wrong-{rid}", config)
    return web.Response(status=200, body=body, content_type="application/json")


async def _fault_redirect(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """302 to another origin (127.0.0.2, same port), where a client must not send its token.

    The path is not an API path, so if the request does land here it shows up in
    unknown_paths instead of being served.
    """
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if sockname else 80
    target = request.raw_path.split("?", 1)[0]
    location = f"http://127.0.0.2:{port}/redirected{target}"
    return web.Response(status=302, headers={"Location": location})


async def _fault_slow(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """Sleep slow_s, then answer normally: long enough to trip a client timeout."""
    await asyncio.sleep(config.slow_s)
    return web.Response(status=200, body=ok_body(request, config, rid), content_type="application/json")


async def _fault_nodata(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 JSON envelope without "data"."""
    return json_response(200, {"cursor": None, "pageSize": 0, "limit": 1})


FAULT_RESPONDERS: Final[Mapping[FaultKind, _Fault]] = {
    "500": _fault_status,
    "502": _fault_status,
    "503": _fault_status,
    "504": _fault_status,
    "429": _fault_429,
    "429date": _fault_429,
    "429bare": _fault_429bare,
    "reset": _fault_reset,
    "truncate": _fault_truncate,
    "html": _fault_html,
    "badjson": _fault_badjson,
    "empty": _fault_empty,
    "wrongid": _fault_wrongid,
    "redirect": _fault_redirect,
    "slow": _fault_slow,
    "nodata": _fault_nodata,
}


def ok_body(request: web.Request, config: ServerConfig, rid: str) -> bytes:
    """The success body for this request, honouring its include toggles."""
    return success_body(rid, config, toggled_fields(request.query))
