"""A scripted HTTP server on loopback that writes exact bytes, and a client of the exporter pointed at it.

The fake API is an aiohttp server and always answers well-formed HTTP; the client's and http1's
tests need the wire itself. Each `scripted` server is a real TCP server on 127.0.0.1 (TLS when
given a context) whose handler reads request heads and writes exact bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from exporter.config import HttpSettings, Secret
from exporter.errors import TransportError
from exporter.transport.client import RecordingsClient

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
