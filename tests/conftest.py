"""Shared fixtures: the project's fake API on loopback, and ways to run the exporter.

The fake API (`scripts/fakeapi/`) runs as a real HTTP server on its own
thread for the whole session; each test gets it reset, with the default
configuration, through the `api` fixture. The exporter runs either in-process
(`export`, fast, for behaviour) or as a real `python -m exporter` process
(`cli`, for exit codes, signals and crashes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeapi
import pytest
import trustme

from exporter.config import (
    ArchiveSettings,
    ExportConfig,
    HttpSettings,
    LimitSettings,
    ManifestSource,
    RetrySettings,
    Secret,
)
from exporter.pipeline import RunOutcome, run_export

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-Zq81"


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


def write_manifest(path: Path, ids: Sequence[str]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return path


def make_config(
    manifest: Path | None,
    out: Path,
    base_url: str,
    *,
    token: str = TOKEN,
    concurrency: int = 8,
    rate: float = 0.0,
    max_attempts: int = 4,
    timeout_s: float = 5.0,
    **changes: Any,
) -> ExportConfig:
    """A configuration for tests: no rate limit and near-zero backoff unless asked."""
    config = ExportConfig(
        manifest=ManifestSource(path=manifest),
        http=HttpSettings(base_url=base_url, token=Secret(token), timeout_s=timeout_s),
        archive=ArchiveSettings(out_dir=out),
        retry=RetrySettings(max_attempts=max_attempts, backoff_base_s=0.01, backoff_cap_s=0.05),
        limits=LimitSettings(concurrency=concurrency, rate_per_s=rate, burst=max(1, int(rate))),
    )
    return replace(config, **changes)


async def export(config: ExportConfig) -> RunOutcome:
    """Run the exporter in this process (no signal handlers)."""
    return await run_export(config)


def read_records(out: Path) -> list[dict[str, Any]]:
    """Every record of an uncompressed archive, parsed with Python's json, in file order."""
    records: list[dict[str, Any]] = []
    for path in sorted(out.glob("records-*.ndjson")):
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle)
    return records


def read_failed(out: Path) -> dict[str, dict[str, Any]]:
    path = out / "failed.ndjson"
    if not path.exists():
        return {}
    return {entry["id"]: entry for entry in map(json.loads, path.read_text().splitlines())}


def read_summary(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return result


def export_args(manifest: Path, out: Path, url: str, *extra: str) -> list[str]:
    """`exporter export` arguments for a test run: no client-side rate limit, no progress bar."""
    return [
        "export",
        str(manifest),
        "--base-url",
        url,
        "--out",
        str(out),
        "--rate",
        "0",
        "--no-progress",
        *extra,
    ]


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


def cli_env(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EXPORTER_TOKEN"}
    if token is not None:
        env["EXPORTER_TOKEN"] = token
    env.update(extra)
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m exporter ARGS` as a real process and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env=cli_env() if env is None else env,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m exporter ARGS` without waiting (for signal and crash tests)."""
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        env=cli_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )


# Runs its arguments and writes the child's peak RSS (KiB) to the file named first. A process
# started from the test process itself would report the test process's RSS at the fork
# (Linux carries the parent's high-water mark across vfork and exec); this small, freshly
# exec'd Python forks the exporter from its own, small memory.
PEAK_RSS_OF = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def cli_peak_rss(
    *args: str, report: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], int]:
    """`cli(*args)`, and the exporter process's own peak RSS in KiB (written to `report` on the way)."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF, str(report), sys.executable, "-m", "exporter", *args],
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    return result, int(report.read_text())


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
