"""The errors the exporter raises, and the exit code each one ends a run with.

    ExporterError                  base; carries the process exit code
    ├── UsageError          (2)    bad option, missing token, unusable manifest
    │   ├── ManifestError   (2)    the manifest cannot be read at all
    │   └── ConnectionSetupError (2)  the proxy wants credentials, the API a client certificate
    ├── AuthRefused         (3)    the API refused the token (401/403)
    └── ArchiveError        (4)    the archive directory cannot be used
        ├── ArchiveLocked   (4)    another run holds the archive
        ├── ArchiveCorrupt  (4)    the checkpoint or a records file is damaged
        └── ArchiveUnsafe   (4)    a link or a foreign file where an archive file belongs

Per-request problems (a 404, a 503, an HTML page with status 200) are not
exceptions that reach the user: they become `Failure` results with a `Reason`
and end up in `failed.ndjson`. `BadResponse` and `TransportError` are the two
exceptions that carry them from the parsing and I/O layers to the retry loop;
their messages are capped as they are made (`bounded.capped`), since a server's
bytes go into them and they are logged and stored.

Every message names the thing that went wrong and what the user can do, and
never contains the token.
"""

from __future__ import annotations

import enum

from .bounded import capped


class ExitCode(enum.IntEnum):
    """Process exit codes; documented in the README and in `--help`."""

    OK = 0
    INCOMPLETE = 1
    USAGE = 2
    AUTH = 3
    ARCHIVE = 4
    BUDGET = 5
    API_UNAVAILABLE = 6
    INTERNAL = 70
    SIGINT = 130
    SIGTERM = 143


class ExporterError(Exception):
    """An error that ends the run with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(ExporterError):
    """The command line or the environment does not describe a runnable export."""

    exit_code = ExitCode.USAGE


class ManifestError(UsageError):
    """The manifest cannot be read at all (missing file, CSV without an `id` column)."""


class ConnectionSetupError(UsageError):
    """The proxy or the API refuses the connection as configured: retrying cannot help.

    A 407 from the proxy, or an API that demands a client certificate we lack
    (or refuses ours). Raised at the first request, so the run stops with exit 2
    and no id is marked failed.
    """


class AuthRefused(ExporterError):
    """The API answered 401 or 403: every further request would be refused too."""

    exit_code = ExitCode.AUTH


class ArchiveError(ExporterError):
    """The archive directory cannot be opened, read or written."""

    exit_code = ExitCode.ARCHIVE


class ArchiveLocked(ArchiveError):
    """Another exporter process is writing to the same archive."""


class ArchiveCorrupt(ArchiveError):
    """The checkpoint or a records file does not match what was committed.

    When the damage is one line of the checkpoint, `line` is its number and
    `damage` what is wrong with it, so a caller can point at it (`exporter
    verify` does) without parsing the message.
    """

    def __init__(self, message: str, *, line: int | None = None, damage: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.damage = damage


class ArchiveUnsafe(ArchiveError):
    """The archive directory or an entry in it could redirect writes: a link, a FIFO, another's directory."""


class Reason(enum.StrEnum):
    """Why an id did not end up in the archive; the `reason` field of `failed.ndjson`."""

    NOT_FOUND = "not_found"
    INVALID_ID = "invalid_id"
    BAD_MANIFEST_LINE = "bad_manifest_line"
    AUTH = "auth"
    HTTP_ERROR = "http_error"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    NETWORK = "network"
    BAD_RESPONSE = "bad_response"


class BadResponse(Exception):
    """A 200 response whose body is not a recording for the id that was asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(capped(message))


class Cause(enum.StrEnum):
    """Which part of the way to the API failed: what an outage is blamed on (summary.json's
    `pacing.halt.cause`)."""

    API = "api"
    #: The proxy: no connection to it, no tunnel, or an answer to CONNECT that is not one.
    PROXY = "proxy"
    #: The TLS handshake with the API (through the proxy, if there is one).
    TLS = "tls"


class TransportError(Exception):
    """A request that produced no complete response: timeout, reset, truncated body.

    Most are worth another attempt; `retryable=False` marks those that would
    fail the same way again (a body over --max-response-bytes). `down` says
    whether, met by every request, it would mean the API is down (refused,
    unreachable, timing out, cut off) rather than misconfigured (a certificate
    we do not trust) or misbehaving (malformed HTTP). `connected` is False when
    no connection to the API was made, so the request (and its id) never left:
    such a failure says nothing about the id. `cause` names the hop that failed.
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        retryable: bool = True,
        down: bool | None = None,
        connected: bool = True,
        cause: Cause = Cause.API,
    ) -> None:
        super().__init__(capped(message))
        self.reason = reason
        self.retryable = retryable
        self.down = retryable and reason in (Reason.NETWORK, Reason.TIMEOUT) if down is None else down
        self.connected = connected
        self.cause = cause
