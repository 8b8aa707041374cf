"""Real servers on loopback for the network tests: a CONNECT proxy that records what it relays, and a
TLS front (optionally demanding a client certificate) that relays to a plain-http server such as the
fake API. Both run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trustme


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, copy: bytearray | None) -> None:
    try:
        while data := await source.read(65536):
            if copy is not None:
                copy += data
            sink.write(data)
            await sink.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        sink.close()


class ConnectProxy:
    """A CONNECT proxy that relays bytes both ways and keeps a copy of them.

    `heads` are the CONNECT requests as received; `relayed` everything that went
    through the tunnels afterwards, both directions. With `credentials`
    (`user:password`) it answers 407 to a CONNECT without the matching Basic
    `Proxy-Authorization`, as Squid does.
    """

    def __init__(self, refuse_with: bytes | None = None, credentials: str | None = None) -> None:
        self.refuse_with = refuse_with
        self.credentials = credentials
        self.heads: list[bytes] = []
        self.relayed = bytearray()

    def _authorized(self, head: bytes) -> bool:
        if self.credentials is None:
            return True
        expected = b"Basic " + base64.b64encode(self.credentials.encode())
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"proxy-authorization":
                return value.strip() == expected
        return False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        if self.refuse_with is not None or not self._authorized(head):
            writer.write(
                self.refuse_with
                or b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\n'
                b"Content-Length: 0\r\n\r\n"
            )
            writer.close()
            return
        host, port = head.split()[1].decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            _pipe(reader, up_writer, self.relayed),
            _pipe(up_reader, writer, self.relayed),
            return_exceptions=True,
        )


@asynccontextmanager
async def connect_proxy(proxy: ConnectProxy) -> AsyncIterator[int]:
    """Serve `proxy` on 127.0.0.1; yields its port."""
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def server_tls(
    authority: trustme.CA, name: str = "localhost", *, client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    """A server context with a certificate for `name`; with `client_ca`, it demands a client certificate
    that CA signed (and checks it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


class TlsFront:
    """Terminates TLS and relays to a plain-http upstream; counts the handshakes that got through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.accepted = 0
        self.peer_certificates: list[dict[str, object]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        peer = writer.get_extra_info("peercert")
        if peer:
            self.peer_certificates.append(peer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            _pipe(reader, up_writer, None), _pipe(up_reader, writer, None), return_exceptions=True
        )


@asynccontextmanager
async def tls_front(front: TlsFront, context: ssl.SSLContext) -> AsyncIterator[int]:
    """Serve `front` with TLS on 127.0.0.1; yields its port (dial it as `localhost`)."""
    server = await asyncio.start_server(front.handle, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]
