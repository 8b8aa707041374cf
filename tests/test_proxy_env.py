"""proxy_env: NO_PROXY matching as curl does it (plus ports), and which proxy a run uses. Pure functions."""

from __future__ import annotations

import re

import pytest

from exporter.errors import UsageError
from exporter.transport.proxy_env import choose_proxy, no_proxy_matches


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        # host names: the name itself and its subdomains, never a mere suffix
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        ("example.com", "nonexample.com", 443, False),
        ("example.com", "example.com.evil.net", 443, False),
        ("api.example.com", "example.com", 443, False),
        # a leading dot (or *.) is ignored, as curl does: the domain itself matches too
        (".example.com", "example.com", 443, True),
        (".example.com", "a.b.example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        # case and trailing dots do not matter
        ("EXAMPLE.com.", "api.Example.COM", 443, True),
        ("example.com", "api.example.com.", 443, True),
        # lists: commas, blanks, empty entries
        ("other.org,example.com", "api.example.com", 443, True),
        (" other.org , ,example.com ", "api.example.com", 443, True),
        ("other.org example.com", "api.example.com", 443, True),
        ("other.org,another.org", "api.example.com", 443, False),
        ("", "api.example.com", 443, False),
        ("   ", "api.example.com", 443, False),
        # `*` alone: everything; inside a list it is no wildcard (curl)
        ("*", "api.example.com", 443, True),
        (" * ", "10.1.2.3", 443, True),
        ("*,other.org", "api.example.com", 443, False),
        # ports: an entry with a port matches that port only
        ("example.com:8443", "api.example.com", 8443, True),
        ("example.com:8443", "api.example.com", 443, False),
        ("example.com:notaport", "example.com", 443, False),
        ("10.1.2.3:8443", "10.1.2.3", 8443, True),
        ("10.1.2.3:8443", "10.1.2.3", 443, False),
        ("[::1]:8443", "::1", 8443, True),
        ("[::1]:8443", "::1", 443, False),
        # IP literals: the address, or a CIDR range holding it; names are never resolved
        ("10.1.2.3", "10.1.2.3", 443, True),
        ("10.1.2.3", "10.1.2.4", 443, False),
        ("10.0.0.0/8", "10.200.3.4", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("192.168.0.0/16,172.16.0.0/12", "172.20.1.1", 443, True),
        ("10.1.2.3/8", "10.9.9.9", 443, True),  # host bits set: the range still counts (curl)
        ("10.0.0.0/8", "ten.example", 443, False),
        ("127.0.0.1", "localhost", 443, False),
        ("localhost", "127.0.0.1", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]", "::1", 443, True),
        ("fd00::/8", "fd12:3456::1", 443, True),
        ("fd00::/8", "10.0.0.1", 443, False),
        ("10.0.0.0/8", "::ffff:10.0.0.1", 443, False),
        ("10.0.0.0/99", "10.0.0.1", 443, False),  # not a range: no match, no crash
        ("1.2.3", "1.2.3.4", 443, False),
    ],
)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, direct: bool) -> None:
    """Each row: does NO_PROXY send host:port around the proxy?"""
    assert no_proxy_matches(no_proxy, host, port) is direct


ENV_PROXY = ("HTTPS_PROXY", "http://proxy.corp:3128")


def test_the_environment_proxy_is_used_for_https() -> None:
    choice = choose_proxy(base_url="https://api.example.com", environment=ENV_PROXY)
    assert choice.proxy is not None
    assert (choice.proxy.url, choice.proxy.source) == ("http://proxy.corp:3128", "HTTPS_PROXY")


def test_proxy_option_wins_over_the_environment_and_none_ignores_it() -> None:
    option = choose_proxy(base_url="https://api.example.com", option="http://p2:8080", environment=ENV_PROXY)
    assert option.proxy is not None
    assert (option.proxy.url, option.proxy.source) == ("http://p2:8080", "--proxy")
    assert (
        choose_proxy(base_url="https://api.example.com", option="none", environment=ENV_PROXY).proxy is None
    )
    assert (
        choose_proxy(base_url="https://api.example.com", option="NONE", environment=ENV_PROXY).proxy is None
    )


def test_no_proxy_applies_to_the_option_and_the_environment() -> None:
    """As in curl, NO_PROXY bypasses --proxy too; the note names the variable."""
    for option in (None, "http://p2:8080"):
        choice = choose_proxy(
            base_url="https://api.example.com:8443",
            option=option,
            environment=ENV_PROXY,
            no_proxy=("no_proxy", "example.com:8443"),
        )
        assert choice.proxy is None
        assert choice.note is not None
        assert "no_proxy matches api.example.com" in choice.note


def test_plain_http_is_never_proxied() -> None:
    """The proxy would read the token: the environment's proxy is skipped (saying so), --proxy refused."""
    choice = choose_proxy(base_url="http://127.0.0.1:8080", environment=ENV_PROXY)
    assert choice.proxy is None
    assert choice.note is not None
    assert "read the token" in choice.note
    with pytest.raises(UsageError, match="https --base-url only"):
        choose_proxy(base_url="http://127.0.0.1:8080", option="http://proxy.corp:3128")


def test_a_malformed_variable_that_does_not_apply_stops_nothing() -> None:
    broken = ("HTTPS_PROXY", "socks5://proxy.corp:1080")
    assert choose_proxy(base_url="http://127.0.0.1:8080", environment=broken).proxy is None
    bypassed = choose_proxy(base_url="https://a.example", environment=broken, no_proxy=("NO_PROXY", "*"))
    assert bypassed.proxy is None
    with pytest.raises(
        UsageError, match=re.escape("HTTPS_PROXY 'socks5://proxy.corp:1080' is not an http://")
    ):
        choose_proxy(base_url="https://a.example", environment=broken)
