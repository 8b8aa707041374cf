"""client.RecordingsClient: the request it sends, its connections, timeouts, TLS, proxies and encodings.

Against scripted servers on loopback (`scripted.py`) that write exact bytes: the head of every
request, connections kept, replaced when the server drops them and retired when a response says
so, timeouts and refused connections named, https with a certificate checked, a CONNECT tunnel the
token never shows in, Content-Encoding undone a step at a time and capped, and every error
translated to a `TransportError` with its reason. Then the pure parts: where requests go
(`Origin`, `request_target`) and which base URLs are refused (`check_base_url`). How the bytes of
one response are framed and capped is `test_http1.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import time
import zlib
from collections.abc import Callable

import pytest
import trustme
from loopback import ConnectProxy, connect_proxy
from scripted import (
    OK_HEAD,
    TOKEN,
    Conversation,
    answer,
    client_for,
    failure,
    keep_answering,
    scripted,
)

from exporter.config import HttpSettings, LimitSettings, ProxySettings, RetrySettings, Secret
from exporter.errors import Reason, TransportError, UsageError
from exporter.fetcher import Fetcher
from exporter.outcomes import Failure, Later
from exporter.pacing import Pacer
from exporter.transport.client import (
    DECODED_CODINGS,
    Origin,
    RecordingsClient,
    check_base_url,
    request_target,
)


async def test_the_request_head_is_exact_and_connections_are_reused() -> None:
    """One connection serves many GETs; the head carries the encoded id, Host, token and query."""
    async with scripted(keep_answering) as server:
        async with client_for(f"http://127.0.0.1:{server.port}/base/") as client:
            for record_id in ("a/b", "c"):
                response = await client.get(record_id)
                assert (response.status, response.body) == (200, b'{"ok":1}')
        assert server.connections == 1
        first = server.requests[0].decode()
        assert first.startswith("GET /base/v1/core/recordings/a%2Fb?x=1 HTTP/1.1\r\n")
        assert f"\r\nHost: 127.0.0.1:{server.port}\r\n" in first
        assert f"\r\nAuthorization: Bearer {TOKEN}\r\n" in first
        assert "\r\nAccept-Encoding: gzip, deflate\r\n" in first


async def test_a_dropped_idle_connection_is_replaced_without_losing_the_request() -> None:
    """A keep-alive connection the server closed while idle: the GET goes out again on a new one."""

    async def one_then_close(conv: Conversation) -> None:
        await conv.read_request()
        await conv.respond(b'{"n":1}')
        conv.writer.close()  # no "Connection: close": the client finds out on its next request

    async with scripted(one_then_close) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == b'{"n":1}'
        await asyncio.sleep(0.05)
        assert (await client.get("r")).body == b'{"n":1}'
        assert server.connections == 2
        assert len(server.requests) == 2


async def test_a_request_racing_the_servers_close_is_sent_again_on_a_new_connection() -> None:
    """The server closes a reused connection on receiving the next GET, with no answer at all."""

    async def one_then_hang_up(conv: Conversation) -> None:
        await conv.read_request()
        await conv.respond(b'{"n":1}')
        await conv.read_request()
        conv.writer.close()

    async with scripted(one_then_hang_up) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == b'{"n":1}'
        assert (await client.get("r")).body == b'{"n":1}'
        assert server.connections == 2
        assert len(server.requests) == 3


async def test_a_cut_off_body_is_a_network_error_and_not_sent_again() -> None:
    async def cut(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        conv.writer.close()

    async with scripted(cut) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        with pytest.raises(TransportError) as caught:
            await client.get("r")
        assert caught.value.reason == Reason.NETWORK
        assert "cut off" in str(caught.value)
        assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),
        ("identity", lambda data: data),
    ],
)
async def test_compressed_bodies_are_decoded(coding: str, encode: Callable[[bytes], bytes]) -> None:
    body = b'{"data":{"id":"r","text":"' + b"abc" * 5000 + b'"}}'

    async def compressed(conv: Conversation) -> None:
        while await conv.read_request() is not None:
            await conv.respond(encode(body), headers=f"Content-Encoding: {coding}\r\n")

    async with scripted(compressed) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == body


@pytest.mark.parametrize(
    ("coding", "payload", "fragment"),
    [
        ("gzip", gzip.compress(b'{"a":1}' * 1000)[:-20], "cut off"),
        ("gzip", b"not gzip at all", "does not decompress"),
        ("gzip", gzip.compress(b'{"a":1}') + b"trailing garbage", "does not decompress"),
        ("deflate", zlib.compress(b'{"a":1}') + b"\x00", "after the end of the compressed body"),
    ],
)
async def test_undecodable_bodies_are_network_errors(coding: str, payload: bytes, fragment: str) -> None:
    """A body its coding cannot undo may be damaged in transit: a network error, worth another try."""

    async def bad(conv: Conversation) -> None:
        await conv.read_request()
        await conv.respond(payload, headers=f"Content-Encoding: {coding}\r\n")

    async with scripted(bad) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        with pytest.raises(TransportError, match=fragment) as caught:
            await client.get("r")
        assert caught.value.reason == Reason.NETWORK


async def test_a_silent_server_times_out_and_its_connection_is_dropped() -> None:
    async def silent(conv: Conversation) -> None:
        await conv.read_request()

    async with (
        scripted(silent) as server,
        client_for(f"http://127.0.0.1:{server.port}", timeout_s=0.2) as client,
    ):
        with pytest.raises(TransportError, match=r"within 0\.2s") as caught:
            await client.get("r")
        assert caught.value.reason == Reason.TIMEOUT
        for _ in range(100):
            if server.closed_by_client:
                break
            await asyncio.sleep(0.01)
        assert server.closed_by_client == 1


async def test_a_refused_connection_names_the_address() -> None:
    async with scripted(keep_answering) as server:
        port = server.port
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(TransportError, match=f"cannot connect to 127.0.0.1:{port}") as caught:
            await client.get("r")
        assert caught.value.reason == Reason.NETWORK
        assert TOKEN not in str(caught.value)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def _server_tls(authority: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(context)
    return context


def _client_tls(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


async def test_https_works_and_reuses_the_tls_connection(authority: trustme.CA) -> None:
    async with scripted(keep_answering, ssl_context=_server_tls(authority, "localhost")) as server:
        url = f"https://localhost:{server.port}"
        async with client_for(url, ssl_context=_client_tls(authority)) as client:
            for _ in range(3):
                assert (await client.get("r")).body == b'{"ok":1}'
        assert server.connections == 1
        assert f"\r\nHost: localhost:{server.port}\r\n" in server.requests[0].decode()


async def test_a_certificate_for_another_name_is_refused(authority: trustme.CA) -> None:
    """The token is never sent to a server that cannot prove it is the configured host."""
    async with scripted(keep_answering, ssl_context=_server_tls(authority, "elsewhere.example")) as server:
        url = f"https://localhost:{server.port}"
        async with client_for(url, ssl_context=_client_tls(authority)) as client:
            with pytest.raises(TransportError, match="TLS certificate of localhost was refused") as caught:
                await client.get("r")
        assert caught.value.reason == Reason.NETWORK
        assert server.requests == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ("", b"x" * 5000),
        ("Content-Encoding: gzip\r\n", gzip.compress(b"x" * 5000)),
    ],
)
async def test_a_body_over_the_limit_fails_for_good(headers: str, body: bytes) -> None:
    """Over max_response_bytes, as sent or once decompressed: an error that is not retried."""

    async def big(conv: Conversation) -> None:
        await conv.read_request()
        await conv.respond(body, headers=headers)

    async with scripted(big) as server:
        settings = HttpSettings(
            base_url=f"http://127.0.0.1:{server.port}", token=Secret(TOKEN), max_response_bytes=4096
        )
        async with RecordingsClient(settings) as client:
            with pytest.raises(TransportError, match="larger than 4,096 bytes") as caught:
                await client.get("r")
    assert caught.value.reason == Reason.BAD_RESPONSE
    assert not caught.value.retryable
    assert "--max-response-bytes" in str(caught.value)


async def test_an_endless_body_is_cut_at_the_limit() -> None:
    """A body without end (read until close) stops at the limit rather than filling memory."""

    async def endless(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:
                await conv.send(b"y" * 65536)

    async with scripted(endless) as server:
        settings = HttpSettings(
            base_url=f"http://127.0.0.1:{server.port}", token=Secret(TOKEN), max_response_bytes=1 << 20
        )
        async with RecordingsClient(settings) as client:
            with pytest.raises(TransportError, match="larger than 1,048,576 bytes"):
                await client.get("r")


# --- through a proxy -----------------------------------------------------------------------------


def proxied_client(url: str, proxy_port: int, authority: trustme.CA) -> RecordingsClient:
    settings = HttpSettings(
        base_url=url, token=Secret(TOKEN), proxy=ProxySettings(host="127.0.0.1", port=proxy_port)
    )
    return RecordingsClient(settings, ssl_context=_client_tls(authority))


async def test_https_through_a_proxy_keeps_the_token_from_it(authority: trustme.CA) -> None:
    """One CONNECT, then TLS to the API inside the tunnel: the proxy never sees the token."""
    proxy = ConnectProxy()
    async with (
        scripted(keep_answering, ssl_context=_server_tls(authority, "localhost")) as server,
        connect_proxy(proxy) as proxy_port,
    ):
        url = f"https://localhost:{server.port}"
        async with proxied_client(url, proxy_port, authority) as client:
            for _ in range(3):
                assert (await client.get("r")).body == b'{"ok":1}'
        assert [head.split(b"\r\n")[0] for head in proxy.heads] == [
            f"CONNECT localhost:{server.port} HTTP/1.1".encode()
        ]
        assert server.connections == 1
        assert len(server.requests) == 3
        assert f"Authorization: Bearer {TOKEN}" in server.requests[0].decode()
        assert len(proxy.relayed) > 1000
        assert TOKEN.encode() not in bytes(proxy.relayed)
        assert b"Authorization" not in b"".join(proxy.heads)


async def test_a_proxy_refusing_the_tunnel_is_named_in_the_error(authority: trustme.CA) -> None:
    proxy = ConnectProxy(refuse_with=b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    async with connect_proxy(proxy) as proxy_port:
        async with proxied_client("https://localhost:9", proxy_port, authority) as client:
            with pytest.raises(TransportError, match=r"refused a tunnel to localhost:9.*403") as caught:
                await client.get("r")
        assert caught.value.reason == Reason.NETWORK
        assert f"127.0.0.1:{proxy_port}" in str(caught.value)


async def test_an_unreachable_proxy_is_named_in_the_error(authority: trustme.CA) -> None:
    async with connect_proxy(ConnectProxy()) as proxy_port:
        pass
    async with proxied_client("https://localhost:9", proxy_port, authority) as client:
        with pytest.raises(TransportError, match=f"cannot connect to the proxy 127.0.0.1:{proxy_port}"):
            await client.get("r")


async def test_every_gzip_member_is_decoded() -> None:
    """A body of several gzip members decodes to all of them, as urllib3 and gzip.decompress do."""
    parts = [b'{"data":{"id":"r",', b'"text":"' + b"abc" * 2000 + b'"', b"}}"]
    payload = b"".join(gzip.compress(part) for part in parts)
    async with (
        scripted(
            answer(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        ) as server,
        client_for(f"http://127.0.0.1:{server.port}") as client,
    ):
        assert (await client.get("r")).body == b"".join(parts)


async def test_the_decompressed_limit_holds_over_all_gzip_members() -> None:
    """Two members of 3,000 bytes each are over a 4,096-byte limit together, though not alone."""
    payload = gzip.compress(b"x" * 3000) * 2
    message = OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
    error = await failure(answer(message), max_response_bytes=4096)
    assert "larger than 4,096 bytes once decompressed" in str(error)
    assert (error.reason, error.retryable) == (Reason.BAD_RESPONSE, False)


def test_accept_encoding_offers_exactly_what_is_decoded() -> None:
    """The codings offered are those `_decoded` undoes (each tested above), nothing more."""
    assert DECODED_CODINGS == ("gzip", "deflate")


@pytest.mark.parametrize(
    ("message", "reason", "requests"),
    [
        (OK_HEAD + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", Reason.BAD_RESPONSE, 1),
        (OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\n" + gzip.compress(b"{}"), Reason.BAD_RESPONSE, 1),
        (OK_HEAD + b"X-A: \x00\r\nContent-Length: 2\r\n\r\n{}", Reason.NETWORK, 3),
    ],
)
async def test_a_refused_response_is_asked_once_and_a_malformed_one_again(
    message: bytes, reason: Reason, requests: int
) -> None:
    """Through the attempt loop: an unsupported coding is one request, not --max-attempts of them."""

    async def every_time(conv: Conversation) -> None:
        while await conv.read_request() is not None:
            await conv.send(message)

    retry = RetrySettings(max_attempts=3, backoff_base_s=0.001, backoff_cap_s=0.002)
    async with scripted(every_time) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        fetcher = Fetcher(client, Pacer(LimitSettings(rate_per_s=0), retry), retry)
        result = await fetcher.fetch("r")
        while isinstance(result, Later):
            await asyncio.sleep(max(0.0, result.not_before - time.monotonic()))
            result = await fetcher.fetch(result.id, result.tries)
    assert isinstance(result, Failure)
    assert (result.reason, result.attempts, len(server.requests)) == (reason, requests, requests)


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", lambda data: gzip.compress(data[:1000]) + gzip.compress(data[1000:])),
        ("deflate", zlib.compress),
        ("gzip, deflate", lambda data: zlib.compress(gzip.compress(data))),
    ],
)
async def test_a_body_decompressed_in_many_steps_is_exact(
    coding: str, encode: Callable[[bytes], bytes]
) -> None:
    """Over 1 MiB decompressed, so decoded a step at a time with the event loop running between."""
    body = b'{"data":{"id":"r","text":"' + bytes(range(32, 127)) * 40_000 + b'"}}'
    payload = encode(body)
    fields = f"Content-Encoding: {coding}\r\nContent-Length: {len(payload)}\r\n\r\n"
    message = OK_HEAD + fields.encode() + payload
    async with scripted(answer(message)) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == body


# --- where requests go, and which base URLs are refused (pure) -------------------------------------


def test_request_target_encodes_the_id() -> None:
    """The target builder percent-encodes everything that could leave the path segment."""
    target = request_target("/base", "../admin?x#y", "a=1")
    assert target == "/base/v1/core/recordings/..%2Fadmin%3Fx%23y?a=1"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://api.example.com", "http(s)"),
        ("https://user:pw@api.example.com", "credentials"),
        ("https://api.example.com/?a=1", "query"),
        ("http://api.example.com", "unencrypted"),
        ("not a url", "http(s)"),
    ],
)
def test_bad_base_urls_are_refused(url: str, fragment: str) -> None:
    """Base URLs that would leak or misroute the token are refused with what to do instead."""
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_base_url(url)


def test_plain_http_is_fine_on_loopback_and_when_insisted() -> None:
    """http:// is accepted for this machine, and elsewhere with allow_insecure_http."""
    assert check_base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_base_url("http://localhost:1") == "http://localhost:1"
    assert check_base_url("http://[::1]:1") == "http://[::1]:1"
    assert check_base_url("http://api.lan", allow_insecure_http=True) == "http://api.lan"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://api.example.com", ("api.example.com", 443, "api.example.com", "")),
        ("http://127.0.0.1:8080/base", ("127.0.0.1", 8080, "127.0.0.1:8080", "/base")),
        ("https://[2001:db8::1]:8443/a b", ("2001:db8::1", 8443, "[2001:db8::1]:8443", "/a%20b")),
        ("http://localhost:80", ("localhost", 80, "localhost", "")),
    ],
)
def test_origin_gives_where_to_connect_and_the_host_header(
    base: str, expected: tuple[str, int, str, str]
) -> None:
    """Host and port to connect to, the Host header (port only when not the default), the path prefix."""
    origin = Origin.of(base)
    assert (origin.host, origin.port, origin.authority, origin.path) == expected
