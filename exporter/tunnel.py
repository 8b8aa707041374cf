"""Reaching an https API through an HTTP proxy: a CONNECT tunnel, then TLS inside it.

Networks that allow no direct egress send traffic through a proxy. The
exporter asks the proxy for a tunnel to the API's host and port and then
speaks TLS to the API through it, verifying the API's certificate as on a
direct connection: the proxy relays bytes it cannot read, so it sees the
host name, never the token or a recording. Plain http through a proxy would
hand it the token, so `check_proxy_url` refuses that combination.

Proxy credentials are not supported: they would have to come from the
command line, where `ps` shows them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

from .errors import UsageError

#: The proxy's answer to CONNECT is a status line and headers; anything longer is not a proxy.
_MAX_HEAD_BYTES = 16 * 1024


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets: the form CONNECT and messages use."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Proxy(NamedTuple):
    host: str
    port: int

    @property
    def authority(self) -> str:
        return host_port(self.host, self.port)


def check_proxy_url(text: str, *, base_url: str) -> Proxy:
    """The proxy of `--proxy http://HOST:PORT`, or UsageError saying what to fix."""
    parts = urlsplit(text.strip())
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"--proxy {text!r} is not an http:// proxy URL such as http://proxy.example:3128")
    if parts.username or parts.password:
        raise UsageError("--proxy must not contain credentials: proxies that need them are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"--proxy {text!r} must be only http://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise UsageError(f"--proxy {text!r} needs the proxy's port, e.g. http://{parts.hostname}:3128")
    if urlsplit(base_url).scheme != "https":
        raise UsageError(
            "--proxy works with an https --base-url only: through a proxy, plain http would show "
            "the token to the proxy"
        )
    return Proxy(parts.hostname, port)


class _ConnectReply(asyncio.Protocol):
    """Reads the proxy's reply to CONNECT: its head only, since a tunnel has no body."""

    def __init__(self) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 < len(self._buffer):
                self.head.set_exception(TunnelError("the proxy sent data before the tunnel was open"))
            else:
                self.head.set_result(bytes(self._buffer[:end]))
        elif len(self._buffer) > _MAX_HEAD_BYTES:
            self.head.set_exception(TunnelError("the proxy's answer to CONNECT is not HTTP"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(
                TunnelError("the proxy closed the connection instead of opening a tunnel")
            )


class TunnelError(OSError):
    """The proxy did not open a tunnel; the message says what it answered."""


async def open_tunnel(
    proxy: Proxy,
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
    transport, reply = await loop.create_connection(_ConnectReply, proxy.host, proxy.port)
    try:
        transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
        status_line = (await reply.head).split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or fields[1] != "200":
            raise TunnelError(f"the proxy {proxy.authority} refused a tunnel to {authority}: {status_line!r}")
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
