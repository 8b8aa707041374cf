"""One GET per id against the API's own origin: connections, timeouts, encodings.

Policy (what a status means, whether to retry) is `retry.py`'s; the wire
format is `http1.py`'s. This module owns the connections and translates every
socket, TLS and protocol exception, at this one boundary, into a
`TransportError` with a reason and a message fit for a user.

The token travels only in the `Authorization` header of requests to the
configured origin: redirects are never followed (a 3xx comes back as a status
for `retry.classify_status` to refuse), no cookies are kept, a proxy only
relays TLS (`tunnel.py`), and no message built here contains it. Each request
carries the current token of a `credentials.TokenSource` and says which one in
its response, so a rotated token is picked up by the next request.

A proxy that wants other credentials (407) or an API that refuses our client
certificate (`tls.py`) raises `ConnectionSetupError`: every attempt would
fail the same way, so the run stops instead of retrying.

Why one module of this size: it is the one boundary where socket, TLS, proxy and protocol
exceptions become `TransportError`s; split, a new failure could escape untranslated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import zlib
from types import TracebackType
from typing import NamedTuple, cast
from urllib.parse import quote, urlencode, urlsplit

from exporter.config import HttpSettings
from exporter.errors import Cause, Reason, TransportError, UsageError

from .credentials import TokenSource
from .http1 import (
    Connection,
    ConnectionClosed,
    Headers,
    ProtocolError,
    Refused,
    TooLarge,
    head_after_target,
)
from .tls import CertificateRequests, certificate_refusal, client_context, demanded_certificate
from .tunnel import TunnelError, host_port, open_tunnel

RECORDINGS_PATH = "/v1/core/recordings/"

#: The content codings `_decoded` undoes, and so the only ones `Accept-Encoding` offers.
#: (No br or zstd: the standard library decodes neither.)
DECODED_CODINGS = ("gzip", "deflate")
#: Codings stacked on one body (RFC 9110 §8.4.1); urllib3 stops at 5 too. Each is capped
#: at max_response_bytes, so a chain costs at most this many times that in CPU.
_MAX_CODINGS = 5
#: gzip members in one body. Each costs a pass of the loop in `_inflate`, on the event
#: loop: without a cap, a body of empty 20-byte members would stall it for seconds.
_MAX_GZIP_MEMBERS = 1024
#: Decompressed bytes between two yields to the event loop (a few ms of zlib): a 261 KB gzip
#: body that expands to 256 MiB took 0.8 s of CPU in one piece, stalling every other worker.
_INFLATE_STEP_BYTES = 1 << 20


class RawResponse(NamedTuple):
    """A complete response: the body has been read in full and its Content-Encoding undone."""

    status: int
    headers: Headers
    body: bytes
    #: `TokenSource.generation` of the token the request carried.
    token_generation: int = 0


def check_base_url(text: str, *, allow_insecure_http: bool = False) -> str:
    """The base URL normalised (no trailing slash), or UsageError saying what to fix.

    Plain http would send the token in clear text, so it is refused for
    anything but this machine unless the user insists.
    """
    example = "an http(s) URL such as https://api.example.com"
    # urllib checks brackets and the port only as it parses them, with ValueError.
    try:
        parts = urlsplit(text.strip())
    except ValueError as exc:
        raise UsageError(f"--base-url {text!r} is not {example} ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url {text!r} is not {example}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise UsageError(f"--base-url {text!r}: its port is not a number from 1 to 65535")
    if parts.username or parts.password:
        raise UsageError("--base-url must not contain credentials; give the token via EXPORTER_TOKEN")
    if parts.query or parts.fragment:
        raise UsageError("--base-url must not have a query or fragment; use --query KEY=VALUE")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise UsageError(
            f"--base-url {text!r} uses plain http, which would send the token unencrypted; "
            "use https, or pass --allow-insecure-http if this network is trusted"
        )
    return text.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_target(base_path: str, record_id: str, query: str) -> str:
    """The request target for one id: the id percent-encoded as a single path segment.

    `query` is already encoded (`encode_query`), and `base_path` is `Origin.path`.
    """
    tail = f"?{query}" if query else ""
    return f"{base_path}{RECORDINGS_PATH}{quote(record_id, safe='')}{tail}"


def encode_query(pairs: tuple[tuple[str, str], ...]) -> str:
    """The query string sent with every request, encoded once."""
    return urlencode(pairs, quote_via=quote)


class Origin(NamedTuple):
    """Where every request goes, split out of the base URL once."""

    scheme: str
    host: str
    port: int
    #: The `Host` header: the host, and the port unless it is the scheme's default.
    authority: str
    #: The base URL's path, percent-encoded, without a trailing slash (often "").
    path: str

    @property
    def host_port(self) -> str:
        """`host:port` with the port always given, as CONNECT needs it."""
        return host_port(self.host, self.port)

    @classmethod
    def of(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        authority = host_port(host, port)
        if port == default:
            authority = authority.rsplit(":", 1)[0]
        return cls(
            parts.scheme, host, port, authority, quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=~")
        )


class RecordingsClient:
    """Keep-alive HTTP/1.1 connections to one origin with one token; an async context manager.

    Each worker holds at most one connection at a time, so the pool never
    grows past the concurrency: a connection is taken for a request and put
    back when its response leaves it reusable.
    """

    __slots__ = (
        "_asked",
        "_client_cert",
        "_connect_timeout_s",
        "_head_generation",
        "_head_tail",
        "_idle",
        "_max_body_bytes",
        "_open",
        "_origin",
        "_proxy",
        "_query",
        "_ssl",
        "_timeout_s",
        "_tokens",
        "_user_agent",
    )

    def __init__(
        self,
        settings: HttpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self._origin = Origin.of(settings.base_url)
        self._query = encode_query(settings.query)
        self._timeout_s = settings.timeout_s
        self._connect_timeout_s = min(settings.connect_timeout_s, settings.timeout_s)
        self._max_body_bytes = settings.max_response_bytes
        self._proxy = settings.proxy
        self._tokens = tokens if tokens is not None else TokenSource(settings.token, settings.token_file)
        self._user_agent = settings.user_agent
        self._client_cert = settings.tls.client_cert is not None
        self._ssl: ssl.SSLContext | None = None
        self._asked: CertificateRequests | None = None
        if self._origin.scheme == "https":
            self._ssl = ssl_context or client_context(settings.tls)
            if not self._client_cert:
                self._asked = CertificateRequests(self._ssl)
        self._head_generation = -1
        self._head_tail = b""
        self._idle: list[_ApiConnection] = []
        self._open: set[_ApiConnection] = set()

    async def __aenter__(self) -> RecordingsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing while the loop still runs

    def _head(self, target: str) -> tuple[bytes, int]:
        """The request head with the current token, and that token's generation."""
        generation = self._tokens.generation
        if generation != self._head_generation:
            self._head_tail = head_after_target(
                {
                    "Host": self._origin.authority,
                    "Authorization": f"Bearer {self._tokens.token.reveal()}",
                    "Accept": "application/json",
                    "Accept-Encoding": ", ".join(DECODED_CODINGS),
                    "User-Agent": self._user_agent,
                }
            )
            self._head_generation = generation
        return b"GET " + target.encode("ascii") + self._head_tail, generation

    async def get(self, record_id: str) -> RawResponse:
        """GET one recording and read its whole body; TransportError if that fails."""
        head, generation = self._head(request_target(self._origin.path, record_id, self._query))
        connection: _ApiConnection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                connection, reused = await self._take()
                try:
                    response = await connection.request(head)
                except ConnectionClosed as exc:
                    if not (reused and exc.nothing_received):
                        raise
                    # The server had closed this idle keep-alive connection: the GET
                    # never reached it, so it is sent again on a new connection.
                    self._discard(connection)
                    connection, _ = await self._take(fresh=True)
                    response = await connection.request(head)
            body = response.body
            if "content-encoding" in response.headers and body:
                body = await _decoded(response.headers["content-encoding"], body, self._max_body_bytes)
            if self._asked is not None and self._asked.watching:
                self._asked.watch(on=False)  # the server answers without a client certificate
        except TooLarge as exc:
            raise TransportError(
                Reason.BAD_RESPONSE,
                f"{exc}; not asked again: raise --max-response-bytes if it is a real recording",
                retryable=False,
            ) from exc
        except Refused as exc:
            raise TransportError(
                Reason.BAD_RESPONSE,
                f"{exc}; not asked again, as the server would answer the same",
                retryable=False,
            ) from exc
        except TimeoutError as exc:
            if connection is None:
                # --timeout ran out while connecting (before the connect timeout, or with it).
                raise self._no_connection(
                    ConnectError(
                        f"{self._cannot_connect()} within {self._timeout_s:g}s (--timeout)", self._via()
                    ),
                    Reason.TIMEOUT,
                ) from exc
            raise TransportError(
                Reason.TIMEOUT, f"no complete response within {self._timeout_s:g}s (--timeout)"
            ) from exc
        except ConnectionClosed as exc:
            asked = self._asked
            if exc.nothing_received and connection is not None and asked is not None:
                if asked.asked(connection.ssl_object):
                    raise demanded_certificate(self._origin.host) from exc
                asked.watch(on=True)  # is the next connection refused for want of a certificate?
            raise TransportError(Reason.NETWORK, str(exc)) from exc
        except ProtocolError as exc:
            raise TransportError(Reason.NETWORK, f"malformed HTTP response ({exc})", down=False) from exc
        except ConnectError as exc:
            raise self._no_connection(exc, Reason.NETWORK) from exc
        except OSError as exc:
            raise TransportError(Reason.NETWORK, _os_error_message(exc, self._origin)) from exc
        finally:
            if connection is not None:
                self._release(connection)
        return RawResponse(response.status, response.headers, body, generation)

    def _no_connection(self, exc: ConnectError, reason: Reason) -> TransportError:
        """A request that never left: no connection (or tunnel, or TLS session) to the API was made."""
        return TransportError(
            reason,
            str(exc),
            down=not isinstance(exc.__cause__, ssl.SSLCertVerificationError),
            connected=False,
            cause=exc.cause,
        )

    def _via(self) -> Cause:
        return Cause.API if self._proxy is None else Cause.PROXY

    def _cannot_connect(self) -> str:
        via = f" through the proxy {self._proxy.authority}" if self._proxy is not None else ""
        return f"cannot connect to {self._origin.authority}{via}"

    async def _take(self, *, fresh: bool = False) -> tuple[_ApiConnection, bool]:
        """An idle connection (reused=True) or a new one."""
        idle = self._idle
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed:
                return connection, True
            self._open.discard(connection)
        origin = self._origin
        loop = asyncio.get_running_loop()
        proxy = self._proxy
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if proxy is not None and self._ssl is not None:
                    tunnelled = await open_tunnel(
                        proxy,
                        host=origin.host,
                        port=origin.port,
                        authority=origin.host_port,
                        ssl_context=self._ssl,
                        protocol=lambda: _ApiConnection(self._max_body_bytes),
                    )
                    connection = cast(_ApiConnection, tunnelled)
                else:
                    _, connection = await loop.create_connection(
                        lambda: _ApiConnection(self._max_body_bytes),
                        origin.host,
                        origin.port,
                        ssl=self._ssl,
                        server_hostname=origin.host if self._ssl is not None else None,
                        happy_eyeballs_delay=0.25,
                    )
        except TimeoutError as exc:  # this timeout, or the kernel's own (ETIMEDOUT)
            raise ConnectError(
                f"{self._cannot_connect()} within {self._connect_timeout_s:g}s", self._via()
            ) from exc
        except TunnelError as exc:
            raise ConnectError(str(exc), exc.cause) from exc
        except OSError as exc:
            if isinstance(exc, ssl.SSLError) and (
                refusal := certificate_refusal(exc, origin.host, have_certificate=self._client_cert)
            ):
                raise refusal from exc
            if isinstance(exc, ssl.SSLError):
                via = f" through the proxy {proxy.authority}" if proxy is not None else ""
                raise ConnectError(f"{_os_error_message(exc, origin)}{via}", Cause.TLS) from exc
            if proxy is not None:
                raise ConnectError(
                    f"cannot connect to the proxy {proxy.authority} ({exc.strerror or exc})", Cause.PROXY
                ) from exc
            raise ConnectError(_os_error_message(exc, origin), Cause.API) from exc
        self._open.add(connection)
        return connection, False

    def _release(self, connection: _ApiConnection) -> None:
        """Put a connection back for the next request, or close it."""
        if connection.reusable:
            self._idle.append(connection)
        else:
            self._discard(connection)

    def _discard(self, connection: _ApiConnection) -> None:
        connection.abort()
        self._open.discard(connection)


