"""--log-format json: every stderr line one JSON object with stable keys; the text format as it was."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeServerHandle
from on_disk import read_summary, write_manifest
from runs import TOKEN, cli

from exporter.logs import JsonFormatter
from exporter.pacing import PauseNotice, PauseReason
from exporter.progress import NullProgress
from exporter.run.ticker import show_notice

LEVELS = {"debug", "info", "warning", "error"}


def export_args(manifest: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["export", str(manifest), "--base-url", url, "--out", str(out), "--rate", "0", *extra]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of stderr as JSON, checking the stable keys of each; fails on any other line.

    Lines end at a newline only: U+2028, which str.splitlines also splits at, is valid inside JSON.
    """
    events = []
    for line in stderr.removesuffix("\n").split("\n") if stderr else []:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert list(entry)[:5] == ["ts", "level", "event", "run", "message"], line
        assert entry["ts"].endswith("Z")
        assert datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).utcoffset() == timedelta(0)
        assert entry["level"] in LEVELS, line
        events.append(entry)
    return events


def test_every_line_is_json_with_the_events_and_never_the_token(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A run with retries, failures and progress writes only JSON lines: start, progress, retry, failed,
    commit and end, each with its fields, `run` on every line after start, and no token anywhere."""
    api.configure(fail_first={"flaky-": ["500", 1]}, latency_ms=30)
    manifest = tmp_path / "ids.ndjson"
    hostile = "x\ny\u2028\x1b[31m"  # an id no text line can hold: invalid, and reported exactly
    rows = [{"id": f"r{i}"} for i in range(60)] + [{"id": "flaky-1"}, {"id": "missing-1"}, {"id": hostile}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    result = cli(
        *export_args(manifest, out, api.url, "--log-format", "json", "--progress-interval", "1", "-v",
                     "--concurrency", "2"),
    )  # fmt: skip
    assert result.returncode == 1
    assert TOKEN not in result.stderr + result.stdout
    events = json_lines(result.stderr)
    names = [e["event"] for e in events]
    assert names[0] == "start"
    assert names[-1] == "end"
    assert {"progress", "retry", "failed", "commit"} <= set(names)
    assert all(e["run"] == 1 for e in events)
    start = events[0]
    assert (start["out"], start["concurrency"]) == (str(out), 2)
    progress = [e for e in events if e["event"] == "progress"]
    for field in ("done", "total", "rate_per_s", "eta_s", "failed", "limit_per_s"):
        assert field in progress[0], field
    assert progress[0]["total"] == len(rows)
    retry = next(e for e in events if e["event"] == "retry")
    assert (retry["id"], retry["attempt"], retry["status"], retry["reason"]) == (
        "flaky-1",
        1,
        500,
        "http_error",
    )
    assert retry["wait_s"] >= 0
    failed = {e["id"]: e for e in events if e["event"] == "failed"}
    assert set(failed) == {"missing-1", hostile}
    assert (failed["missing-1"]["reason"], failed["missing-1"]["status"]) == ("not_found", 404)
    assert failed[hostile]["reason"] == "invalid_id"
    end = events[-1]
    summary = read_summary(out)
    assert (end["status"], end["exit_code"]) == ("incomplete", 1)
    assert end["counts"] == summary["counts"]
    assert sum(e["records"] for e in events if e["event"] == "commit") == summary["counts"]["exported"]


@pytest.mark.slow  # a real 6 s Retry-After, answers of 1.5 s
def test_a_long_retry_after_is_a_pause_then_a_resume(api: FakeServerHandle, tmp_path: Path) -> None:
    """A bare Retry-After of 6 s holds the pool: a `pause` event with its reason and end, then `resume`."""
    # Answers take 1.5 s, so the run outlasts the pause by more than the pacer's 1 s tick.
    api.configure(fail_first={"rl-": ["429bare", 1]}, retry_after_s=6, latency_ms=1500)
    manifest = write_manifest(tmp_path / "ids.txt", ["rl-1", "a"])
    result = cli(*export_args(manifest, tmp_path / "out", api.url, "--log-format", "json"))
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stderr)
    names = [e["event"] for e in events]
    assert names.index("pause") < names.index("resume") < names.index("end")
    pause = events[names.index("pause")]
    assert (pause["level"], pause["reason"]) == ("warning", "retry_after")
    until = datetime.fromisoformat(pause["until"].replace("Z", "+00:00"))
    paused_at = datetime.fromisoformat(pause["ts"].replace("Z", "+00:00"))
    assert 5.5 < (until - paused_at).total_seconds() < 6.5
    assert events[names.index("resume")]["reason"] == "retry_after"
    assert read_summary(tmp_path / "out")["pacing"]["paused_s"]["retry_after"] > 5


def test_quiet_leaves_only_errors_in_both_formats(api: FakeServerHandle, tmp_path: Path) -> None:
    """--quiet: a run with failures says nothing; a refused token is one error line, JSON or text."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "missing-1", "../x"])
    for fmt in ("json", "text"):
        quiet = cli(*export_args(manifest, tmp_path / f"q-{fmt}", api.url, "--log-format", fmt, "--quiet"))
        assert (quiet.returncode, quiet.stderr, quiet.stdout) == (1, "", "")
    api.configure(token="another-token")
    refused = cli(*export_args(manifest, tmp_path / "r", api.url, "--log-format", "json", "--quiet"))
    assert refused.returncode == 3
    [error] = json_lines(refused.stderr)
    assert (error["level"], error["event"], error["run"]) == ("error", "error", 1)
    assert "refused the token" in error["message"]
    text = cli(*export_args(manifest, tmp_path / "t", api.url, "--quiet"))
    assert text.returncode == 3
    assert text.stderr.startswith("exporter: ")
    assert text.stderr.count("\n") == 1
    assert TOKEN not in refused.stderr + text.stderr


def test_text_format_is_unchanged_by_the_events(api: FakeServerHandle, tmp_path: Path) -> None:
    """Events for machines (start, failed, commit) never reach the text format; its lines are as before."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "missing-1"])
    result = cli(*export_args(manifest, tmp_path / "out", api.url, "-v", "--no-progress"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert all(line.startswith("exporter: ") for line in lines)
    assert not any("started" in line or "failed: not_found" in line or "committed" in line for line in lines)
    assert lines[-1].startswith("exporter: exported 1 recording to")


def test_an_outage_notice_is_a_pause_then_a_resume() -> None:
    """The pacer's outage notices (down, then 'answers again') become pause and resume
    events with reason `outage` and no `until`, the same lines the text format shows."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("exporter")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        show_notice(PauseNotice(PauseReason.OUTAGE, "the API looks down (...)"), NullProgress())
        show_notice(
            PauseNotice(PauseReason.OUTAGE, "the API answers again after 12 s; resuming", ended=True),
            NullProgress(),
        )
    finally:
        logger.removeHandler(handler)
        logger.level = level
    pause, resume = json_lines(stream.getvalue())
    assert (pause["event"], pause["reason"], pause["until"]) == ("pause", "outage", None)
    assert (resume["event"], resume["reason"], resume["level"]) == ("resume", "outage", "warning")
    assert resume["message"] == "the API answers again after 12 s; resuming"
