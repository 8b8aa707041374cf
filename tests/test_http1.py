"""http1.Connection on the wire: how one response is framed, read, capped and refused (RFC 9112).

Against scripted servers on loopback (`scripted.py`) that write exact bytes: chunked and
read-until-close bodies, interim responses, malformed responses, and every cap and refusal a
hostile server meets (issue 12), read split anywhere. Most go through the client as the exporter
does (`client_for`), so they also show what the exporter makes of each; `raw_response` reads with a
bare `Connection` where the client passes nothing on (trailers). The client's own jobs
(connections, timeouts, TLS, proxies, encodings) are `test_client.py`'s.
"""

from __future__ import annotations

import asyncio
import gzip

import pytest
from scripted import (
    OK_HEAD,
    Conversation,
    Handler,
    answer,
    chunked,
    client_for,
    endless,
    failure,
    keep_answering,
    scripted,
)

from exporter.errors import Reason, TransportError
from exporter.transport.http1 import Connection, Framing, Headers, Response, State, body_framing, parse_head


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


# --- hostile servers (issue 12): every cap, every refusal, on the wire -----------------------------
#
# A response that would get the same answer again (past a cap, an unsupported coding) fails at
# once as bad_response and is not retried; bytes that are not HTTP are a network error (retried).

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


def test_headers_get_is_case_insensitive_joins_repeats_and_defaults() -> None:
    """Headers.get (the pacer asks every answer for fields most APIs never send) reads like Mapping.get."""
    headers = Headers()
    headers.add("X-RateLimit-Remaining", "7")
    headers.add("Via", "a")
    headers.add("via", "b")
    assert headers.get("x-ratelimit-remaining") == "7"
    assert headers.get("VIA") == "a, b"
    assert headers.get("RateLimit") is None
    assert headers.get("RateLimit", "none") == "none"
    assert headers.get_all("via") == ["a", "b"]
