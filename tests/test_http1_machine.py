"""http1.Connection as a state machine, sans IO: bytes in, events out, no socket and no sleep.

`exchange` hands the machine a request, then the server's bytes in the pieces
given, then (optionally) the end of the connection, and writes down what came
out: the response or the error the request ended with, the state the
connection is left in, and whether it dropped the connection. As h11 is tested,
the same bytes split anywhere must give the same events, and every form
RFC 9112 lets a recipient reject is rejected with the right error class.
`test_http1.py` reads the same machine over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from virtual_loop import run_virtual

from exporter.transport.http1 import (
    MAX_CHUNK_LINE_BYTES,
    MAX_HEAD_BYTES,
    MAX_INTERIM_RESPONSES,
    Connection,
    ConnectionClosed,
    ProtocolError,
    Refused,
    State,
    TooLarge,
)

REQUEST = b"GET /recordings/a HTTP/1.1\r\nHost: api\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\n"

#: What one exchange produced: the response (status, headers, body, trailers) or the error's
#: class name, "pending" when the request still waits; the state left; whether it aborted.
Events = tuple[object, State, bool]


class _Transport:
    """The few transport calls the protocol makes, written down instead of done."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


def exchange(pieces: Sequence[bytes], *, eof: bool = False, max_body_bytes: int = 1 << 20) -> Events:
    """One request on a fresh connection, answered with `pieces`, then the end of the connection if `eof`."""

    async def main() -> Events:
        connection = Connection(max_body_bytes)
        transport = _Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        answer = asyncio.ensure_future(connection.request(REQUEST))
        await asyncio.sleep(0)
        assert transport.written == [REQUEST]
        for piece in pieces:
            if transport.aborted:
                break  # a dropped connection delivers nothing more
            connection.data_received(piece)
        if eof:
            connection.connection_lost(None)
        await asyncio.sleep(0)
        outcome: object = "pending"
        if answer.done():
            error = answer.exception()
            if error is not None:
                outcome = type(error).__name__
            else:
                response = answer.result()
                trailers = None if response.trailers is None else sorted(response.trailers.items())
                outcome = (response.status, sorted(response.headers.items()), response.body, trailers)
        else:
            answer.cancel()
        return outcome, connection.state, transport.aborted

    return run_virtual(main())


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """`data` cut at the given offsets, as reads: never empty (a transport reports no empty read)."""
    points = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(points) if end > start]


# -- responses a server may send: valid ones and ones with a fault ----------------------

_NAMES = st.sampled_from(["X-A", "x-a", "Server", "ETag", "Link", "Retry-After"])
_VALUES = st.text(alphabet=" \tabc:;,=\x80\xff", max_size=8).map(lambda v: v.strip(" \t"))
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=4)
_BODIES = st.binary(max_size=40)


def _head(first_line: bytes, fields: list[tuple[str, str]], framing: bytes) -> bytes:
    lines = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)
    return first_line + b"\r\n" + lines + framing + b"\r\n"


def _chunked(body: bytes, sizes: list[int], trailers: list[tuple[str, str]]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        if piece:
            out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
        at += size
    if at < len(body):
        out += b"%X\r\n" % (len(body) - at) + body[at:] + b"\r\n"
    return out + b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers) + b"\r\n"


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """A server's whole answer: interim responses, a final one in one of the framings, maybe a fault."""
    interim = b"".join(
        _head(b"HTTP/1.1 103 Early Hints", draw(_FIELDS), b"") for _ in range(draw(st.integers(0, 2)))
    )
    minor = draw(st.sampled_from([b"0", b"1"]))
    status = draw(st.sampled_from([b"200 OK", b"204 No Content", b"304", b"404 Not Found", b"503 ", b"200"]))
    first = b"HTTP/1." + minor + b" " + status
    body = draw(_BODIES)
    framing = draw(st.sampled_from(["length", "chunked", "close", "length-list"]))
    fields = draw(_FIELDS)
    if framing == "length":
        message = _head(first, fields, b"Content-Length: %d\r\n" % len(body)) + body
    elif framing == "length-list":
        message = _head(first, fields, b"Content-Length: %d, %d\r\n" % (len(body), len(body))) + body
    elif framing == "chunked":
        sizes = draw(st.lists(st.integers(0, 20), max_size=4))
        framed = _chunked(body, sizes, draw(_FIELDS))
        message = _head(first, fields, b"Transfer-Encoding: chunked\r\n") + framed
    else:
        message = _head(first, [*fields, ("Connection", "close")], b"") + body
    whole = interim + message + draw(st.sampled_from([b"", b"", b"HTTP/1.1 200 OK\r\n"]))
    fault = draw(st.sampled_from(["none", "none", "none", "lf", "byte", "cut"]))
    if fault == "lf":  # a line ending in LF alone
        at = whole.find(b"\r\n", draw(st.integers(0, len(whole))))
        whole = whole if at < 0 else whole[:at] + whole[at + 1 :]
    elif fault == "byte":  # one byte replaced
        at = draw(st.integers(0, len(whole) - 1))
        whole = whole[:at] + bytes([draw(st.integers(0, 255))]) + whole[at + 1 :]
    elif fault == "cut":
        whole = whole[: draw(st.integers(0, len(whole)))]
    return whole