class _ApiConnection(Connection):
    """A connection that remembers its TLS object, to ask `tls.CertificateRequests` about once it closed."""

    ssl_object: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.ssl_object = transport.get_extra_info("ssl_object")
        super().connection_made(transport)


class ConnectError(OSError):
    """No connection to the origin; its message is ready for the user, `cause` names the hop.

    A connect timeout becomes one of these rather than a TimeoutError, which
    `get()` reports as --timeout running out.
    """

    def __init__(self, message: str, cause: Cause = Cause.API) -> None:
        super().__init__(message)
        self.cause = cause


def _os_error_message(exc: OSError, origin: Origin) -> str:
    if isinstance(exc, ConnectError):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {origin.host} was refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error with {origin.host}: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {origin.host} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {origin.authority} (connection refused)"
    return f"network error with {origin.authority}: {exc.strerror or exc}"


async def _decoded(encoding: str, body: bytes, max_bytes: int) -> bytes:
    """The body with its Content-Encoding (`encoding`) undone.

    Refused for a coding this client does not decode (it never offered one),
    ProtocolError for a body that does not decompress, ConnectionClosed for one
    cut short. The decompressed size is capped too: a small gzip body can
    expand a thousandfold.
    """
    # RFC 9110 §8.4: codings are listed in the order they were applied; identity is none.
    codings = [c for c in (part.strip().lower() for part in encoding.split(",")) if c and c != "identity"]
    if len(codings) > _MAX_CODINGS:
        raise Refused(f"{len(codings)} stacked content codings in {encoding[:80]!r}")
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):  # RFC 9110 §8.4.1.3: x-gzip is the same coding
            body = await _inflate(body, 47, max_bytes, members=True)
        elif coding == "deflate":
            body = await _inflate_deflate(body, max_bytes)
        else:
            raise Refused(
                f"unsupported Content-Encoding {encoding[:80]!r}: only "
                f"{', '.join(DECODED_CODINGS)} are decoded (and offered in Accept-Encoding)"
            )
    return body


