"""What every scenario is given: the setup resolved from the command line, the fake API in its own process."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks.common import SCRIPTS, TOKEN, BenchError
from benchmarks.contenders import Workload
from benchmarks.measure import tail


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setup:
    """Everything a scenario needs, resolved once from the command line."""

    args: argparse.Namespace
    nginx: str
    exporter: str
    tools: dict[str, str]
    workdir: Path
    cache: Path
    runs: Path

    def workload(
        self,
        *,
        base_url: str,
        manifest: Path,
        ids: tuple[str, ...] = (),
        total_bytes: int = 0,
        runs_dir: Path | None = None,
    ) -> Workload:
        """A workload at the command line's concurrency, with the tools this setup found."""
        return Workload(
            base_url=base_url,
            manifest=manifest,
            ids=ids,
            total_bytes=total_bytes,
            concurrency=self.args.concurrency,
            runs_dir=runs_dir or self.runs,
            exporter=self.exporter,
            tools=self.tools,
        )


@contextlib.contextmanager
def fake_api_server(
    args: argparse.Namespace,
    workdir: Path,
    *,
    latency_ms: float | None = None,
    large_fraction: float | None = None,
    extra: Sequence[str] = (),
) -> Iterator[tuple[str, int]]:
    """`scripts/fake_api.py --latency-ms L [extra flags]` in its own process: (base URL, pid).

    latency_ms and large_fraction default to the command line's.
    """
    port_file = workdir / "fake-api.url"
    port_file.unlink(missing_ok=True)
    latency = args.latency_ms if latency_ms is None else latency_ms
    large = args.large_fraction if large_fraction is None else large_fraction
    argv = [
        sys.executable, str(SCRIPTS / "fake_api.py"), "--port", "0", "--port-file", str(port_file),
        "--token", TOKEN, "--latency-ms", f"{latency:g}", "--seed", str(args.seed),
        "--large-fraction", f"{large:g}", "--large-bytes", str(args.large_bytes), *extra,
    ]  # fmt: skip
    with open(workdir / "fake-api.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the fake API did not start: {tail(workdir / 'fake-api.log')}")
            time.sleep(0.05)
        yield port_file.read_text().strip(), proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
