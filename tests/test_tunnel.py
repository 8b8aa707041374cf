"""transport.tunnel: which proxy URLs are taken, and what is kept of them (never the credentials in sight)."""

from __future__ import annotations

import re

import pytest

from exporter.errors import UsageError
from exporter.transport.tunnel import parse_proxy_url


@pytest.mark.parametrize(
    ("proxy", "fragment"),
    [
        ("http://user:pw@proxy.example:3128", "credentials"),
        ("http://proxy.example", "needs the proxy's port"),
        ("https://proxy.example:3128", "http:// proxy URL"),
        ("socks5://proxy.example:1080", "http:// proxy URL"),
        ("http://proxy.example:3128/path", "only http://HOST:PORT"),
        ("http://[proxy.example:3128", "http:// proxy URL"),
        ("http://[proxy]:3128", "http:// proxy URL"),
        ("http://user:pw@[proxy:3128", "not shown"),
    ],
)
def test_proxy_urls_that_would_leak_or_misroute_are_refused(proxy: str, fragment: str) -> None:
    """Each is a UsageError (exit 2) that says what is accepted, never echoes a password, and is never
    urllib's ValueError (a traceback) for a bracket it cannot parse."""
    with pytest.raises(UsageError, match=re.escape(fragment)) as caught:
        parse_proxy_url(proxy, source="--proxy")
    assert "pw" not in str(caught.value)


def test_a_proxy_url_gives_host_and_port() -> None:
    parsed = parse_proxy_url("http://[::1]:3128/", source="--proxy")
    assert (parsed.host, parsed.port, parsed.credentials) == ("::1", 3128, None)
    assert parse_proxy_url("proxy.corp:8080", source="HTTPS_PROXY").url == "http://proxy.corp:8080"


def test_credentials_in_an_environment_proxy_url_are_decoded_and_never_shown() -> None:
    """`http://user:p%40ss@host:port` from the environment: Basic credentials, percent-decoded, hidden."""
    parsed = parse_proxy_url("http://ops:p%40ss%3Aw0rd@proxy.corp:3128", source="HTTPS_PROXY")
    assert parsed.credentials is not None
    assert parsed.credentials.reveal() == "ops:p@ss:w0rd"
    assert (parsed.url, parsed.credentials_from) == ("http://proxy.corp:3128", "HTTPS_PROXY")
    assert "w0rd" not in repr(parsed)
    with pytest.raises(UsageError) as caught:
        parse_proxy_url("https://ops:s3cr3t@proxy.corp:3128", source="HTTPS_PROXY")
    assert "s3cr3t" not in str(caught.value)