@settings(max_examples=400, deadline=None)
@given(responses(), st.lists(st.integers(0, 1 << 16), max_size=8), st.booleans())
def test_any_split_of_the_bytes_gives_the_same_events(data: bytes, cuts: list[int], eof: bool) -> None:
    """However the reads cut a response (a byte at a time, inside CRLFs, chunk lines or trailers),
    the connection ends the request the same way, in the same state, as when it came in one read."""
    assert exchange(split(data, cuts), eof=eof) == exchange([data], eof=eof)


@settings(max_examples=50, deadline=None)
@given(responses(), st.booleans())
def test_a_byte_at_a_time_gives_the_same_events(data: bytes, eof: bool) -> None:
    """The smallest reads: every byte its own read."""
    assert exchange([bytes([b]) for b in data], eof=eof) == exchange([data], eof=eof)


# -- what comes out ---------------------------------------------------------------------


def test_a_response_is_status_headers_body_and_the_connection_stays_open() -> None:
    """A Content-Length response completes the request; HTTP/1.1 without `close` leaves it IDLE."""
    events = exchange([b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 3\r\n\r\n", b"abc"])
    assert events == (
        (200, [("content-length", "3"), ("content-type", "a/b")], b"abc", None),
        State.IDLE,
        False,
    )


def test_a_chunked_body_is_joined_and_its_trailers_kept_apart() -> None:
    """Chunks (extensions ignored) make one body; trailer fields are not headers."""
    data = OK + b"Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n1\r\nd\r\n0\r\nX-Sum: 9\r\n\r\n"
    headers = [("transfer-encoding", "chunked")]
    assert exchange([data]) == ((200, headers, b"abcd", [("x-sum", "9")]), State.IDLE, False)


def test_a_body_until_close_ends_with_the_connection_only() -> None:
    """Without a length, the body is everything until the server closes; then the connection is done."""
    data = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    assert exchange([data]) == ("pending", State.UNTIL_CLOSE, False)
    assert exchange([data], eof=True) == ((200, [], b"all of it", None), State.CLOSED, False)


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", State.CLOSED),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", State.CLOSED),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", State.IDLE),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", State.IDLE),
    ],
    ids=["http-1.0", "connection-close", "204-ignores-its-length", "304-has-no-body"],
)
def test_whether_the_connection_is_reused_follows_the_response(data: bytes, state: State) -> None:
    """RFC 9112 §9.3 (persistence) and §6.3 item 1 (no body for 204 and 304)."""
    outcome, left, aborted = exchange([data])
    assert isinstance(outcome, tuple)
    assert outcome[2] == b""
    assert (left, aborted) == (state, False)


def test_interim_responses_are_passed_over() -> None:
    """1xx responses before the final one are not the answer (RFC 9110 §15.2)."""
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    assert exchange([data]) == ("pending", State.HEAD, False)
    final = data + b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    assert exchange([final]) == ((200, [("content-length", "1")], b"x", None), State.IDLE, False)


def test_bytes_past_the_response_drop_the_connection() -> None:
    """What follows a complete response was never asked for: the next request would start mid-stream."""
    outcome, state, aborted = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy"])
    assert (outcome, state, aborted) == ((200, [("content-length", "1")], b"x", None), State.CLOSED, True)


def test_a_byte_before_any_request_drops_the_connection() -> None:
    """An idle connection that receives anything can no longer be trusted (h11: a protocol error)."""
    connection = Connection(1 << 20)
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(b"HTTP/1.1 200 OK\r\n")
    assert (connection.state, transport.aborted) == (State.CLOSED, True)


@pytest.mark.parametrize(
    ("pieces", "nothing_received"),
    [
        ([], True),
        ([b"HTTP/1.1 200 OK\r\nContent-Le"], False),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"], False),
    ],
    ids=["before-any-byte", "mid-head", "mid-body"],
)
def test_a_close_before_the_end_says_whether_anything_came(
    pieces: list[bytes], nothing_received: bool
) -> None:
    """Only a close before any byte lets the client send the GET again on a new connection."""

    async def main() -> bool:
        connection = Connection(1 << 20)
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        answer = asyncio.ensure_future(connection.request(REQUEST))
        await asyncio.sleep(0)
        for piece in pieces:
            connection.data_received(piece)
        connection.connection_lost(None)
        with pytest.raises(ConnectionClosed) as closed:
            await answer
        return closed.value.nothing_received

    assert run_virtual(main()) is nothing_received


