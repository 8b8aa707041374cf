"""Shared fixtures: the project's fake API on loopback, a throwaway CA, an S3-compatible server.

The fake API (`scripts/fakeapi/`) runs as a real HTTP server on its own
thread for the whole session; each test gets it reset, with the default
configuration, through the `api` fixture. Tests take fixtures only through
pytest; the ways to run the exporter (`runs.py`) and to read what it wrote
(`on_disk.py`) are plain modules that tests import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeapi
import pytest
import trustme
from runs import TOKEN


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs ministack is `slow`: starting it alone takes seconds to a minute."""
    for item in items:
        if "s3_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def _server() -> Iterator[fakeapi.FakeServerHandle]:
    with fakeapi.running_server(fakeapi.ServerConfig(token=TOKEN)) as handle:
        yield handle


@pytest.fixture
def api(_server: fakeapi.FakeServerHandle) -> Iterator[fakeapi.FakeServerHandle]:
    """The fake API, reset to its defaults with the test token."""
    _server.configure(**_defaults())
    _server.reset()
    yield _server
    _server.configure(**_defaults())


def _defaults() -> dict[str, Any]:
    return fakeapi.config_to_json(fakeapi.ServerConfig(token=TOKEN))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority for the TLS tests."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """`ca`'s certificate as a PEM file, as --ca-cert takes it."""
    path = tmp_path / "company-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


# -- object storage (tests/test_s3_*.py) ---------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ministack on loopback for the whole session (its own virtualenv, `scripts/ministack_server.py`).

    Skipped, with the reason, only when it cannot be installed here; under CI
    (`CI=true`, where .ci/run installs it first) that is a failure instead.
    """
    import ministack_server

    try:
        with ministack_server.running(tmp_path_factory.mktemp("ministack")) as server:
            yield server.endpoint
    except ministack_server.Unavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"ministack (the S3-compatible test server) is not available: {exc}")