async def _inflate_deflate(body: bytes, max_bytes: int) -> bytes:
    """A "deflate" body: zlib-wrapped as RFC 9110 §8.4.1.2 says, or raw, as some servers send it."""
    try:
        return await _inflate(body, 47, max_bytes, members=False)
    except ProtocolError as wrapped:
        try:
            return await _inflate(body, -15, max_bytes, members=False)
        except ProtocolError:
            raise wrapped from None  # the zlib reading's complaint says more


async def _inflate(body: bytes, wbits: int, max_bytes: int, *, members: bool) -> bytes:
    """One zlib/gzip stream decompressed, or, with `members`, every gzip member in turn.

    A gzip body may be several members one after another (RFC 1952 §2.2;
    urllib3 and gzip.decompress read them all); the cap holds for their sum.
    47 = 32 + 15: zlib or gzip framing, told apart by the header. Output comes
    _INFLATE_STEP_BYTES at a time, the event loop running between steps.
    """
    pieces: list[bytes] = []
    size = 0
    rest = body
    count = 1
    decompressor = zlib.decompressobj(wbits)
    while True:
        limit = min(max_bytes - size + 1, _INFLATE_STEP_BYTES)
        try:
            piece = decompressor.decompress(rest, limit)
        except zlib.error as exc:
            raise ProtocolError(f"the compressed body does not decompress ({exc})") from exc
        size += len(piece)
        if size > max_bytes:
            raise TooLarge(f"the response body is larger than {max_bytes:,} bytes once decompressed")
        pieces.append(piece)
        if len(piece) == limit:  # stopped by the limit: more input, or more output held back
            rest = decompressor.unconsumed_tail
            await asyncio.sleep(0)
            continue
        if not decompressor.eof:
            # Under its limit decompress() used all its input: the stream stops short of its end.
            raise ConnectionClosed("the compressed response was cut off", nothing_received=False)
        rest = decompressor.unused_data
        if not rest:
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if not members:
            raise ProtocolError(f"{len(rest):,} bytes after the end of the compressed body")
        count += 1
        if count > _MAX_GZIP_MEMBERS:
            raise Refused(f"a gzip body of more than {_MAX_GZIP_MEMBERS} members")
        decompressor = zlib.decompressobj(wbits)
