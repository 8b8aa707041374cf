"""Which proxy, if any, reaches the API: `--proxy`, else `$HTTPS_PROXY`, minus `$NO_PROXY`, as curl decides.

Pure functions over the strings `cli/` read from argv and the environment,
so every rule is a table test. The decisions:

- `--proxy URL` wins over the environment; `--proxy none` ignores it.
- Only an https base URL is ever proxied: a plain-http request would hand the
  token to the proxy, so `$HTTPS_PROXY` does not apply to it and `--proxy`
  with it is refused.
- `$NO_PROXY` applies to both, as in curl (`lib/noproxy.c`): `*` alone
  matches every host; otherwise a comma-separated list whose entries match a
  host name and its subdomains (a leading `.` or `*.` is ignored, so
  `.example.com` matches `example.com` too; case and a trailing dot do not
  matter); an IP literal host matches entries that are that address or a CIDR
  range containing it (names are not resolved). Beyond curl, an entry may end
  in `:PORT` and then matches that port only (curl never matches such an
  entry; Go and Python honour it), and blanks separate entries like commas.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from exporter.config import ProxySettings, Secret
from exporter.errors import UsageError

from .tunnel import parse_proxy_url

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SEPARATORS = re.compile(r"[,\s]+")


def _host_ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None] | None:
    """`host:port` -> (host, port); bare IPv6 addresses keep their colons; None if the port is not one."""
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            return None
        rest = entry[end + 1 :]
        if not rest:
            return entry[1:end], None
        if not rest.startswith(":") or not rest[1:].isdigit():
            return None
        return entry[1:end], int(rest[1:])
    if entry.count(":") != 1:
        return entry, None  # a name, an IPv4 address, or a bare IPv6 address
    name, _, port = entry.partition(":")
    if not port.isdigit() or int(port) > 65535:
        return None
    return name, int(port)


def _name_matches(host: str, entry: str) -> bool:
    pattern = entry.lower().rstrip(".")
    pattern = pattern.removeprefix("*").removeprefix(".")
    if not pattern:
        return False
    return host == pattern or host.endswith("." + pattern)


def _ip_matches(ip: IpAddress, entry: str) -> bool:
    try:
        if "/" in entry:
            network = ipaddress.ip_network(entry, strict=False)
            return network.version == ip.version and ip in network
        return ipaddress.ip_address(entry) == ip
    except ValueError:
        return False


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """Whether a `$NO_PROXY` value says to reach `host:port` directly (see the module's rules)."""
    value = no_proxy.strip()
    if value == "*":
        return True
    ip = _host_ip(host)
    name = host.lower().rstrip(".")
    for raw in _SEPARATORS.split(value):
        split = _split_port(raw) if raw else None
        if split is None:
            continue
        entry, entry_port = split
        if entry_port is not None and entry_port != port:
            continue
        if ip is not None and _ip_matches(ip, entry):
            return True
        if ip is None and _host_ip(entry) is None and "/" not in entry and _name_matches(name, entry):
            return True
    return False


class ProxyChoice(NamedTuple):
    """The proxy to use (None: connect directly) and, for the log, why a configured one is not used."""

    proxy: ProxySettings | None
    note: str | None = None


def choose_proxy(
    *,
    base_url: str,
    option: str | None = None,
    environment: tuple[str, str] | None = None,
    no_proxy: tuple[str, str] | None = None,
) -> ProxyChoice:
    """Apply the module's decisions to what argv and the environment hold.

    `option` is `--proxy`'s value (`none` or a URL), `environment` the name and
    value of `$https_proxy`/`$HTTPS_PROXY`, `no_proxy` those of
    `$no_proxy`/`$NO_PROXY`. A proxy URL is parsed only when it would be used,
    so a malformed variable that does not apply stops nothing.
    """
    if option is not None and option.strip().lower() == "none":
        return ProxyChoice(None)
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme != "https":
        if option is not None:
            raise UsageError(
                "--proxy works with an https --base-url only: through a proxy, plain http would show "
                "the token to the proxy"
            )
        if environment is not None:
            note = f"not using the proxy in {environment[0]}: a proxy would read the token over plain http"
            return ProxyChoice(None, note)
        return ProxyChoice(None)
    source, text = ("--proxy", option) if option is not None else environment or ("", "")
    if not text:
        return ProxyChoice(None)
    if no_proxy is not None and no_proxy_matches(no_proxy[1], host, parts.port or 443):
        return ProxyChoice(None, f"not using the proxy in {source}: {no_proxy[0]} matches {host}")
    return ProxyChoice(parse_proxy_url(text, source=source))


def with_credentials(proxy: ProxySettings, credentials: Secret, source: str) -> ProxySettings:
    """The proxy with credentials from `source` (e.g. `--proxy-auth-file`), replacing any from its URL."""
    return ProxySettings(
        host=proxy.host,
        port=proxy.port,
        credentials=credentials,
        source=proxy.source,
        credentials_from=source,
    )
