"""Signals at any moment of a real process: SIGHUP never kills, a stop after the fetch loop keeps the
outcome, and Ctrl-C followed by a report that cannot be written shows the disk's error (exit 4)."""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeServerHandle
from on_disk import read_records, read_summary, write_manifest
from runs import TOKEN, cli_env, export_args, spawn
from threaded_http import serving

from exporter.signals import ProcessSignals


def _finish(process: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr.decode()


def _token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o600)
    return path


def _token_options(tmp_path: Path, with_token_file: bool) -> tuple[list[str], dict[str, str]]:
    if with_token_file:
        return ["--token-file", str(_token_file(tmp_path))], cli_env(None)
    return [], cli_env()


def test_sighup_outside_a_run_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """Between the command's start and the run (reading the options) a SIGHUP is only a warning."""
    with caplog.at_level(logging.WARNING, "exporter"), ProcessSignals().installed():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)  # the handler runs at the next bytecode; this gives it one
    assert "SIGHUP ignored" in caplog.text


@pytest.mark.parametrize("with_token_file", [False, True], ids=["env-token", "token-file"])
def test_sighup_before_the_fetch_loop_does_not_kill(
    api: FakeServerHandle, tmp_path: Path, with_token_file: bool
) -> None:
    """A SIGHUP while the run opens its manifest (a FIFO the test holds) is handled: the run completes."""
    manifest = tmp_path / "ids.fifo"
    os.mkfifo(manifest)
    options, env = _token_options(tmp_path, with_token_file)
    process = spawn(*export_args(manifest, tmp_path / "out", api.url, "--format", "text", *options), env=env)
    with open(manifest, "w") as writer:  # returns once the run has opened the FIFO to read it
        process.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        writer.write("a\nb\n")
    code, stderr = _finish(process)
    assert code == 0, stderr
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == ["a", "b"]
    assert read_summary(tmp_path / "out")["status"] == "complete"


@pytest.mark.parametrize("with_token_file", [False, True], ids=["env-token", "token-file"])
def test_sighup_mid_run_does_not_kill(api: FakeServerHandle, tmp_path: Path, with_token_file: bool) -> None:
    """A SIGHUP while records are fetched: logged (the token file read again, or ignored), exit 0."""
    api.configure(latency_ms=20)
    ids = [f"h-{i}" for i in range(200)]
    options, env = _token_options(tmp_path, with_token_file)
    process = spawn(
        *export_args(write_manifest(tmp_path / "ids.txt", ids), tmp_path / "out", api.url, *options), env=env
    )
    deadline = time.monotonic() + 20
    while api.stats()["requests_total"] < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGHUP)
    code, stderr = _finish(process)
    assert code == 0, stderr
    assert ("again: the same token" if with_token_file else "SIGHUP ignored") in stderr
    assert len(read_records(tmp_path / "out")) == len(ids)


class HeldGateway:
    """A Pushgateway that takes the push and answers only when the test says so."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gateway.arrived.set()
                gateway.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.handler = Handler


@pytest.fixture
def held_gateway() -> Iterator[tuple[HeldGateway, str]]:
    gateway = HeldGateway()
    with serving(gateway.handler) as url:
        try:
            yield gateway, url
        finally:
            gateway.release.set()


@pytest.mark.parametrize(
    ("signals", "with_token_file"),
    [((signal.SIGHUP,), False), ((signal.SIGHUP,), True), ((signal.SIGTERM,), False)],
    ids=["sighup-env-token", "sighup-token-file", "sigterm"],
)
def test_a_signal_while_the_run_ends_keeps_its_outcome(
    api: FakeServerHandle,
    tmp_path: Path,
    held_gateway: tuple[HeldGateway, str],
    signals: tuple[signal.Signals, ...],
    with_token_file: bool,
) -> None:
    """Once the fetch loop is over (the reports written, the metrics push under way) a SIGHUP or a
    first SIGTERM changes nothing: the run exits with its own code, 0, and says so."""
    gateway, gateway_url = held_gateway
    options, env = _token_options(tmp_path, with_token_file)
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b", "c"])
    args = export_args(manifest, tmp_path / "out", api.url, "--metrics-push", gateway_url, *options)
    process = spawn(*args, env=env)
    assert gateway.arrived.wait(30), "the push never came"
    for signum in signals:
        process.send_signal(signum)
    time.sleep(0.3)
    gateway.release.set()
    code, stderr = _finish(process)
    assert code == 0, stderr
    assert "exported 3 recordings" in stderr
    assert read_summary(tmp_path / "out")["exit_code"] == 0
    if signal.SIGTERM in signals:
        assert "SIGTERM: the run is over; writing its reports" in stderr


def test_ctrl_c_then_a_report_that_cannot_be_written_shows_the_disk_error(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """SIGINT, then summary.json cannot be written (a directory stands in its place): exit 4, and the
    line printed is the archive's error, not the interruption."""
    api.configure(latency_ms=20)
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "ids.txt", [f"r-{i}" for i in range(300)])
    process = spawn(*export_args(manifest, out, api.url, "--concurrency", "2"))
    deadline = time.monotonic() + 20
    while api.stats()["requests_total"] < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    (out / "summary.json" / "in-the-way").mkdir(parents=True)
    process.send_signal(signal.SIGINT)
    code, stderr = _finish(process)
    assert code == 4, stderr
    assert f"cannot write the run's reports in {out}" in stderr
    assert "summary.json" in stderr
    error, counts = stderr.strip().splitlines()[-2:]
    assert "cannot write the run's reports" in error, stderr
    exported = len(read_records(out))
    assert exported > 0
    assert counts.startswith(f"exporter: exported {exported} recordings to {out} (summary.json not written)")
    checkpoint = (out / "checkpoint.ndjson").read_text().splitlines()
    assert json.loads(checkpoint[-1])["t"] == "end"
