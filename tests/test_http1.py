"""client.RecordingsClient and http1.Connection against a scripted HTTP server on loopback.

The fake API is an aiohttp server and always answers well-formed HTTP; these
tests need the wire itself: chunked and read-until-close bodies, interim
responses, compressed bodies, keep-alive connections the server drops, cut-off
and malformed responses, TLS, and a CONNECT proxy in between, and every cap and refusal a hostile
server meets (issue 12). Each scripted server is a real TCP server on 127.0.0.1 whose handler writes
exact bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme
from loopback import ConnectProxy, connect_proxy

from exporter.client import DECODED_CODINGS, RecordingsClient
from exporter.config import HttpSettings, LimitSettings, ProxySettings, RetrySettings, Secret
from exporter.errors import Reason, TransportError, UsageError
from exporter.fetcher import Failure, Fetcher, Later
from exporter.http1 import Connection, Framing, Response, State, body_framing, parse_head
from exporter.pacing import Pacer
from exporter.tunnel import parse_proxy_url

TOKEN = "tok-Hq72"
Handler = Callable[["Conversation"], Awaitable[None]]


class Conversation:
    """One accepted connection, as the handler sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Scripted) -> None:
        self.reader = reader
        self.writer = writer
        self.server = server

    async def read_request(self) -> bytes | None:
        """The next request head, or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.server.requests.append(head)
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, body: bytes, *, status: str = "200 OK", headers: str = "") -> None:
        """A complete Content-Length response (the connection stays open)."""
        await self.send(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body)


class Scripted:
    """A loopback server running `handler` for each connection; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_client = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(Conversation(reader, writer, self))
            # Wait for the client to hang up, so a test can tell whether it did.
            if not writer.is_closing() and await reader.read() == b"":
                self.closed_by_client += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_client += 1
        finally:
            writer.close()