# -- what is rejected, and as what --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"HTTP/2 200\r\n\r\n", ProtocolError, id="http-2"),
        pytest.param(b"ICY 200 OK\r\n\r\n", ProtocolError, id="not-http"),
        pytest.param(b"HTTP/1.1 99 Low\r\n\r\n", ProtocolError, id="two-digit-status"),
        pytest.param(b"HTTP/1.1 600 High\r\n\r\n", ProtocolError, id="status-600"),
        pytest.param(OK + b"X-A : b\r\nContent-Length: 0\r\n\r\n", ProtocolError, id="space-before-colon"),
        pytest.param(OK + b"X-A: b\x00c\r\nContent-Length: 0\r\n\r\n", ProtocolError, id="nul-in-value"),
        pytest.param(OK + b"X-A: b\rc\r\nContent-Length: 0\r\n\r\n", ProtocolError, id="lone-cr-in-value"),
        pytest.param(OK + b"X(A): b\r\nContent-Length: 0\r\n\r\n", ProtocolError, id="not-a-token"),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", ProtocolError, id="bare-lf-lines"),
        pytest.param(OK + b" folded\r\nContent-Length: 0\r\n\r\n", ProtocolError, id="fold-with-no-field"),
        pytest.param(
            OK + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nx", ProtocolError, id="two-lengths"
        ),
        pytest.param(OK + b"Content-Length: +1\r\n\r\nx", ProtocolError, id="signed-length"),
        pytest.param(OK + b"Content-Length: 0x1\r\n\r\nx", ProtocolError, id="hex-length"),
        pytest.param(
            OK + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            ProtocolError,
            id="length-and-chunked",
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ProtocolError, id="1.0-chunked"
        ),
        pytest.param(OK + b"Transfer-Encoding: chunked\r\n\r\nz\r\n", ProtocolError, id="chunk-size-not-hex"),
        pytest.param(
            OK + b"Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", ProtocolError, id="chunk-too-long"
        ),
        pytest.param(
            OK + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * MAX_CHUNK_LINE_BYTES,
            ProtocolError,
            id="endless-chunk-line",
        ),
        pytest.param(OK + b"Transfer-Encoding: gzip\r\n\r\n", Refused, id="transfer-coding-gzip"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Refused, id="unasked-101"),
        pytest.param(
            b"HTTP/1.1 103 Early Hints\r\n\r\n" * (MAX_INTERIM_RESPONSES + 1), Refused, id="too-many-interim"
        ),
        pytest.param(OK + b"X-A: b\r\n" * 257 + b"\r\n", Refused, id="257-fields"),
        pytest.param(OK + b"X-A: " + b"b" * MAX_HEAD_BYTES, Refused, id="head-over-its-cap"),
        pytest.param(OK + b"Content-Length: 1048577\r\n\r\n", TooLarge, id="length-over-the-limit"),
        pytest.param(
            OK + b"Transfer-Encoding: chunked\r\n\r\n100001\r\n", TooLarge, id="chunk-over-the-limit"
        ),
        pytest.param(OK + b"\r\n" + b"x" * (1 << 20) + b"x", TooLarge, id="until-close-over-the-limit"),
    ],
)
def test_what_rfc_9112_lets_a_recipient_reject_is_rejected(data: bytes, error: type[Exception]) -> None:
    """Each fault ends the request with its class of error and drops the connection: noise on the
    wire (ProtocolError, retried) apart from an answer that would be the same again (Refused)."""
    assert exchange([data]) == (error.__name__, State.CLOSED, True)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", id="no-reason-phrase"),
        pytest.param(OK + b"X-A:\tb \t\r\nContent-Length: 1\r\n\r\nx", id="ows-around-a-value"),
        pytest.param(OK + b"Content-Length: 1, 1\r\nContent-Length: 1\r\n\r\nx", id="identical-length-list"),
        pytest.param(OK + b"Transfer-Encoding: Chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", id="chunked-any-case"),
    ],
)
def test_lenient_forms_the_rfc_allows_are_read(data: bytes) -> None:
    """What RFC 9112 lets a recipient accept is read as the one-byte body it is."""
    outcome, state, aborted = exchange([data])
    assert isinstance(outcome, tuple)
    assert (outcome[0], outcome[2], state, aborted) == (200, b"x", State.IDLE, False)


def test_an_obs_fold_joins_the_value_with_one_space() -> None:
    """RFC 9112 §5.2: a user agent replaces obs-fold with SP."""
    outcome, _, _ = exchange([OK + b"X-A: one\r\n  two\r\nContent-Length: 0\r\n\r\n"])
    assert isinstance(outcome, tuple)
    assert ("x-a", "one two") in outcome[1]
