"""Signals, handled for the whole life of the process.

    SIGHUP          never ends the process. During a run it reads --token-file again
                    (a rotated Secret); without one, or outside a run, it is logged and ignored.
    SIGINT/SIGTERM  during a run: the first asks the run to stop cleanly (what that means
                    depends on where the run is: `pipeline._Run.on_signal`), the second exits
                    at once. Outside a run (reading the options, the last line) they end the
                    process with 130 / 143, as they would unhandled.

`ProcessSignals.installed()` sets the handlers as the command starts (`cli/app.py`)
and restores the ones before it at the end, so in between these signals never
have their default action, which for SIGHUP is to kill. asyncio's
`loop.add_signal_handler` is not used for that reason: removing a handler
resets the signal to its default, and closing the loop removes them all: a
SIGHUP while the reports are written would then kill a finished run.

A run `listening()` gets each signal on its event loop: the handler (which
Python runs on the main thread, between two bytecodes) passes it on with
`call_soon_threadsafe`, and a wakeup fd makes the loop wake for it even when
the kernel delivered the signal to another thread. The second stop signal is
acted on in the handler itself, so it works even when the loop is stuck.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from .errors import ExitCode

if TYPE_CHECKING:  # a run imports asyncio; the offline commands need not
    import asyncio

log = logging.getLogger(__name__)

#: The signals a run acts on, and the exit code a stop by each ends with.
STOP_SIGNALS = {signal.SIGINT: ExitCode.SIGINT, signal.SIGTERM: ExitCode.SIGTERM}
HANDLED = (signal.SIGHUP, *STOP_SIGNALS)

Listener = Callable[[signal.Signals], None]


class ProcessSignals:
    """The process's handlers for SIGHUP, SIGINT and SIGTERM, and the run they report to, if any."""

    __slots__ = ("_listener", "_loop", "_stops")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        #: Stop signals received while the current listener listens.
        self._stops = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[ProcessSignals]:
        """Handle the signals until the block ends; then the handlers before it are back."""
        previous: dict[signal.Signals, object] = {}
        try:
            for signum in HANDLED:
                previous[signum] = signal.signal(signum, self._handle)
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def listening(self, listener: Listener) -> Iterator[None]:
        """Hand every signal to `listener`, on the running event loop, while the block lasts."""
        import asyncio

        loop = asyncio.get_running_loop()
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        loop.add_reader(wake_read.fileno(), _drain, wake_read)
        self._loop, self._listener, self._stops = loop, listener, 0
        try:
            yield
        finally:
            self._loop = self._listener = None
            signal.set_wakeup_fd(previous_fd)
            loop.remove_reader(wake_read.fileno())
            wake_read.close()
            wake_write.close()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        loop, listener = self._loop, self._listener
        if sig is signal.SIGHUP:
            if loop is None or listener is None:
                log.warning("SIGHUP ignored: no export is running")
            else:
                loop.call_soon_threadsafe(listener, sig)
            return
        code = STOP_SIGNALS[sig]
        if loop is None or listener is None:
            if sig is signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(int(code))
        self._stops += 1
        if self._stops > 1:
            sys.stderr.write(
                "exporter: stopping now; committed records are safe, the rest is fetched next run\n"
            )
            sys.stderr.flush()
            os._exit(int(code))
        loop.call_soon_threadsafe(listener, sig)

    def __repr__(self) -> str:
        return f"<ProcessSignals listening={self._listener is not None} stops={self._stops}>"


def _drain(wake: socket.socket) -> None:
    """Empty the wakeup socket; the signal itself reaches the handler on its own."""
    with contextlib.suppress(OSError):
        while wake.recv(512):
            pass
