"""Reaching an https API through an HTTP proxy: a CONNECT tunnel, then TLS inside it.

Networks that allow no direct egress send traffic through a proxy. The
exporter asks the proxy for a tunnel to the API's host and port and then
speaks TLS to the API through it, verifying the API's certificate as on a
direct connection: the proxy relays bytes it cannot read, so it sees the
host name, never the token or a recording. Plain http through a proxy would
hand it the token, so `proxy_env.choose_proxy` never allows that.

A proxy that wants credentials gets them as Basic `Proxy-Authorization` on
the CONNECT request only (RFC 9110 §11.7.2): nothing inside the tunnel carries
them. They come from `$HTTPS_PROXY`'s URL or `--proxy-auth-file`, never from
`--proxy` on the command line, where `ps` shows them. A 407 is a
`ConnectionSetupError`: retrying with the same credentials cannot help.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from exporter.config import ProxySettings, Secret
from exporter.errors import Cause, ConnectionSetupError, UsageError

from .credentials import check_proxy_credentials

#: The proxy's answer to CONNECT is a status line and headers; anything longer is not a proxy.
_MAX_HEAD_BYTES = 16 * 1024
_SCHEME_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets: the form CONNECT and messages use."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _shown(text: str) -> str:
    """The URL for a message, unless it may hold credentials: those are never echoed."""
    return "(not shown: it holds credentials)" if "@" in text else repr(text.strip())


def parse_proxy_url(text: str, *, source: str) -> ProxySettings:
    """`http://[user:password@]HOST:PORT` (`http://` may be left out, as curl allows), or UsageError.

    Credentials are accepted only from the environment (`source` other than
    `--proxy`); a `--proxy` holding some is refused without echoing it.
    """
    raw = text.strip()
    example = "an http:// proxy URL such as http://proxy.example:3128"
    try:
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    except ValueError as exc:  # a bracket urllib cannot take apart (`http://[proxy:3128`)
        raise UsageError(f"{source} {_shown(text)} is not {example} ({exc})") from exc
    if "@" in parts.netloc and source == "--proxy":
        raise UsageError(
            "--proxy must not contain credentials (`ps` would show them): give the proxy's user:password "
            "in a file named by --proxy-auth-file, or in HTTPS_PROXY"
        )
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(
            f"{source} {_shown(text)} is not {example} "
            "(https:// and socks proxies are not supported; TLS to the API runs inside the tunnel)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"{source} {_shown(text)} must be only http://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise UsageError(f"{source} {_shown(text)} needs the proxy's port, e.g. http://{parts.hostname}:3128")
    credentials: Secret | None = None
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        credentials = check_proxy_credentials(f"{user}:{password}", f"the credentials in {source}")
    return ProxySettings(
        host=parts.hostname,
        port=port,
        credentials=credentials,
        source=source,
        credentials_from=source if credentials is not None else None,
    )


def connect_request(proxy: ProxySettings, authority: str) -> bytes:
    """The CONNECT request head; `Proxy-Authorization` is on it, and on nothing else."""
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.credentials is not None:
        basic = base64.b64encode(proxy.credentials.reveal().encode("utf-8")).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {basic}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _auth_schemes(head: bytes) -> list[str]:
    """The schemes a 407's `Proxy-Authenticate` headers offer (names only, a few at most)."""
    schemes: list[str] = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"proxy-authenticate":
            word = value.strip().split(b" ", 1)[0].decode("latin-1")
            if _SCHEME_NAME.fullmatch(word) and word not in schemes and len(schemes) < 4:
                schemes.append(word)
    return schemes


def _refused_credentials(proxy: ProxySettings, head: bytes) -> ConnectionSetupError:
    """The one line for a 407, saying where credentials go or which ones were refused."""
    schemes = _auth_schemes(head)
    if proxy.credentials is None:
        message = (
            f"the proxy {proxy.authority} (from {proxy.source}) requires credentials (407): give them as "
            f"http://USER:PASSWORD@{proxy.authority} in HTTPS_PROXY, or as user:password in a file "
            "named by --proxy-auth-file"
        )
    else:
        message = (
            f"the proxy {proxy.authority} refused the credentials from {proxy.credentials_from} "
            "(407 Proxy Authentication Required)"
        )
    if schemes and not any(scheme.lower() == "basic" for scheme in schemes):
        message += f"; it asks for {', '.join(schemes)}, and the exporter speaks only Basic"
    return ConnectionSetupError(message)


class _ConnectReply(asyncio.Protocol):
    """Reads the proxy's reply to CONNECT: its head only, since a tunnel has no body."""

    def __init__(self, proxy: str) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._proxy = proxy  # `host:port`, for the messages

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 < len(self._buffer):
                self.head.set_exception(
                    TunnelError(f"the proxy {self._proxy} sent data before the tunnel was open")
                )
            else:
                self.head.set_result(bytes(self._buffer[:end]))
        elif len(self._buffer) > _MAX_HEAD_BYTES:
            self.head.set_exception(
                TunnelError(f"the answer of the proxy {self._proxy} to CONNECT is not HTTP")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(
                TunnelError(f"the proxy {self._proxy} closed the connection instead of opening a tunnel")
            )


class TunnelError(OSError):
    """The proxy did not open a tunnel; the message says what it answered.

    Blamed on the proxy (`Cause.PROXY`), even for a 502 it answers when it cannot reach
    the API: the message quotes its answer, and the proxy is the hop to look at first.
    """

    cause = Cause.PROXY


async def open_tunnel(
    proxy: ProxySettings,
    *,
    host: str,
    port: int,
    authority: str,
    ssl_context: ssl.SSLContext,
    protocol: Callable[[], asyncio.Protocol],
) -> asyncio.Protocol:
    """Connect to the proxy, CONNECT to host:port, start TLS; the protocol, connected.

    `protocol()` gets `connection_made` with the TLS transport, as if
    `create_connection` had made it.
    """
    loop = asyncio.get_running_loop()
    transport, reply = await loop.create_connection(
        lambda: _ConnectReply(proxy.authority), proxy.host, proxy.port
    )
    try:
        transport.write(connect_request(proxy, authority))
        head = await reply.head
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) >= 2 and fields[0].startswith("HTTP/1.") and fields[1] == "407":
            raise _refused_credentials(proxy, head)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or fields[1] != "200":
            raise TunnelError(
                f"the proxy {proxy.authority} refused a tunnel to {authority}: {status_line[:200]!r}"
            )
        app = protocol()
        tls = await loop.start_tls(transport, app, ssl_context, server_hostname=host)
    except BaseException:
        transport.abort()
        raise
    if tls is None:  # only for a transport already closing
        raise TunnelError(
            f"the tunnel to {authority} through {proxy.authority} closed during the TLS handshake"
        )
    app.connection_made(tls)
    return app
