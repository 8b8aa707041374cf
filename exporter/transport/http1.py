"""One HTTP/1.1 keep-alive connection: send a GET, read one whole response.

Why not aiohttp's ClientSession: per request it merges headers, builds URL and
request objects, consults a cookie jar and tracing hooks, and arms several
timers: over the benchmark's bodies on loopback that costs more CPU than
everything else the exporter does for a ~10 KB record.
The exporter needs one origin, one method, no cookies, no redirects and one
request at a time per connection, so this module keeps only that: a request
head prepared once, and a response reader for exactly that case.

The reader is this module's own, and it alone decides framing (RFC 9112 §6.3,
`body_framing`): a general parser such as llhttp cannot say when a body ends
with the connection, so its rules would be repeated beside it, and it caps
nothing. It works a head at a time, never a byte at a time: a `find` for the
blank line, one `findall` that validates and splits every field line, and
bodies sliced out of each read; chunks wholly in a read take one loop pass
each. The figures behind this choice: docs/decisions/0005-own-http1-client.md.

Everything a hostile server could inflate is capped, as h11 does:

    the response head (status line and fields)   MAX_HEAD_BYTES, MAX_FIELDS
    the trailer section of a chunked body        MAX_HEAD_BYTES, MAX_FIELDS
    interim (1xx) responses before the final one  MAX_INTERIM_RESPONSES
    a chunk-size line (with its extensions)       MAX_CHUNK_LINE_BYTES
    the body                                      max_body_bytes (the caller's)

Bytes that are not HTTP/1.1 raise `ProtocolError`; a well-formed response past
a cap or in a form this client does not read raises `Refused` (or `TooLarge`
for the body): the same request would get the same answer again.

The connection's whole state is one `State` value.

What this module does not decide: timeouts, retries and pooling are the
caller's (`client.py`); what a status means is `retry.py`'s.

Why one module of this size: the connection and its response reader share one `State`
value, and framing is decided in one function (`body_framing`); apart, the rules for when
a body ends would be spread over two files, as a separate parser forces
(docs/decisions/0005-own-http1-client.md).
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Iterator, Mapping
from typing import TypeVar, cast, overload

_T = TypeVar("_T")

#: The response head: status line and fields, line ends included. h11's default
#: is 16 KiB; real API heads are well under 2 KiB.
MAX_HEAD_BYTES = 64 * 1024
#: Field lines in one head (or trailer section); obs-fold continuation lines count.
MAX_FIELDS = 256
#: 1xx responses before the final one (RFC 9110 §15.2 allows several, e.g. 103 Early Hints).
MAX_INTERIM_RESPONSES = 16
#: A chunk-size line: up to 16 hex digits, with chunk extensions (which are ignored).
MAX_CHUNK_LINE_BYTES = 4096

# Every line ends in CRLF (RFC 9112 §2.1). §2.2 lets a recipient also accept a bare LF;
# like llhttp, this one does not, so a lone CR or LF anywhere makes the head invalid.
#
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]; h11 also
# accepts it without the second SP. HTTP/1.0 and 1.1 only; RFC 9110 §15: codes 100-599.
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?(?=\r\n|\Z)")
# RFC 9112 §5.1: field-line = field-name ":" OWS field-value OWS, no whitespace before the
# colon; RFC 9110 §5.1 field-name = token; §5.5 field-value: VCHAR, obs-text, SP and HTAB,
# so no NUL, CR, LF or other control character (§5.5 lets a recipient reject those, and h11
# does). Matched on the head decoded as Latin-1; the value's trailing OWS is stripped after.
_FIELD_LINE = re.compile(r"\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)(?=\r\n|\Z)")
# RFC 9112 §5.2: obs-fold = OWS CRLF RWS, which a user agent MUST replace with SP.
_OBS_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")
# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF; extensions are ignored (§7.1.1).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?\r\n")
_HTTP = b"HTTP/"


class Headers(Mapping[str, str]):
    """Fields looked up case-insensitively.

    A repeated field keeps each value in a list, joined with ", " only when
    read (RFC 9110 §5.3): 120,000 copies of one field cost a list append each,
    not a string copy of everything before.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, list[str]] | None = None) -> None:
        self._fields = fields if fields is not None else {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        values = self._fields.get(key)
        if values is None:
            self._fields[key] = [value]
        else:
            values.append(value)

    def get_all(self, name: str) -> list[str]:
        """Every value of a field, in the order received (empty if absent)."""
        return list(self._fields.get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        values = self._fields[name.lower()]
        return values[0] if len(values) == 1 else ", ".join(values)

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, /, default: str | _T) -> str | _T: ...

    def get(self, name: str, /, default: object = None) -> object:
        # Mapping.get would raise and catch a KeyError for every absent field: the pacer
        # asks each answer for three quota fields that most APIs never send.
        values = self._fields.get(name.lower())
        if values is None:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Response:
    """A complete response: status, headers, the whole body as served (not decoded), trailers.

    `trailers` is None unless a chunked body ended with trailer fields.
    Trailers (after a chunked body) are kept apart: RFC 9110 §6.5.1 forbids
    merging them into the header section unless a field is known to be safe
    there, and none this client reads is.
    """

    __slots__ = ("body", "headers", "status", "trailers")

    def __init__(self, status: int, headers: Headers, body: bytes, trailers: Headers | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers


class ConnectionClosed(Exception):
    """The connection ended before the response was complete.

    `nothing_received` tells a keep-alive connection the server had already
    closed (safe to send the GET again on a new one) from a response cut off.
    """

    def __init__(self, message: str, *, nothing_received: bool) -> None:
        super().__init__(message)
        self.nothing_received = nothing_received


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x response (or its framing contradicts itself)."""


class Refused(Exception):
    """A response this client will not read: past a cap, or in a form it does not decode.

    Unlike a `ProtocolError` this is not noise on the wire: asking again would
    get the same answer, so the caller does not retry it.
    """


class TooLarge(Refused):
    """The response body is larger than the connection accepts (`max_body_bytes`)."""


class State(enum.Enum):
    """Where a connection is; the one value its behaviour depends on."""

    IDLE = "idle"  # no request outstanding: a byte from the server now is a violation
    HEAD = "head"  # a request is out: reading a status line and fields (interim or final)
    BODY = "body"  # a Content-Length body, `_remaining` bytes to go
    CHUNK_SIZE = "chunk-size"  # chunked: before a chunk-size line
    CHUNK_DATA = "chunk-data"  # chunked: inside a chunk, `_remaining` bytes to go
    CHUNK_END = "chunk-end"  # chunked: the CRLF after a chunk's data
    TRAILERS = "trailers"  # chunked: after the last chunk, the trailer section
    UNTIL_CLOSE = "until-close"  # a body delimited by the end of the connection
    CLOSED = "closed"  # closed, or must be: no further request goes on it


# Plain tuples, not NamedTuples, on the per-response path: constructing a NamedTuple
# runs Python code, and this path is most of what the client costs beyond the kernel.
#: parse_head's result: the HTTP minor version (0 or 1), the status code, the fields.
Head = tuple[int, int, "Headers"]
#: body_framing's result: the state the body is read in (IDLE: no body), the
#: Content-Length (BODY only), whether the connection persists after the response.
Framing = tuple[State, int, bool]


def parse_head(raw: bytes | bytearray) -> Head:
    """A response head (without its final CRLF CRLF), validated; ProtocolError or Refused."""
    text = raw.decode("latin-1")
    status = _STATUS_LINE.match(text)
    if status is None:
        raise ProtocolError(f"not an HTTP/1.x status line: {text.partition(chr(13))[0][:60]!r}")
    return int(status[1]), int(status[2]), _fields(text[status.end() :], "response head")


def parse_trailers(raw: bytes | bytearray) -> Headers:
    """A trailer section (RFC 9112 §7.1.2) without its final CRLF CRLF; ProtocolError or Refused."""
    return _fields("\r\n" + raw.decode("latin-1"), "trailer section")


def _fields(text: str, section: str) -> Headers:
    """Headers from field lines, each after its CRLF; ProtocolError for any line that is not one.

    One findall does the work: every match starts at a CRLF and runs to the
    next, so as many matches as CRLFs means every line is a valid field line.
    """
    count = text.count("\r\n")
    if count > MAX_FIELDS:
        raise Refused(f"the {section} has more than {MAX_FIELDS} field lines")
    pairs = _FIELD_LINE.findall(text)
    if len(pairs) != count:
        if "\r\n " not in text and "\r\n\t" not in text:
            raise ProtocolError(_first_bad_line(text, section))
        unfolded = _OBS_FOLD.sub(" ", text)
        pairs = _FIELD_LINE.findall(unfolded)
        if not unfolded.startswith("\r\n") or len(pairs) != unfolded.count("\r\n"):
            raise ProtocolError(_first_bad_line(text, section))
    if " \r\n" in text or "\t\r\n" in text or text.endswith((" ", "\t")):
        pairs = [(name, value.rstrip(" \t")) for name, value in pairs]  # trailing OWS (rare)
    fields = {name.lower(): [value] for name, value in pairs}
    if len(fields) < len(pairs):  # a repeated field: its values go in one list, in order
        fields = {}
        for name, value in pairs:
            fields.setdefault(name.lower(), []).append(value)
    return Headers(fields)


def _first_bad_line(text: str, section: str) -> str:
    """Which line of a section that failed validation is wrong, for the message (not the hot path)."""
    first = 2 if section == "response head" else 1  # the status line is line 1 of a head
    for number, line in enumerate(text.split("\r\n")[1:], start=first):
        if _FIELD_LINE.fullmatch("\r\n" + line) is None:
            if line[:1] in (" ", "\t") and number > first:
                continue  # obs-fold, fine after a field line
            return f"line {number} of the {section} is not a valid field line: {line[:60]!r}"
    return f"the {section} has a CR or LF alone"


def body_framing(http_minor: int, status: int, headers: Headers) -> Framing:
    """How the body of a final (non-1xx) response is delimited: RFC 9112 §6.3, in its order.

    ProtocolError when the framing fields contradict each other, Refused for a
    transfer coding this client does not decode.
    """
    fields = headers._fields
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; an HTTP/1.0 connection is not reused.
    connection = fields.get("connection")
    keep_alive = http_minor == 1 and (connection is None or not _has_token(connection, "close"))
    # §6.3 item 1: no body for 204 and 304, whatever the fields say.
    if status == 204 or status == 304:
        return State.IDLE, 0, keep_alive
    transfer_encoding = fields.get("transfer-encoding")
    if transfer_encoding is not None:
        if http_minor == 0:
            # §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            raise ProtocolError("an HTTP/1.0 response with Transfer-Encoding")
        if "content-length" in fields:
            # §6.3 item 3: both fields "ought to be handled as an error" (smuggling, splitting).
            raise ProtocolError("a response with both Transfer-Encoding and Content-Length")
        if _tokens(transfer_encoding) != ["chunked"]:
            # §6.3 item 4 would read any other coding until close; this client decodes no
            # transfer coding but chunked, and sends no TE field asking for one (RFC 9110 §10.1.4).
            raise Refused(
                f"unsupported Transfer-Encoding {', '.join(transfer_encoding)[:80]!r}: only chunked "
                "is read, and the server was not asked for anything else"
            )
        return State.CHUNK_SIZE, 0, keep_alive
    lengths = fields.get("content-length")
    if lengths is not None:
        # §6.3 item 5 and RFC 9110 §8.6: a list of identical values stands for one; any
        # other invalid Content-Length makes the framing unrecoverable.
        value = lengths[0]
        if len(lengths) > 1 or "," in value:
            values = {part.strip() for field in lengths for part in field.split(",")}
            if len(values) != 1:
                raise ProtocolError(f"conflicting Content-Length values {sorted(values)[:4]!r}")
            (value,) = values
        if not (value.isascii() and value.isdigit()):
            raise ProtocolError(f"invalid Content-Length {value[:40]!r}")
        # Past 18 digits it is too large anyway (and int() of thousands of digits is slow).
        return State.BODY, int(value) if len(value) <= 18 else 10**18, keep_alive
    # §6.3 item 8: read until the server closes; the connection cannot be reused.
    return State.UNTIL_CLOSE, 0, False


def _has_token(values: list[str], token: str) -> bool:
    """Whether a list-valued field holds `token` (lower-case); the substring test keeps it cheap."""
    return any(token in value.lower() and token in _tokens([value]) for value in values)


def _tokens(values: list[str]) -> list[str]:
    """The comma-separated tokens of a list-valued field (RFC 9110 §5.6.1), lower-cased."""
    return [token for value in values for token in (p.strip().lower() for p in value.split(",")) if token]


class Connection(asyncio.Protocol):
    """An asyncio protocol for one connection; `request()` one GET at a time.

    `data_received` runs the state machine over whatever the read brought,
    a step per state, and keeps an incomplete head or chunk line for the
    next read.
    """

    __slots__ = (
        "_body_bytes",
        "_buffer",
        "_chunks",
        "_headers",
        "_interim",
        "_keep_alive",
        "_max_body_bytes",
        "_remaining",
        "_scanned",
        "_state",
        "_status",
        "_transport",
        "_waiter",
    )

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body_bytes = max_body_bytes
        self._state = State.IDLE
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        # Bytes read but not yet consumed: an incomplete head, chunk line or trailer section.
        self._buffer = bytearray()
        # How much of `_buffer` was searched for the end of a head without finding it.
        self._scanned = 0
        self._status = 0
        self._headers = Headers()
        self._keep_alive = False
        self._chunks: list[bytes] = []
        self._body_bytes = 0
        self._remaining = 0
        self._interim = 0

    def __repr__(self) -> str:
        return f"<Connection {self._state.value} body={self._body_bytes} buffered={len(self._buffer)}>"

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: other loops' transports (uvloop's) are not subclasses.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state is State.IDLE or state is State.CLOSED:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.abort()
            return
        buffer = self._buffer
        view: bytes | bytearray = data
        if buffer:
            buffer += data
            view = buffer
        try:
            used = self._consume(view)
        except (ProtocolError, Refused) as exc:
            self._fail(exc)
            return
        if self._state is State.IDLE or self._state is State.CLOSED:
            if used < len(view):
                self.abort()  # more than the response: the next one would start mid-stream
            buffer.clear()
        elif view is buffer:
            del buffer[:used]
        elif used < len(view):
            buffer += memoryview(data)[used:]

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost() settles any pending request

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._state = State.CLOSED
        self._transport = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if state is State.UNTIL_CLOSE and exc is None:
            self._complete(None)  # RFC 9112 §6.3 item 8: the close ends the body
        elif state is State.HEAD and not self._buffer and not self._interim:
            waiter.set_exception(
                ConnectionClosed("the server closed the connection before answering", nothing_received=True)
            )
        elif isinstance(exc, ConnectionResetError):
            waiter.set_exception(
                ConnectionClosed("the connection was reset mid-response", nothing_received=False)
            )
        else:
            waiter.set_exception(ConnectionClosed("the response was cut off", nothing_received=False))

    # -- for the client -------------------------------------------------------------------

    async def request(self, head: bytes) -> Response:
        """Send a prepared request head and wait for the whole response."""
        transport = self._transport
        if transport is None or self._state is not State.IDLE:
            raise ConnectionClosed("the connection is closed", nothing_received=True)
        self._state = State.HEAD
        self._scanned = 0
        self._interim = 0
        self._chunks = []
        self._body_bytes = 0
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        transport.write(head)
        try:
            return await waiter
        finally:
            self._waiter = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        """Whether no further request can go on this connection."""
        return self._state is State.CLOSED

    @property
    def reusable(self) -> bool:
        """Whether the last response left the connection ready for another request."""
        return self._state is State.IDLE and self._transport is not None

    def abort(self) -> None:
        """Drop the connection at once (a timeout, or a response we will not read to the end)."""
        self._state = State.CLOSED
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._state = State.CLOSED
        if self._transport is not None:
            self._transport.close()

    # -- the state machine ----------------------------------------------------------------

    def _consume(self, data: bytes | bytearray) -> int:
        """Advance over `data` until the response is complete or more bytes are needed.

        Returns how many bytes were used. Each step takes a whole head, chunk
        line or run of body bytes, never a byte at a time.
        """
        position = 0
        end = len(data)
        while True:
            state = self._state
            if state is State.BODY or state is State.CHUNK_DATA:
                take = min(self._remaining, end - position)
                if take == end:
                    self._chunks.append(bytes(data))  # a whole read of body (a copy only if buffered)
                elif take:
                    self._chunks.append(bytes(data[position : position + take]))
                position += take
                self._remaining -= take
                self._body_bytes += take
                if self._remaining:
                    return position
                if state is State.BODY:
                    self._complete(None)
                    return position
                self._state = State.CHUNK_END
            elif state is State.HEAD:
                after = self._read_head(data, position)
                if after == position:
                    return position
                position = after
            elif state is State.CHUNK_SIZE:
                position = self._read_chunks(data, position)
                if self._state is State.CHUNK_SIZE:
                    return position  # a chunk-size line continues in the next read
            elif state is State.CHUNK_END:
                # RFC 9112 §7.1: chunk-data CRLF.
                if data.startswith(b"\r\n", position):
                    position += 2
                elif end - position < 2 and data.startswith(b"\r"[: end - position], position):
                    return position
                else:
                    raise ProtocolError("a chunk is longer than its chunk-size line says")
                self._state = State.CHUNK_SIZE
            elif state is State.TRAILERS:
                return self._read_trailers(data, position)
            elif state is State.UNTIL_CLOSE:
                if end > position:
                    self._chunks.append(bytes(data[position:]))
                    self._body_bytes += end - position
                    if self._body_bytes > self._max_body_bytes:
                        # Per read: an endless body ends here instead of in the out-of-memory killer.
                        raise TooLarge(f"the response body is larger than {self._max_body_bytes:,} bytes")
                return end
            else:  # IDLE or CLOSED: the response is complete
                return position

    def _section_end(self, data: bytes | bytearray, position: int, what: str) -> int:
        """Where the head or trailer section starting at `position` ends (its CRLF CRLF), or -1.

        The search resumes where the last read's stopped, so a head trickled
        in a byte at a time costs linear time, and stops at MAX_HEAD_BYTES, so
        an endless one costs nothing more.
        """
        start = position + self._scanned - 3 if self._scanned > 3 else position
        text_end = data.find(b"\r\n\r\n", start, position + MAX_HEAD_BYTES)
        if text_end < 0:
            if len(data) - position >= MAX_HEAD_BYTES:
                raise Refused(f"the {what} is longer than {MAX_HEAD_BYTES // 1024} KiB")
            if data.find(b"\n\n", start) >= 0:
                # A blank line in bare LFs would never be followed by the CRLF CRLF awaited:
                # fail now rather than at the timeout.
                raise ProtocolError(f"the {what}'s lines end in LF alone, not CRLF (RFC 9112 §2.1)")
            self._scanned = len(data) - position
            return -1
        self._scanned = 0
        return text_end

    def _read_head(self, data: bytes | bytearray, position: int) -> int:
        """Reads a head if it is all there: where the next step starts (`position` if it is not)."""
        if not data.startswith(_HTTP, position) and not _HTTP.startswith(data[position : position + 5]):
            # Anything but "HTTP/" fails at once, not after MAX_HEAD_BYTES of it.
            raise ProtocolError(f"not an HTTP/1.x status line: {bytes(data[position : position + 60])!r}")
        text_end = self._section_end(data, position, "response head")
        if text_end < 0:
            return position
        http_minor, status, headers = parse_head(data[position:text_end])
        if status < 200:
            if status == 101:
                # RFC 9110 §15.2.2: a server must not switch protocols unless asked to (Upgrade).
                raise Refused("the server switched protocols (101) though none was asked for")
            # An interim response (RFC 9110 §15.2, e.g. 103 Early Hints): the final one follows.
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise Refused(f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses to one request")
            return text_end + 4
        state, length, self._keep_alive = body_framing(http_minor, status, headers)
        self._status = status
        self._headers = headers
        self._state = state
        if state is State.BODY:
            if length > self._max_body_bytes:
                raise TooLarge(
                    f"the response body is larger than {self._max_body_bytes:,} bytes "
                    f"(Content-Length: {length:,})"
                )
            self._remaining = length
            if not length:
                self._complete(None)
        elif state is State.IDLE:
            self._complete(None)
        return text_end + 4

    def _read_chunks(self, data: bytes | bytearray, position: int) -> int:
        """Reads chunk-size lines and the chunks wholly in `data`, a loop pass per chunk; where it stopped.

        Stops in CHUNK_DATA inside a chunk that goes on in the next read, in
        TRAILERS after the last chunk, or in CHUNK_SIZE before a size line that does.
        """
        end = len(data)
        budget = self._max_body_bytes - self._body_bytes
        chunks = self._chunks
        while True:
            match = _CHUNK_LINE.match(data, position, position + MAX_CHUNK_LINE_BYTES)
            if match is None:
                line_end = data.find(b"\r\n", position, position + MAX_CHUNK_LINE_BYTES)
                if line_end >= 0:
                    raise ProtocolError(f"invalid chunk-size line {bytes(data[position:line_end])[:60]!r}")
                if end - position >= MAX_CHUNK_LINE_BYTES:
                    raise ProtocolError(f"a chunk-size line longer than {MAX_CHUNK_LINE_BYTES} bytes")
                break
            size = int(match[1], 16)
            position = match.end()
            if size == 0:
                self._state = State.TRAILERS  # RFC 9112 §7.1: last-chunk, then the trailer section
                break
            if size > budget:
                raise TooLarge(f"the response body is larger than {self._max_body_bytes:,} bytes")
            stop = position + size
            if stop + 2 > end:  # the chunk, or the CRLF after it, goes on in the next read
                self._remaining = size
                self._state = State.CHUNK_DATA
                break
            if not data.startswith(b"\r\n", stop):  # RFC 9112 §7.1: chunk-data CRLF
                raise ProtocolError("a chunk is longer than its chunk-size line says")
            chunks.append(bytes(data[position:stop]))
            budget -= size
            position = stop + 2
        self._body_bytes = self._max_body_bytes - budget
        return position

    def _read_trailers(self, data: bytes | bytearray, position: int) -> int:
        """Reads the trailer section if it is all there, completing the response; where it ended."""
        if data.startswith(b"\r\n", position):
            self._complete(None)  # no trailer fields: the section is one empty line
            return position + 2
        if len(data) - position < 2:
            return position
        text_end = self._section_end(data, position, "trailer section")
        if text_end < 0:
            return position
        self._complete(parse_trailers(data[position:text_end]))
        return text_end + 4

    def _complete(self, trailers: Headers | None) -> None:
        waiter = self._waiter
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._state = State.IDLE if self._keep_alive and self._state is not State.CLOSED else State.CLOSED
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, body, trailers))

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
