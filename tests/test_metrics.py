"""Prometheus metrics: the text as prometheus_client parses it, the file, the values, the Pushgateway push."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeServerHandle
from on_disk import read_summary, write_manifest
from prometheus_client.parser import text_string_to_metric_families
from runs import TOKEN, cli, cli_env, export, make_config
from scripted import Conversation, scripted

from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, MetricsSettings
from exporter.metrics import Snapshot, grouping_path, render

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, tuple[str, str]]]:
    """Every sample by (name, labels), and every family's (type, help), as prometheus_client reads them."""
    samples: Samples = {}
    families: dict[str, tuple[str, str]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = (family.type, family.documentation)
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, key
            samples[key] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def snapshot(**changes: Any) -> Snapshot:
    base = Snapshot(
        exported=7,
        answers={"2xx": 7, "3xx": 0, "4xx": 1, "5xx": 2, "429": 3, "error": 1},
        retries=6,
        failed={"not_found": 1},
        bytes_written=12345,
        rate_limit_per_s=2.5,
        paused_s={"retry_after": 1.25},
        in_flight=2,
        start_epoch=1_700_000_000.5,
    )
    return replace(base, **changes)


def test_render_is_what_prometheus_client_parses_with_hostile_label_values() -> None:
    """Every family has HELP and TYPE; values and label values (quotes, backslashes, newlines) survive."""
    hostile = 'a "quoted" \\ back\nslash/é'
    text = render(snapshot(labels=(("job", "nightly"), ("note", hostile)), rate_limit_per_s=float("inf")))
    samples, families = parse(text)
    assert families["exporter_records_exported"][0] == "counter"
    assert families["exporter_in_flight"][0] == "gauge"
    assert all(help_text for _, help_text in families.values())
    for (_, labels), _ in samples.items():
        assert ("note", hostile) in labels
        assert ("job", "nightly") in labels
    assert value(samples, "exporter_records_exported_total") == 7
    assert value(samples, "exporter_requests_total", code="429") == 3
    assert value(samples, "exporter_requests_total", code="error") == 1
    assert value(samples, "exporter_failed_ids", reason="not_found") == 1
    assert value(samples, "exporter_failed_ids", reason="timeout") == 0  # every reason, zeros included
    assert value(samples, "exporter_paused_seconds_total", reason="retry_after") == 1.25
    assert value(samples, "exporter_paused_seconds_total", reason="outage") == 0
    assert value(samples, "exporter_rate_limit_per_second") == float("inf")
    assert value(samples, "exporter_run_start_timestamp_seconds") == 1_700_000_000.5
    # While the run lasts there is no end, no exit code and no success yet.
    assert not {"exporter_run_end_timestamp_seconds", "exporter_run_success"} & set(families)
    ended, _ = parse(render(snapshot(end_epoch=1_700_000_100.0, exit_code=5)))
    assert value(ended, "exporter_run_exit_code") == 5
    assert value(ended, "exporter_run_success") == 0
    assert value(ended, "exporter_run_end_timestamp_seconds") == 1_700_000_100.0


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_metrics_file_agrees_with_summary_and_the_server(api: FakeServerHandle, tmp_path: Path) -> None:
    """After a real run with retries, 429s, 404s and invalid ids, the file's values are summary.json's
    and the fake API's own count of what it answered."""
    api.configure(fail_first={"flaky-": ["500", 2], "rl-": ["429", 1]}, retry_after_s=0)
    ids = [f"r{i}" for i in range(30)] + ["flaky-1", "flaky-2", "rl-1", "rl-2", "missing-1", "../x", "r1"]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    prom = tmp_path / "textfile" / "exporter.prom"
    prom.parent.mkdir()
    out = tmp_path / "out"
    result = cli(
        "export", str(manifest), "--base-url", api.url, "--out", str(out), "--rate", "0",
        "--compress", "zstd", "--metrics-file", str(prom),
        "--metrics-label", "job=nightly", "--metrics-label", "shard=0/1",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = read_summary(out)
    counts = summary["counts"]
    samples, _ = parse(prom.read_text())
    assert all({("job", "nightly"), ("shard", "0/1")} <= labels for _, labels in samples)
    assert value(samples, "exporter_records_exported_total") == counts["exported"] == 34
    assert value(samples, "exporter_retries_total") == counts["retries"] == 6
    requests = {
        code: value(samples, "exporter_requests_total", code=code) for code in ("2xx", "4xx", "5xx", "429")
    }
    assert sum(requests.values()) == counts["requests"]
    assert requests["429"] == counts["rate_limited"] == 2
    served: dict[str, int] = {}
    for status, n in api.stats()["by_status"].items():
        key = "429" if status == "429" else f"{status[0]}xx"
        served[key] = served.get(key, 0) + n
    assert {k: v for k, v in requests.items() if v} == served
    assert value(samples, "exporter_requests_total", code="error") == 0
    for reason in ("not_found", "invalid_id", "http_error", "timeout"):
        assert value(samples, "exporter_failed_ids", reason=reason) == summary["failed_by_reason"].get(
            reason, 0
        )
    assert value(samples, "exporter_bytes_written_total") == summary["archive"]["bytes"] > 0
    for reason in ("retry_after", "quota", "outage"):
        assert value(samples, "exporter_paused_seconds_total", reason=reason) == pytest.approx(
            summary["pacing"]["paused_s"].get(reason, 0), abs=1e-3
        )
    assert value(samples, "exporter_in_flight") == 0
    # --rate 0, and two lone 429s among 37 ids are not a limit (issue 16): no pace at the end,
    # +Inf in the metrics and null in summary.json.
    assert summary["pacing"]["rate_per_s_at_end"] is None
    assert value(samples, "exporter_rate_limit_per_second") == float("inf")
    assert value(samples, "exporter_run_start_timestamp_seconds") == pytest.approx(
        _epoch(summary["started_at"]), abs=0.01
    )
    assert value(samples, "exporter_run_end_timestamp_seconds") == pytest.approx(
        _epoch(summary["finished_at"]), abs=1.0
    )
    assert value(samples, "exporter_run_exit_code") == summary["exit_code"] == 1
    assert value(samples, "exporter_run_success") == 0
    # Outside the archive, world-readable, and no temporary file left where the collector looks.
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    assert os.listdir(prom.parent) == ["exporter.prom"]
    assert "r1" not in prom.read_text()
    assert "missing-1" not in prom.read_text()
    assert TOKEN not in prom.read_text()


async def test_metrics_file_shows_the_run_progress_while_it_lasts(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """The file is replaced every interval during the run (counts rising, no end yet) and once at the end."""
    api.configure(latency_ms=40)
    ids = [f"p{i}" for i in range(40)]
    prom = tmp_path / "m.prom"
    config = make_config(write_manifest(tmp_path / "ids.txt", ids), tmp_path / "out", api.url, concurrency=2)
    config = replace(config, metrics=MetricsSettings(file=prom, interval_s=0.1))
    seen: list[tuple[float, bool]] = []
    in_flight: list[float] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.05)
            if prom.exists():
                samples, families = parse(prom.read_text())
                in_flight.append(value(samples, "exporter_in_flight"))
                seen.append(
                    (value(samples, "exporter_records_exported_total"), "exporter_run_exit_code" in families)
                )

    watcher = asyncio.create_task(watch())
    outcome = await export(config)
    watcher.cancel()
    assert outcome.exit_code == 0
    during = [exported for exported, ended in seen if not ended]
    assert len(set(during)) >= 3, seen  # several versions, each a whole file
    assert during == sorted(during)
    assert 1 <= max(in_flight) <= 2  # requests waiting 40 ms for their answer, at --concurrency 2
    assert 0 < max(during) < len(ids)
    final, _ = parse(prom.read_text())
    assert value(final, "exporter_records_exported_total") == len(ids)
    assert value(final, "exporter_run_success") == 1
    assert value(final, "exporter_in_flight") == 0


async def test_metrics_file_replaces_a_link_and_never_writes_through_it(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A symbolic link planted at --metrics-file is replaced by the file; its target is left alone."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    prom = tmp_path / "m.prom"
    prom.symlink_to(victim)
    config = make_config(write_manifest(tmp_path / "ids.txt", ["a"]), tmp_path / "out", api.url)
    outcome = await export(replace(config, metrics=MetricsSettings(file=prom)))
    assert outcome.exit_code == 0
    assert victim.read_text() == "precious\n"
    assert not prom.is_symlink()
    assert value(parse(prom.read_text())[0], "exporter_records_exported_total") == 1


def test_a_run_refused_the_archive_still_reports_its_exit_code(api: FakeServerHandle, tmp_path: Path) -> None:
    """A cron run that finds the archive locked (exit 4) says so in the file: success 0, exit code 4."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    prom = tmp_path / "m.prom"
    holder = Archive.open(
        ArchiveSettings(out_dir=tmp_path / "out"),
        RunRequest(started_at="t", refetch=False, manifest="m", shard=None),
    )
    try:
        result = cli(
            "export", str(manifest), "--base-url", api.url, "--out", str(tmp_path / "out"),
            "--metrics-file", str(prom),
        )  # fmt: skip
    finally:
        holder.close()
    assert result.returncode == 4
    samples, _ = parse(prom.read_text())
    assert value(samples, "exporter_run_exit_code") == 4
    assert value(samples, "exporter_run_success") == 0
    assert value(samples, "exporter_records_exported_total") == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--metrics-label", "code=x"], "exporter's own"),
        (["--metrics-label", "1job=x"], "label name"),
        (["--metrics-label", "__name__=x"], "label name"),
        (["--metrics-label", "novalue"], "KEY=VALUE"),
        (["--metrics-label", "a=1", "--metrics-label", "a=2"], "twice"),
        (["--metrics-push", "ftp://gw:9091"], "http(s)://"),
        (["--metrics-push", "http://user:hunter2@gw:9091"], "credentials"),
        (["--metrics-file", "/nonexistent-dir-81/m.prom"], "does not exist"),
    ],
)
def test_bad_metrics_options_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    """Each bad metrics option is a usage error naming the problem, and nothing is created."""
    result = cli("export", "ids.txt", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "o"), *args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "o").exists()


# --- the Pushgateway -----------------------------------------------------------------------------


class Gateway:
    """A Pushgateway stand-in on loopback that records every request (method, path, headers, body)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gateway.received.append((self.command, self.path, dict(self.headers), body))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"nope\n")

            do_PUT = do_POST = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway() as running:
        yield running


def test_grouping_key_uses_base64_for_slashes_and_empty_values() -> None:
    """Values with `/` or empty go base64url (`@base64`), as the Pushgateway's API asks; job comes first."""
    path = grouping_path((("shard", "3/8"), ("job", "nightly"), ("env", ""), ("dc", "eu west")))
    assert path == "/metrics/job/nightly/shard@base64/My84/env@base64/=/dc/eu%20west"
    assert grouping_path(()) == "/metrics/job/exporter"
    assert base64.urlsafe_b64decode("My84") == b"3/8"


async def test_push_at_the_end_replaces_the_group(
    api: FakeServerHandle, tmp_path: Path, gateway: Gateway
) -> None:
    """One PUT to <url>/metrics/job/<job>/<labels...> with the final text, agreeing with summary.json."""
    config = make_config(
        write_manifest(tmp_path / "ids.txt", ["a", "b", "missing-1"]), tmp_path / "out", api.url
    )
    labels = (("job", "nightly"), ("shard", "0/4"))
    config = replace(config, metrics=MetricsSettings(push_url=gateway.url + "/gw", labels=labels))
    outcome = await export(config)
    assert outcome.exit_code == 1
    assert len(gateway.received) == 1
    method, path, headers, body = gateway.received[0]
    assert (method, path) == ("PUT", "/gw/metrics/job/nightly/shard@base64/MC80")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples, _ = parse(body.decode())
    summary = read_summary(tmp_path / "out")
    assert value(samples, "exporter_records_exported_total") == summary["counts"]["exported"] == 2
    assert value(samples, "exporter_failed_ids", reason="not_found") == 1
    assert value(samples, "exporter_run_exit_code") == 1
    assert all(("job", "nightly") in labels for _, labels in samples)
    assert TOKEN.encode() not in body
    assert "Authorization" not in headers


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("where", ["answers 500", "refuses"])
def test_a_failed_push_is_a_warning_never_a_failed_export(
    api: FakeServerHandle, tmp_path: Path, where: str
) -> None:
    """A Pushgateway answering 500, or none listening, costs one warning; the run still exits 0."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    with Gateway(status=500) as failing:
        url = failing.url if where == "answers 500" else f"http://127.0.0.1:{_closed_port()}"
        result = cli(
            "export", str(manifest), "--base-url", api.url, "--out", str(tmp_path / "out"),
            "--metrics-push", url, "--log-format", "json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [e for e in map(json.loads, result.stderr.splitlines()) if e["level"] == "warning"]
    assert len(warnings) == 1
    assert url in warnings[0]["message"]
    assert ("500" in warnings[0]["message"]) == (where == "answers 500")


def test_dot_segments_go_base64_never_as_path_segments() -> None:
    """`job=..` (or `.`) sent as a path segment would push to /metrics itself (or the wrong group):
    those values go base64url, as the Pushgateway's API allows for any value."""
    assert grouping_path((("job", ".."),)) == "/metrics/job@base64/Li4="
    assert grouping_path((("job", "x"), ("env", "."))) == "/metrics/job/x/env@base64/Lg=="
    assert grouping_path((("job", "..."),)) == "/metrics/job/..."  # no dot segment: as it is
    for value_ in ("..", ".", "", "a/b"):
        assert f"/{value_}/" not in grouping_path((("job", "n"), ("k", value_))) + "/"


async def test_push_with_dot_labels_reaches_the_gateway_as_one_group(
    api: FakeServerHandle, tmp_path: Path, gateway: Gateway
) -> None:
    """The PUT for `job=..` arrives at its own group path, not at /metrics."""
    config = make_config(write_manifest(tmp_path / "ids.txt", ["a"]), tmp_path / "out", api.url)
    config = replace(config, metrics=MetricsSettings(push_url=gateway.url, labels=(("job", ".."),)))
    assert (await export(config)).exit_code == 0
    assert [(method, path) for method, path, _, _ in gateway.received] == [
        ("PUT", "/metrics/job@base64/Li4=")
    ]


async def test_a_trickling_pushgateway_costs_at_most_the_push_deadline(
    api: FakeServerHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway that promises 4096 bytes and sends one every 0.2 s (under any per-read timeout)
    cannot hold a finished export past the push's one deadline: a warning, exit 0."""
    trickled = 0

    async def trickle(conv: Conversation) -> None:
        nonlocal trickled
        await conv.read_request()
        await conv.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n")
        for _ in range(40):  # 8 s, then it gives up: the old per-read timeout waited all of it
            await asyncio.sleep(0.2)
            await conv.send(b"x")
            trickled += 1

    async with scripted(trickle) as server:
        config = make_config(write_manifest(tmp_path / "ids.txt", ["a"]), tmp_path / "out", api.url)
        settings = MetricsSettings(push_url=f"http://127.0.0.1:{server.port}", push_timeout_s=1.0)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "exporter"):
            outcome = await export(replace(config, metrics=settings))
        elapsed = time.monotonic() - started
    assert outcome.exit_code == 0
    assert elapsed < 4, f"the push held the run {elapsed:.1f} s"
    assert 0 < trickled < 20
    assert "no complete answer within 1 s" in caplog.text


def _archive_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "where",
    ["checkpoint", "summary", "new-name", "dot-dot", "linked-dir", "shard", "shard-index"],
)
def test_a_metrics_file_in_the_archive_is_refused(api: FakeServerHandle, tmp_path: Path, where: str) -> None:
    """--metrics-file naming, or replacing, a file of the archive (directly, through `..`, a link to the
    directory, or the `{shard}` of --out) exits 2 before anything is written; the archive is untouched."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b"])
    shard = where.startswith("shard")
    out = tmp_path / "shard-1" if shard else tmp_path / "out"
    out_option = str(tmp_path / "shard-{shard}") if shard else str(out)
    shard_options = ["--shard", "INDEX/2" if where == "shard-index" else "1/2"] if shard else []
    env = cli_env(JOB_COMPLETION_INDEX="1")
    first = cli("export", str(manifest), "--base-url", api.url, "--out", out_option, *shard_options, env=env)
    assert first.returncode == 0, first.stderr
    (out / "sub").mkdir()
    (tmp_path / "link").symlink_to(out)
    prom = {
        "checkpoint": out / "checkpoint.ndjson",
        "summary": out / "summary.json",
        "new-name": out / "exporter.prom",
        "dot-dot": tmp_path / "elsewhere" / ".." / out.name / "sub" / ".." / "summary.json",
        "linked-dir": tmp_path / "link" / "sub" / "m.prom",
        "shard": out / "checkpoint.ndjson",
        "shard-index": out / "summary.json",
    }[where]
    (tmp_path / "elsewhere").mkdir()
    before = _archive_files(out)
    result = cli(
        "export", str(manifest), "--base-url", api.url, "--out", out_option, *shard_options,
        "--metrics-file", str(prom), env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "is inside the archive" in result.stderr
    assert _archive_files(out) == before
    again = cli("export", str(manifest), "--base-url", api.url, "--out", out_option, *shard_options, env=env)
    assert again.returncode == 0, again.stderr


def test_a_metrics_file_beside_the_archive_is_fine(api: FakeServerHandle, tmp_path: Path) -> None:
    """A name that only starts like the archive's directory (`out.prom`, `out-metrics/`) is outside it."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    (tmp_path / "out-metrics").mkdir()
    for prom in (tmp_path / "out.prom", tmp_path / "out-metrics" / "m.prom"):
        result = cli(
            "export",
            str(manifest),
            "--base-url",
            api.url,
            "--out",
            str(tmp_path / "out"),
            "--metrics-file",
            str(prom),
        )
        assert result.returncode == 0, result.stderr
        assert prom.exists()
