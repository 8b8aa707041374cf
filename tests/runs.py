"""Ways to run the exporter in a test: in this process (`export`) or as a real process (`cli`, `spawn`).

In-process runs are fast and show behaviour; real processes show exit codes, signals and crashes.
Plain functions and constants, imported by the tests that need them (fixtures live in conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

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
