"""One HTTP/1.1 keep-alive connection: send a GET, read one whole response.

Why not aiohttp's ClientSession: per request it merges headers, builds URL and
request objects, consults a cookie jar and tracing hooks, and arms several
timers. Over the benchmark's bodies on loopback a minimal aiohttp loop took
118 µs of CPU a request, this module 43 µs (`scripts/bench.py`, contenders
`floor` and `client`): the difference is more than everything else the
exporter does for a ~10 KB record.
The exporter needs one origin, one method, no cookies, no redirects and one
request at a time per connection, so this module keeps only that: a request
head prepared once, and llhttp (the parser inside Node.js and aiohttp, through
`httptools`) for the response, which gets framing, chunked encoding and
keep-alive right.

What this module does not decide: timeouts, retries and pooling are the
caller's (`client.py`); what a status means is `retry.py`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import cast

import httptools


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively; repeated fields are joined with ", "."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str] | None = None) -> None:
        self._fields = fields if fields is not None else {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        previous = self._fields.get(key)
        self._fields[key] = value if previous is None else f"{previous}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Response:
    """A complete response: status, headers and the whole body as served (not decoded)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class ConnectionClosed(Exception):
    """The connection ended before the response was complete.

    `nothing_received` tells a keep-alive connection the server had already
    closed (safe to send the GET again on a new one) from a response cut off.
    """

    def __init__(self, message: str, *, nothing_received: bool) -> None:
        super().__init__(message)
        self.nothing_received = nothing_received


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x response."""


class TooLarge(Exception):
    """The response body is larger than the connection accepts (`max_body_bytes`)."""


# Statuses whose responses never have a body, whatever their headers say (RFC 9112 §6.3).
_NO_BODY = frozenset({204, 304})


class Connection(asyncio.Protocol):
    """An asyncio protocol for one connection; `request()` one GET at a time.

    All state lives in plain attributes reset per request: llhttp calls back
    into this object for every header and body chunk, so those callbacks stay
    as short as possible.
    """

    def __init__(self, max_body_bytes: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._max_body_bytes = max_body_bytes
        self._body_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._chunks: list[bytes] = []
        self._headers = Headers()
        self._status = 0
        self._received = False
        self._headers_done = False
        self._until_eof = False
        self._keep_alive = False
        self._answered = False
        self.closed = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: other loops' transports (uvloop's) are not subclasses.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(str(exc) or type(exc).__name__))
        if self._body_bytes > self._max_body_bytes:
            # Checked per read, not per chunk: a body is never kept past one read beyond the
            # limit, and an endless body ends here instead of in the out-of-memory killer.
            self._fail(TooLarge(f"the response body is larger than {self._max_body_bytes:,} bytes"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost() settles any pending request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and self._until_eof and exc is None:
            self._complete()  # a body delimited by the end of the connection (RFC 9112 §6.3 item 8)
        elif not self._received:
            waiter.set_exception(
                ConnectionClosed("the server closed the connection before answering", nothing_received=True)
            )
        elif isinstance(exc, ConnectionResetError):
            waiter.set_exception(
                ConnectionClosed("the connection was reset mid-response", nothing_received=False)
            )
        else:
            waiter.set_exception(ConnectionClosed("the response was cut off", nothing_received=False))

    # -- llhttp callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answered:
            self.abort()  # a second response to one request: framing is lost, so is the connection

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._status = self._parser.get_status_code()
        fields = self._headers
        self._until_eof = (
            status >= 200
            and status not in _NO_BODY
            and "content-length" not in fields
            and "transfer-encoding" not in fields
        )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            self._start_message()  # an interim response (e.g. 103 Early Hints): the real one follows
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- for the client -------------------------------------------------------------------

    async def request(self, head: bytes) -> Response:
        """Send a prepared request head and wait for the whole response."""
        transport = self._transport
        if transport is None or self.closed:
            raise ConnectionClosed("the connection is closed", nothing_received=True)
        self._start_message()
        self._keep_alive = False
        self._answered = False
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        transport.write(head)
        try:
            return await waiter
        finally:
            self._waiter = None

    @property
    def reusable(self) -> bool:
        """Whether the last response left the connection ready for another request."""
        return self._keep_alive and not self.closed

    def abort(self) -> None:
        """Drop the connection at once (a timeout, or a response we will not read to the end)."""
        self._keep_alive = False
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._keep_alive = False
        if self._transport is not None:
            self._transport.close()

    # -- internals ------------------------------------------------------------------------

    def _start_message(self) -> None:
        self._chunks = []
        self._body_bytes = 0
        self._headers = Headers()
        self._status = 0
        self._received = False
        self._headers_done = False
        self._until_eof = False

    def _complete(self) -> None:
        if self._body_bytes > self._max_body_bytes:
            return  # data_received() fails the request once feed_data() returns
        waiter = self._waiter
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        headers = self._headers
        self._chunks = []
        self._headers = Headers()
        self._answered = True
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, headers, body))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()


def head_after_target(fields: Mapping[str, str]) -> bytes:
    """What follows the target in every request: ` HTTP/1.1`, the header lines, a blank line.

    Prepared once, so a request is `b"GET " + target + this`.
    """
    lines = [" HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