@asynccontextmanager
async def scripted(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Scripted]:
    state = Scripted(handler)
    server = await asyncio.start_server(state._serve, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


def client_for(
    base_url: str, *, timeout_s: float = 5.0, ssl_context: ssl.SSLContext | None = None
) -> RecordingsClient:
    settings = HttpSettings(base_url=base_url, token=Secret(TOKEN), timeout_s=timeout_s, query=(("x", "1"),))
    return RecordingsClient(settings, ssl_context=ssl_context)


async def keep_answering(conv: Conversation, body: bytes = b'{"ok":1}') -> None:
    while await conv.read_request() is not None:
        await conv.respond(body)


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


async def test_chunked_bodies_are_reassembled_and_headers_are_case_insensitive() -> None:
    async def chunked(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nretry-after: 3\r\n\r\n")
        for part in (b'{"a":', b"12345", b"}"):
            await conv.send(b"%x\r\n%s\r\n" % (len(part), part))
        await conv.send(b"0\r\n\r\n")
        await keep_answering(conv)

    async with scripted(chunked) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        response = await client.get("r")
        assert response.body == b'{"a":12345}'
        assert response.headers.get("Retry-After") == "3"
        assert "RETRY-AFTER" in response.headers
        assert (await client.get("r")).body == b'{"ok":1}'
        assert server.connections == 1


async def test_a_body_delimited_by_close_is_complete_and_the_connection_is_not_reused() -> None:
    async def until_close(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"whole":true}')
        conv.writer.close()

    async with scripted(until_close) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        for _ in range(2):
            assert (await client.get("r")).body == b'{"whole":true}'
        assert server.connections == 2


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


async def test_a_chunked_body_without_its_last_chunk_is_cut_off() -> None:
    """Chunks, then a close before the terminating zero-length chunk: not a complete body."""

    async def cut_chunked(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"a":1}\r\n')
        conv.writer.close()

    async with scripted(cut_chunked) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        with pytest.raises(TransportError, match="cut off") as caught:
            await client.get("r")
        assert caught.value.reason == Reason.NETWORK


async def test_interim_responses_are_skipped() -> None:
    async def early_hints(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        await conv.respond(b'{"final":1}', headers="X-Final: yes\r\n")
        await keep_answering(conv)

    async with scripted(early_hints) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        response = await client.get("r")
        assert (response.status, response.body) == (200, b'{"final":1}')
        assert "link" not in response.headers
        assert response.headers["x-final"] == "yes"


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


async def test_garbage_instead_of_http_is_a_malformed_response() -> None:
    async def garbage(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async with scripted(garbage) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        with pytest.raises(TransportError, match="malformed HTTP response") as caught:
            await client.get("r")
        assert caught.value.reason == Reason.NETWORK


async def test_a_second_unrequested_response_retires_the_connection() -> None:
    """Bytes after a complete response mean the framing is off: that connection is not reused."""

    async def double(conv: Conversation) -> None:
        await conv.read_request()
        await conv.respond(b"{}")
        await conv.respond(b'{"stray":1}')
        await keep_answering(conv)

    async with scripted(double) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == b"{}"
        await asyncio.sleep(0.05)
        assert (await client.get("r")).body == b"{}"
        assert server.connections == 2


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


@pytest.mark.parametrize(
    ("proxy", "fragment"),
    [
        ("http://user:pw@proxy.example:3128", "credentials"),
        ("http://proxy.example", "needs the proxy's port"),
        ("https://proxy.example:3128", "http:// proxy URL"),
        ("socks5://proxy.example:1080", "http:// proxy URL"),
        ("http://proxy.example:3128/path", "only http://HOST:PORT"),
    ],
)
def test_proxy_urls_that_would_leak_or_misroute_are_refused(proxy: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)) as caught:
        parse_proxy_url(proxy, source="--proxy")
    assert "pw" not in str(caught.value)


def test_a_proxy_url_gives_host_and_port() -> None:
    parsed = parse_proxy_url("http://[::1]:3128/", source="--proxy")
    assert (parsed.host, parsed.port, parsed.credentials) == ("::1", 3128, None)
    assert parse_proxy_url("proxy.corp:8080", source="HTTPS_PROXY").url == "http://proxy.corp:8080"


def test_credentials_in_an_environment_proxy_url_are_decoded_and_never_shown() -> None:
    """`http://user:p%40ss@host:port` from the environment: Basic credentials, percent-decoded, hidden."""
    parsed = parse_proxy_url("http://ops:p%40ss%3Aw0rd@proxy.corp:3128", source="HTTPS_PROXY")
    assert parsed.credentials is not None
    assert parsed.credentials.reveal() == "ops:p@ss:w0rd"
    assert (parsed.url, parsed.credentials_from) == ("http://proxy.corp:3128", "HTTPS_PROXY")
    assert "w0rd" not in repr(parsed)
    with pytest.raises(UsageError) as caught:
        parse_proxy_url("https://ops:s3cr3t@proxy.corp:3128", source="HTTPS_PROXY")
    assert "s3cr3t" not in str(caught.value)


# --- hostile servers (issue 12): every cap, every refusal, on the wire -----------------------------
#
# A response that would get the same answer again (past a cap, an unsupported coding) fails at
# once as bad_response and is not retried; bytes that are not HTTP are a network error (retried).


def answer(response: bytes, *, close: bool = False) -> Handler:
    """A handler that answers the first request with exact bytes (and then hangs up, or waits)."""

    async def handler(conv: Conversation) -> None:
        await conv.read_request()
        with contextlib.suppress(ConnectionError):
            await conv.send(response)
        if close:
            conv.writer.close()

    return handler


def endless(prefix: bytes, filler: bytes) -> Handler:
    """A handler that answers with `prefix`, then `filler` over and over until the client hangs up."""

    async def handler(conv: Conversation) -> None:
        await conv.read_request()
        with contextlib.suppress(ConnectionError):
            await conv.send(prefix)
            while True:
                await conv.send(filler * (65536 // len(filler) + 1))

    return handler


async def failure(handler: Handler, *, max_response_bytes: int = 1 << 20) -> TransportError:
    """The TransportError of one GET answered by `handler`.

    The timeout is short so that a client which waits instead of refusing (today's code for an
    endless head) fails the test as a timeout rather than hanging it.
    """
    async with scripted(handler) as server:
        settings = HttpSettings(
            base_url=f"http://127.0.0.1:{server.port}",
            token=Secret(TOKEN),
            timeout_s=3.0,
            max_response_bytes=max_response_bytes,
        )
        async with RecordingsClient(settings) as client:
            with pytest.raises(TransportError) as caught:
                await client.get("r")
    return caught.value


def chunked(body: bytes, trailer: bytes = b"") -> bytes:
    """A chunked message body of `body` in 7-byte chunks, then last-chunk, trailer fields and CRLF."""
    pieces = [b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)]
    return b"".join(pieces) + b"0\r\n" + trailer + b"\r\n"


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
FIELDS_256 = b"".join(b"X-F%d: v\r\n" % i for i in range(255))  # + Content-Length = 256 fields


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [
        pytest.param(
            answer(OK_HEAD + b"X-Dup: abcdefgh\r\n" * 120_000 + b"Content-Length: 2\r\n\r\n{}"),
            "response head is longer than 64 KiB",
            id="120000-copies-of-one-field",
        ),
        pytest.param(endless(OK_HEAD, b"X-More: yes\r\n"), "longer than 64 KiB", id="a-head-without-end"),
        pytest.param(endless(b"HTTP/1.1 200 ", b"O"), "longer than 64 KiB", id="a-status-line-without-end"),
        pytest.param(
            answer(OK_HEAD + b"X-F: v\r\n" + FIELDS_256 + b"Content-Length: 2\r\n\r\n{}"),
            "more than 256 field lines",
            id="257-fields",
        ),
        pytest.param(
            answer(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 17
                + OK_HEAD
                + b"Content-Length: 2\r\n\r\n{}"
            ),
            "more than 16 interim (1xx) responses",
            id="17-interim-responses",
        ),
        pytest.param(
            answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
            "switched protocols",
            id="unrequested-101",
        ),
        pytest.param(
            endless(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n", b"X-Trailer: t\r\n"),
            "trailer section is longer than 64 KiB",
            id="a-trailer-section-without-end",
        ),
        pytest.param(
            answer(
                OK_HEAD
                + b"Transfer-Encoding: chunked\r\n\r\n"
                + chunked(b"{}", b"".join(b"X-T%d: v\r\n" % i for i in range(257)))
            ),
            "trailer section has more than 256 field lines",
            id="257-trailer-fields",
        ),
        pytest.param(
            answer(OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\n" + gzip.compress(b"{}"), close=True),
            "unsupported Transfer-Encoding 'gzip'",
            id="transfer-encoding-gzip",
        ),
        pytest.param(
            answer(OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(gzip.compress(b"{}"))),
            "unsupported Transfer-Encoding 'gzip, chunked'",
            id="transfer-encoding-gzip-chunked",
        ),
        pytest.param(
            answer(
                OK_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"{}")
            ),
            "unsupported Transfer-Encoding 'chunked, chunked'",
            id="chunked-twice",
        ),
        pytest.param(
            answer(OK_HEAD + b"Content-Encoding: br\r\nContent-Length: 6\r\n\r\n\x0b\x02\x80{}\x03"),
            "unsupported Content-Encoding 'br': only gzip, deflate are decoded",
            id="content-encoding-br",
        ),
        pytest.param(
            answer(OK_HEAD + b"Content-Encoding: zstd\r\nContent-Length: 2\r\n\r\n{}"),
            "unsupported Content-Encoding 'zstd'",
            id="content-encoding-zstd",
        ),
        pytest.param(
            answer(OK_HEAD + b"Content-Encoding: gzip, x-unknown\r\nContent-Length: 2\r\n\r\n{}"),
            "unsupported Content-Encoding 'gzip, x-unknown'",
            id="content-encoding-unknown",
        ),
        pytest.param(
            answer(OK_HEAD + b"Content-Encoding: " + b"gzip, " * 5 + b"gzip\r\nContent-Length: 2\r\n\r\n{}"),
            "6 stacked content codings",
            id="six-content-codings",
        ),
        pytest.param(
            answer(
                OK_HEAD
                + b"Content-Encoding: gzip\r\nContent-Length: 20500\r\n\r\n"
                + gzip.compress(b"") * 1025
            ),
            "more than 1024 members",
            id="1025-gzip-members",
        ),
    ],
)
async def test_a_response_past_a_cap_or_in_an_unsupported_form_fails_at_once_for_good(
    handler: Handler, fragment: str
) -> None:
    """Refused at once as bad_response (not retried, not left to the timeout), naming the cause."""
    error = await failure(handler)
    assert fragment in str(error)
    assert error.reason == Reason.BAD_RESPONSE
    assert not error.retryable


async def test_a_declared_length_over_the_limit_fails_before_the_body_arrives() -> None:
    """Content-Length over max_response_bytes fails on the head alone; the server sends no body."""
    error = await failure(answer(OK_HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n"))
    assert "larger than 1,048,576 bytes" in str(error)
    assert (error.reason, error.retryable) == (Reason.BAD_RESPONSE, False)


async def test_a_chunk_over_the_limit_fails_before_its_data_arrives() -> None:
    error = await failure(answer(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nfffffff\r\n"))
    assert "larger than 1,048,576 bytes" in str(error)
    assert (error.reason, error.retryable) == (Reason.BAD_RESPONSE, False)


def head_of(size: int) -> bytes:
    """A 200 head of exactly `size` bytes (its blank line included) with 256 fields."""
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(254))
    tail = b"Content-Length: 2\r\n\r\n"
    padding = size - len(OK_HEAD + fields + b"X-Pad: \r\n" + tail)
    head = OK_HEAD + fields + b"X-Pad: " + b"p" * padding + b"\r\n" + tail
    assert (len(head), head.count(b"\r\n") - 2) == (size, 256)
    return head


async def test_a_head_of_exactly_the_caps_is_read() -> None:
    """64 KiB of head with 256 fields, after 16 interim responses: every cap is inclusive."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" * 16
    async with (
        scripted(answer(interim + head_of(65536) + b"{}")) as server,
        client_for(f"http://127.0.0.1:{server.port}") as client,
    ):
        response = await client.get("r")
    assert (response.status, response.body) == (200, b"{}")
    assert len(response.headers) == 256


async def test_a_head_one_byte_over_the_cap_is_refused() -> None:
    error = await failure(answer(head_of(65537) + b"{}"))
    assert "response head is longer than 64 KiB" in str(error)
    assert (error.reason, error.retryable) == (Reason.BAD_RESPONSE, False)


async def test_repeated_fields_are_kept_apart_in_order() -> None:
    """Repeated fields are a list (read joined with ", "), not a string grown by concatenation."""
    response_bytes = OK_HEAD + b"X-A: 1\r\nX-B: b\r\nx-a: 2\r\nX-A:3 \r\nContent-Length: 2\r\n\r\n{}"
    async with (
        scripted(answer(response_bytes)) as server,
        client_for(f"http://127.0.0.1:{server.port}") as client,
    ):
        headers = (await client.get("r")).headers
    assert headers.get_all("X-A") == ["1", "2", "3"]
    assert headers["x-a"] == "1, 2, 3"
    assert headers["x-b"] == "b"


async def raw_response(port: int, *, max_body_bytes: int = 1 << 20) -> Response:
    """One GET on a bare http1.Connection, to see what the client does not pass on (trailers)."""
    loop = asyncio.get_running_loop()
    transport, connection = await loop.create_connection(
        lambda: Connection(max_body_bytes), "127.0.0.1", port
    )
    try:
        return await connection.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        transport.close()


async def test_trailers_are_kept_apart_from_the_headers() -> None:
    """A trailer `Content-Encoding: gzip` after a plain chunked body does not make it gzip."""
    message = (
        OK_HEAD
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked(b'{"plain":true}', b"Content-Encoding: gzip\r\nX-Digest: abc\r\n")
    )
    async with scripted(answer(message)) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        response = await client.get("r")
        assert response.body == b'{"plain":true}'
        assert "content-encoding" not in response.headers
        raw = await raw_response(server.port)
    assert raw.body == b'{"plain":true}'
    assert "content-encoding" not in raw.headers
    assert raw.trailers is not None
    assert (raw.trailers["content-encoding"], raw.trailers["x-digest"]) == ("gzip", "abc")


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


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (OK_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "conflicting Content-Length"),
        (OK_HEAD + b"Content-Length: 2, 3\r\n\r\n{}", "conflicting Content-Length"),
        (OK_HEAD + b"Content-Length: -2\r\n\r\n{}", "invalid Content-Length '-2'"),
        (OK_HEAD + b"Content-Length: +2\r\n\r\n{}", "invalid Content-Length '+2'"),
        (OK_HEAD + b"Content-Length: \xd9\xa2\r\n\r\n{}", "invalid Content-Length"),
        (
            OK_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n" + chunked(b"{}"),
            "both Transfer-Encoding and Content-Length",
        ),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"{}"), "HTTP/1.0 response with"),
        (OK_HEAD + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}", "line 2 of the response head"),
        (OK_HEAD + b"X-A: a\rb\r\nContent-Length: 2\r\n\r\n{}", "line 2 of the response head"),
        (OK_HEAD + b"X-A: a\x7fb\r\nContent-Length: 2\r\n\r\n{}", "line 2 of the response head"),
        (OK_HEAD + b"Content-Length : 2\r\n\r\n{}", "line 2 of the response head"),
        (OK_HEAD + b"X-(A): a\r\nContent-Length: 2\r\n\r\n{}", "line 2 of the response head"),
        (OK_HEAD + b" X-A: folded onto the status line\r\nContent-Length: 2\r\n\r\n{}", "line 2"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}", "end in LF alone"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n{}", "not an HTTP/1.x status line"),
        (b"HTTP/2 200\r\ncontent-length: 2\r\n\r\n{}", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 600 Nope\r\nContent-Length: 2\r\n\r\n{}", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\n{}", "not an HTTP/1.x status line"),
        (b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "not an HTTP/1.x status line"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "invalid chunk-size line"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n", "longer than its chunk-size"),
        (
            OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: \x00\r\n\r\n",
            "line 1 of the trailer",
        ),
    ],
)
async def test_a_malformed_response_is_a_network_error(message: bytes, fragment: str) -> None:
    """Bytes that are not HTTP/1.1 (RFC 9112, RFC 9110 §5.5) fail at once, as a malformed response."""
    error = await failure(answer(message))
    assert "malformed HTTP response" in str(error)
    assert fragment in str(error)
    assert (error.reason, error.retryable) == (Reason.NETWORK, True)


async def test_a_chunk_size_line_without_end_is_malformed() -> None:
    error = await failure(endless(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;ext=", b"x"))
    assert "chunk-size line longer than 4096 bytes" in str(error)
    assert error.reason == Reason.NETWORK


async def test_an_obs_fold_continues_a_value_and_is_not_a_field() -> None:
    """RFC 9112 §5.2: a user agent replaces obs-fold by SP; the folded line is no field of its own."""
    message = OK_HEAD + b"X-A: a\r\n Content-Encoding: gzip\r\n\tend\r\nContent-Length: 2\r\n\r\n{}"
    async with scripted(answer(message)) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        response = await client.get("r")
    assert response.body == b"{}"
    assert response.headers["x-a"] == "a Content-Encoding: gzip end"
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize(
    "message",
    [
        OK_HEAD + b"Content-Length: 2, 2\r\n\r\n{}",
        OK_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        OK_HEAD + b"Content-Length:2\r\n\r\n{}",
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}",
        OK_HEAD + b"X-Empty:\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\n{}",
        OK_HEAD + b"Transfer-Encoding: Chunked\r\n\r\n" + b"2;name=value\r\n{}\r\n0\r\n\r\n",
    ],
)
async def test_lenient_forms_the_rfc_allows_are_read(message: bytes) -> None:
    """Identical Content-Length values (RFC 9110 §8.6), no reason phrase, empty and Latin-1 values,
    chunk extensions: each is valid HTTP/1.1 and read, on a connection kept for the next request."""

    async def twice(conv: Conversation) -> None:
        for _ in range(2):
            await conv.read_request()
            await conv.send(message)
        await conv.read_request()

    async with scripted(twice) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        for _ in range(2):
            assert (await client.get("r")).body == b"{}"
        assert server.connections == 1


async def test_no_body_for_204_whatever_its_content_length() -> None:
    """RFC 9112 §6.3 item 1: a 204 ends at its head; the connection serves the next request."""

    async def no_content(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        await keep_answering(conv)

    async with scripted(no_content) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        first = await client.get("r")
        assert (first.status, first.body) == (204, b"")
        assert (await client.get("r")).body == b'{"ok":1}'
        assert server.connections == 1


async def test_bytes_past_the_declared_length_never_reach_the_next_request() -> None:
    """A body longer than its Content-Length: the response ends where it says, and the
    connection, whose framing is now lost, is not used again (no response splitting)."""

    async def longer(conv: Conversation) -> None:
        if conv.server.connections > 1:
            await keep_answering(conv)
            return
        await conv.read_request()
        await conv.send(
            OK_HEAD + b'Content-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"evil":1}'
        )
        await keep_answering(conv)

    async with scripted(longer) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == b"{}"
        assert (await client.get("r")).body == b'{"ok":1}'
        assert server.connections == 2


@pytest.mark.parametrize(
    "first_line", [b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n"]
)
async def test_a_connection_the_response_closes_is_not_reused(first_line: bytes) -> None:
    """RFC 9112 §9.3: HTTP/1.0, or a `close` option in Connection, ends the connection."""

    async def once(conv: Conversation) -> None:
        await conv.read_request()
        await conv.send(first_line + b"Content-Length: 2\r\n\r\n{}")
        await keep_answering(conv)

    async with scripted(once) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        for _ in range(2):
            assert (await client.get("r")).body in (b"{}", b'{"ok":1}')
        assert server.connections == 2


async def test_a_response_in_pieces_split_at_every_awkward_place_is_read() -> None:
    """Reads that end inside "HTTP/", a CRLF, the blank line, a chunk-size line or a trailer."""
    message = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        + OK_HEAD
        + b"Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        + chunked(b'{"pieces":"' + b"p" * 20 + b'"}', b"X-T: t\r\n")
    )
    size_line = message.index(b'7\r\n{"piece')  # the first chunk-size line
    data_end = size_line + 3 + 7  # where the first chunk's data ends and its CRLF begins
    cuts = [
        2,  # inside "HTTP/"
        message.index(b"\r\n\r\n") + 3,  # between the CR and LF of the interim's blank line
        message.index(OK_HEAD) + 3,
        message.index(b"X-A") + 3,  # inside a field line
        size_line - 1,  # between the blank line's CR and LF
        size_line + 1,  # inside a chunk-size line, before its CRLF
        size_line + 2,  # between that line's CR and LF
        size_line + 5,  # inside chunk data
        data_end,  # the chunk's data complete, its CRLF not
        data_end + 1,  # between that CR and LF
        message.index(b"X-T") + 2,  # inside the trailer section
        len(message) - 1,  # before the last LF
    ]
    assert cuts == sorted(set(cuts))

    async def in_pieces(conv: Conversation) -> None:
        await conv.read_request()
        for start, end in zip([0, *cuts], [*cuts, len(message)], strict=True):
            await conv.send(message[start:end])
            await asyncio.sleep(0.01)  # each piece its own read
        await keep_answering(conv)

    async with scripted(in_pieces) as server, client_for(f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("r")).body == b'{"pieces":"' + b"p" * 20 + b'"}'
        assert (await client.get("r")).body == b'{"ok":1}'
        assert server.connections == 1


def test_accept_encoding_offers_exactly_what_is_decoded() -> None:
    """The codings offered are those `_decoded` undoes (each tested above), nothing more."""
    assert DECODED_CODINGS == ("gzip", "deflate")


@pytest.mark.parametrize(
    ("head", "framing"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5", (State.BODY, 5, True)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", (State.CHUNK_SIZE, 0, True)),
        (b"HTTP/1.1 200 OK", (State.UNTIL_CLOSE, 0, False)),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5", (State.IDLE, 0, True)),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked", (State.IDLE, 0, True)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5", (State.BODY, 5, False)),
        (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 5", (State.BODY, 5, False)),
        (b"HTTP/1.1 200 OK\r\nConnection: closed-captions\r\nContent-Length: 5", (State.BODY, 5, True)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 00007", (State.BODY, 7, True)),
    ],
)
def test_body_framing_follows_rfc_9112_section_6_3(head: bytes, framing: Framing) -> None:
    """The body's end, in RFC 9112 §6.3's order, and persistence by §9.3's `close` token only."""
    assert body_framing(*parse_head(head)) == framing


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
