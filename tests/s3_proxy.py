"""A fault-injecting HTTP proxy in front of ministack, on loopback: the faults real object stores have.

The exporter is pointed at the proxy (`AWS_ENDPOINT_URL_S3`), which forwards
each request to ministack unchanged unless a rule matches it first:

    corrupt   flip one byte of the request body on the way (the store must answer BadDigest)
    reset     read the head and half the body, then reset the connection (RST)
    answer    answer with a status and an S3 error document (503 SlowDown, 500, ExpiredToken)
    hold      keep the request until `release()` (or for ever): a crash test kills the exporter then

Rules match on method, a substring of the path (with its query) and the access
key in the Authorization header, and fire a given number of times. One request
per connection (`Connection: close` both ways) keeps the framing simple; every
request is logged with what happened to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Rule:
    action: str  # corrupt | reset | answer | hold
    method: str | None = None
    path: str | None = None
    access_key: str | None = None
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    fired: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, target: str, auth: str) -> bool:
        return (
            self.fired < self.times
            and (self.method is None or self.method == method)
            and (self.path is None or self.path in target)
            and (self.access_key is None or f"Credential={self.access_key}/" in auth)
        )


@dataclass(frozen=True)
class Logged:
    method: str
    target: str
    action: str
    status: int | None


class FaultProxy:
    """The proxy, on its own thread and event loop; `url` is what the exporter talks to."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = ""

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            for rule in self.rules:
                rule.release.set()
            self.rules.clear()

    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        with self._lock:
            return [
                entry
                for entry in self.log
                if (method is None or entry.method == method) and (path is None or path in entry.target)
            ]

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def _take(self, method: str, target: str, auth: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target, auth):
                    rule.fired += 1
                    return rule
        return None

    def _note(self, method: str, target: str, action: str, status: int | None) -> None:
        with self._lock:
            self.log.append(Logged(method, target, action, status))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
        named = {name.strip().lower(): value.strip() for name, value in headers}
        rule = self._take(method, target, named.get("authorization", ""))
        if named.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        length = int(named.get("content-length", "0") or 0)
        if rule is not None and rule.action == "reset":
            await reader.readexactly(length // 2)
            self._note(method, target, "reset", None)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        body = await reader.readexactly(length) if length else b""
        if rule is not None and rule.action == "hold":
            self._note(method, target, "hold", None)
            await asyncio.to_thread(rule.release.wait)
            writer.transport.abort()
            return
        if rule is not None and rule.action == "answer":
            document = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                f"<Message>injected by the test proxy</Message></Error>"
            ).encode()
            writer.write(
                f"HTTP/1.1 {rule.status} Injected\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(document)}\r\nConnection: close\r\n\r\n".encode()
                + document
            )
            await writer.drain()
            self._note(method, target, f"answer {rule.code}", rule.status)
            return
        if rule is not None and rule.action == "corrupt" and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]
        kept = [
            f"{name}:{value}"
            for name, value in headers
            if name.strip().lower() not in ("connection", "expect", "keep-alive")
        ]
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        upstream_writer.write(
            ("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body
        )
        await upstream_writer.drain()
        answer = await upstream_reader.read()
        upstream_writer.close()
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
        head_end = answer.find(b"\r\n\r\n")
        if head_end > 0:
            answer_head = [
                line
                for line in answer[:head_end].split(b"\r\n")
                if not line.lower().startswith((b"connection:", b"keep-alive:"))
            ]
            answer = b"\r\n".join([*answer_head, b"Connection: close"]) + answer[head_end:]
        writer.write(answer)
        await writer.drain()
        self._note(method, target, rule.action if rule is not None else "forward", status)


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream) as proxy:
        yield proxy
