"""What an export to s3://BUCKET/PREFIX, and status and --dry-run of one, call the archive.

The archive is the URL; its directory in --work-dir is only a stage. So the
start event, the last line, a shard mismatch and a report that cannot be
written name the URL, and a message about a staged file names that file and
the URL it stages. The prefix here holds a quote and a bidi override, which
S3 keys may: JSON carries it exactly, text shows it escaped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import TOKEN
from s3_support import Ran, aws_env, in_process, make_bucket

from exporter.display import escape

ODD = 'odd"name\u202eevil'


def _export(capsys: Any, api: FakeServerHandle, endpoint: str, tmp_path: Path, url: str, *extra: str) -> Ran:
    env = aws_env(endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    return in_process(
        capsys, env, "export", *extra, "--base-url", api.url, "--out", url,
        "--work-dir", str(tmp_path / "work"), "--rate", "0", "--no-progress",
    )  # fmt: skip


def test_a_run_names_the_bucket_not_its_stage(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """The JSON start event's `out` is the URL, exactly; the last line sends the user to the failure list
    in the bucket; nothing the run prints names the stage."""
    url = f"s3://{make_bucket(s3_endpoint)}/{ODD}"
    manifest = write_manifest(tmp_path / "ids.txt", ["rec-1", "rec-2", "missing-1"])
    done = _export(capsys, api, s3_endpoint, tmp_path, url, str(manifest), "--log-format", "json")
    assert done.returncode == 1, done.stderr  # missing-1: not found
    events = {e["event"]: e for e in map(json.loads, done.stderr.splitlines())}
    assert events["start"]["out"] == url
    assert f"see {url}/failed.d/run-00001.ndjson" in events["end"]["message"]
    assert str(tmp_path / "work") not in done.stderr


def test_reports_that_cannot_be_written_name_the_bucket(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """summary.json cannot be written in the stage (a directory stands in its place): exit 4, and the
    error says whose reports they are (the URL) and which local file is in the way."""
    url = f"s3://{make_bucket(s3_endpoint)}/{ODD}"
    stage = tmp_path / "work" / "stage"
    manifest = tmp_path / "ids.txt"
    os.mkfifo(manifest)

    def feed() -> None:
        with open(manifest, "w") as writer:  # returns once the run has opened the FIFO to read it
            writer.write("rec-1\n")
            writer.flush()
            # The run logs its start once the stage has passed the checks that refuse a directory here.
            deadline = time.monotonic() + 30
            checkpoint = stage / "checkpoint.ndjson"
            while time.monotonic() < deadline and b'{"t":"run"' not in _bytes(checkpoint):
                time.sleep(0.01)
            (stage / "summary.json" / "in-the-way").mkdir(parents=True)
            writer.write("rec-2\n")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        done = _export(capsys, api, s3_endpoint, tmp_path, url, str(manifest))
    finally:
        feeder.join(30)
        if feeder.is_alive():  # the run never opened the manifest: let the feeder's open return
            os.close(os.open(manifest, os.O_RDONLY | os.O_NONBLOCK))
    assert done.returncode == 4, done.stderr
    assert f"cannot write the run's reports in {escape(url)}: " in done.stderr
    assert str(stage / "summary.json") in done.stderr


def test_a_shard_mismatch_names_the_bucket(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Another --shard than the archive's: the run and its dry run name the URL, not the stage or the
    dry run's private copy."""
    url = f"s3://{make_bucket(s3_endpoint)}/{ODD}"
    manifest = write_manifest(tmp_path / "ids.txt", ["rec-1", "rec-2", "rec-3", "rec-4"])
    first = _export(capsys, api, s3_endpoint, tmp_path, url, str(manifest), "--shard", "0/2")
    assert first.returncode == 0, first.stderr
    expected = f"exporter: {escape(url)} holds shard 0/2 but this run is shard 1/2"
    for dry_run in ([], ["--dry-run"]):
        other = _export(capsys, api, s3_endpoint, tmp_path, url, str(manifest), "--shard", "1/2", *dry_run)
        assert other.returncode == 2, other.stderr
        assert other.stderr.startswith(expected), other.stderr


def test_status_shows_the_url_escaped_and_its_json_exact(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """`status s3://...` escapes the URL for a person and keeps it exact (and the JSON valid) for a script."""
    url = f"s3://{make_bucket(s3_endpoint)}/{ODD}"
    manifest = write_manifest(tmp_path / "ids.txt", ["rec-1"])
    assert _export(capsys, api, s3_endpoint, tmp_path, url, str(manifest)).returncode == 0
    env = aws_env(s3_endpoint, tmp_path)
    text = in_process(capsys, env, "status", url)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"archive {escape(url)}\n")
    assert "\u202e" not in text.stdout
    as_json = in_process(capsys, env, "status", url, "--json")
    assert json.loads(as_json.stdout)["archive"] == url


def test_a_metrics_file_in_the_stage_names_the_bucket(tmp_path: Path, capsys: Any) -> None:
    """--metrics-file inside the stage: the usage error names the staged directory and the URL it stages."""
    stage = tmp_path / "work" / "stage"
    stage.mkdir(parents=True)
    manifest = write_manifest(tmp_path / "ids.txt", ["rec-1"])
    env = aws_env("http://127.0.0.1:9", tmp_path, EXPORTER_TOKEN=TOKEN)
    done = in_process(
        capsys, env, "export", str(manifest), "--base-url", "http://127.0.0.1:9", "--out", "s3://bkt/p",
        "--work-dir", str(tmp_path / "work"), "--metrics-file", str(stage / "m.prom"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"is inside the staged copy {stage} of s3://bkt/p," in done.stderr


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
