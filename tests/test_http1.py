"""client.RecordingsClient and http1.Connection against a scripted HTTP server on loopback.

The fake API is an aiohttp server and always answers well-formed HTTP; these
tests need the wire itself: chunked and read-until-close bodies, interim
responses, compressed bodies, keep-alive connections the server drops, cut-off
and malformed responses, TLS, and a CONNECT proxy in between. Each scripted server is a real TCP server on
127.0.0.1 whose handler writes exact bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme
from loopback import ConnectProxy, connect_proxy

from exporter.client import RecordingsClient
from exporter.config import HttpSettings, ProxySettings, Secret
from exporter.errors import Reason, TransportError, UsageError
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
        ("br", b"\x0b\x02\x80hi\x03", "unsupported Content-Encoding 'br'"),
    ],
)
async def test_undecodable_bodies_are_network_errors(coding: str, payload: bytes, fragment: str) -> None:
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
