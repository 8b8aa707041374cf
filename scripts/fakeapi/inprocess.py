"""The fake API in-process, on its own thread and loop: what the tests start (conftest, per test)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from fakeapi.app import Serving, base_url, quote_id, start_server
from fakeapi.config import API_PATH, ServerConfig, merge_config
from fakeapi.state import ServerState

_T = TypeVar("_T")


class FakeServerHandle:
    """A fake API served from a background thread with its own event loop.

    Its own loop means sync tests and async tests (on their own loop) can both use it; the
    methods below hop onto the server's loop, so they are safe from any thread.
    """

    __slots__ = ("_loop", "_runner", "_state", "_thread", "host", "port")

    def __init__(
        self,
        config: ServerConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start serving; returns once the socket accepts connections.

        clock drives the limits, the quota and outages (a test may pass a virtual one; a
        refuse-mode outage's reopening then waits for the next configure() or reset()).
        """
        self.host = host
        self._state = ServerState(config, clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="fake-api", daemon=True)
        self._thread.start()
        self._runner: Serving | None = None
        try:
            self._runner = self._call(start_server(self._state, host, port))
            self.port = self._runner.port
        except BaseException:
            self.stop()  # e.g. the port is taken: do not leave the thread behind
            raise

    def _run_loop(self) -> None:
        """The server thread: run the loop until stop(), then close it."""
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _call(self, coro: Awaitable[_T], timeout_s: float = 30.0) -> _T:
        """Run a coroutine on the server's loop and wait for its result."""

        async def wrapper() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout_s)

    @property
    def url(self) -> str:
        """Base URL for the exporter, path prefix included (e.g. http://127.0.0.1:PORT/api)."""
        return base_url(self.host, self.port, self._state.config.path_prefix)

    @property
    def root_url(self) -> str:
        """Base URL without the prefix: where /_stats and friends live."""
        return base_url(self.host, self.port, "")

    @property
    def config(self) -> ServerConfig:
        """The live config."""
        return self._state.config

    def recording_url(self, recording_id: str, query: str = "") -> str:
        """The already-encoded URL of one recording (give it to aiohttp as URL(u, encoded=True))."""
        url = f"{self.url}{API_PATH}{quote_id(recording_id)}"
        return f"{url}?{query}" if query else url

    def stats(self) -> dict[str, Any]:
        """A snapshot of GET /_stats (same shape, status codes as string keys)."""

        async def snapshot() -> dict[str, Any]:
            return self._state.snapshot()

        return self._call(snapshot())

    def reset(self) -> None:
        """Like POST /_reset: clear stats, fail_first counts and the rate limiter."""

        async def reset() -> None:
            self._state.reset()

        self._call(reset())

    def configure(self, **changes: Any) -> ServerConfig:
        """Like POST /_config: merge changes (JSON-shaped values) and return the new config."""

        async def apply() -> ServerConfig:
            self._state.apply(merge_config(self._state.config, changes), changes.keys())
            return self._state.config

        return self._call(apply())

    def stop(self) -> None:
        """Stop serving and end the thread; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._call(runner.cleanup())
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"<FakeServerHandle {self.url} running={self._runner is not None}>"


@contextlib.contextmanager
def running_server(
    config: ServerConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[FakeServerHandle]:
    """Serve the fake API on a background thread for the duration of a with block."""
    handle = FakeServerHandle(config or ServerConfig(), host=host, port=port, clock=clock)
    try:
        yield handle
    finally:
        handle.stop()
