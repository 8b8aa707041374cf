"""One GET per id against the API's own origin: the only module that knows aiohttp.

Policy (what a status means, whether to retry) is `retry.py`'s; this module
owns the I/O and translates every aiohttp and socket exception, at this one
boundary, into a `TransportError` with a reason and a message fit for a user.

The token travels only in the `Authorization` header of requests to the
configured origin: redirects are never followed (a 3xx comes back as a status
for `retry.classify_status` to refuse), no cookies are kept, proxies from the
environment are not used, and no message built here contains it.
"""

from __future__ import annotations

import ipaddress
import socket
from types import TracebackType
from typing import NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from .config import HttpSettings
from .errors import Reason, TransportError, UsageError

RECORDINGS_PATH = "/v1/core/recordings/"


class RawResponse(NamedTuple):
    """A complete response: the body has been read in full."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def check_base_url(text: str, *, allow_insecure_http: bool = False) -> str:
    """The base URL normalised (no trailing slash), or UsageError saying what to fix.

    Plain http would send the token in clear text, so it is refused for
    anything but this machine unless the user insists.
    """
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url {text!r} is not an http(s) URL such as https://api.example.com")
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


def recording_url(base_url: str, record_id: str, query: str) -> URL:
    """The URL for one id: the id percent-encoded as a single path segment."""
    tail = f"?{query}" if query else ""
    return URL(f"{base_url}{RECORDINGS_PATH}{quote(record_id, safe='')}{tail}", encoded=True)


def encode_query(pairs: tuple[tuple[str, str], ...]) -> str:
    """The query string sent with every request, encoded once."""
    return urlencode(pairs, quote_via=quote)


class RecordingsClient:
    """An aiohttp session for one origin and one token; use as an async context manager."""

    __slots__ = ("_base", "_query", "_session", "_settings", "_timeout_s", "concurrency")

    def __init__(self, settings: HttpSettings, *, concurrency: int) -> None:
        self._settings = settings
        self._base = settings.base_url
        self._query = encode_query(settings.query)
        self._timeout_s = settings.timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.concurrency = concurrency

    async def __aenter__(self) -> RecordingsClient:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=0,
            ttl_dns_cache=300,
            family=socket.AF_UNSPEC,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "Authorization": f"Bearer {self._settings.token.reveal()}",
                "Accept": "application/json",
                "User-Agent": self._settings.user_agent,
            },
            timeout=aiohttp.ClientTimeout(
                total=self._settings.timeout_s, sock_connect=self._settings.connect_timeout_s
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, record_id: str) -> RawResponse:
        """GET one recording and read its whole body; TransportError if that fails."""
        session = self._session
        if session is None:
            raise RuntimeError("RecordingsClient used outside `async with`")
        url = recording_url(self._base, record_id, self._query)
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = await response.read()
                return RawResponse(response.status, response.headers, body)
        except TimeoutError as exc:
            raise TransportError(
                Reason.TIMEOUT, f"no complete response within {self._timeout_s:g}s (--timeout)"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise TransportError(Reason.NETWORK, f"the response body was cut off ({_cause(exc)})") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise TransportError(Reason.NETWORK, "the server closed the connection early") from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                Reason.NETWORK, f"cannot connect to {exc.host}:{exc.port} ({_cause(exc)})"
            ) from exc
        except aiohttp.ClientResponseError as exc:
            raise TransportError(Reason.NETWORK, f"malformed HTTP response ({exc.message})") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(Reason.NETWORK, f"{type(exc).__name__}: {_cause(exc)}") from exc
        except OSError as exc:
            raise TransportError(Reason.NETWORK, f"network error: {exc.strerror or exc}") from exc


def _cause(exc: BaseException) -> str:
    """A short description of the lowest-level cause of an aiohttp error."""
    inner: BaseException = exc
    while inner.__cause__ is not None and inner.__cause__ is not inner:
        inner = inner.__cause__
    text = str(inner) or type(inner).__name__
    return text if len(text) <= 200 else text[:197] + "..."
