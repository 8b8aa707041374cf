"""A proxy that fails every request is named as the cause: in the closing line, in `exporter status`
and in summary.json, not "the API looks down". Scripted proxies on loopback fail each CONNECT one of
four ways; the API behind them is never reached.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from on_disk import read_failed, read_summary, write_manifest
from runs import export, make_config
from scripted import Conversation, scripted

from exporter.config import ProxySettings, RetrySettings
from exporter.errors import ExitCode
from exporter.offline.status import gather_status, render_text


async def two_hundred_then_garbage(conv: Conversation) -> None:
    await conv.read_request()
    await conv.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await asyncio.sleep(0.05)  # a read of its own: the TLS handshake gets it
    with contextlib.suppress(ConnectionError):
        await conv.send(b"<html>this is not TLS</html>\r\n" * 8)
    await conv.reader.read()


async def closes(conv: Conversation) -> None:
    await conv.read_request()
    conv.writer.close()


async def silent(conv: Conversation) -> None:
    await conv.read_request()
    await conv.reader.read()  # until the exporter gives up


async def endless_head(conv: Conversation) -> None:
    await conv.read_request()
    with contextlib.suppress(ConnectionError):
        await conv.send(b"HTTP/1.1 200 Connection established\r\n")
        while not conv.reader.at_eof():
            await conv.send(b"X-Filler: " + b"a" * 1000 + b"\r\n")
            await asyncio.sleep(0)


PROXIES: dict[str, tuple[Callable[[Conversation], Awaitable[None]], str, str]] = {
    # kind: (proxy, what summary.json blames, a fragment of the error)
    "200 then garbage": (two_hundred_then_garbage, "tls", "TLS error with localhost"),
    "closes": (closes, "proxy", "closed the connection instead of opening a tunnel"),
    "silent": (silent, "proxy", "within 1s"),
    "endless head": (endless_head, "proxy", "to CONNECT is not HTTP"),
}


@pytest.mark.parametrize("kind", PROXIES)
async def test_a_failing_proxy_is_named_as_the_cause(tmp_path: Path, kind: str) -> None:
    """Every CONNECT fails (200 then bytes that are not TLS, a close, silence, an endless head): the
    run ends with exit 6 once --max-outage has passed, and the closing line, `exporter status` and
    summary.json's `pacing.halt` name the proxy (or TLS through it) and its address, with what it
    did; no id is marked failed."""
    proxy, cause, fragment = PROXIES[kind]
    manifest = write_manifest(tmp_path / "ids.txt", [f"p-{i}" for i in range(6)])
    out = tmp_path / "out"
    async with scripted(proxy) as server:
        config = make_config(manifest, out, "https://localhost:9", concurrency=2, timeout_s=1.0)
        http = replace(config.http, proxy=ProxySettings(host="127.0.0.1", port=server.port))
        config = replace(
            config, http=http, retry=RetrySettings(max_attempts=3, backoff_base_s=0.05, max_outage_s=1.0)
        )
        outcome = await export(config)
    assert outcome.exit_code == ExitCode.API_UNAVAILABLE, outcome.message
    message = outcome.message or ""
    authority = f"127.0.0.1:{server.port}"
    assert f"proxy {authority}" in message
    assert fragment in message
    assert "the API was unavailable" not in message
    halt = read_summary(out)["pacing"]["halt"]
    assert (halt["reason"], halt["cause"], halt["message"]) == ("api_unavailable", cause, message)
    assert message in render_text(gather_status(out))
    assert read_failed(out) == {}
