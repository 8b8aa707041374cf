"""Hostile archives end to end: lines far longer than the writer writes in the archive's own files.

Each test plants one in a small archive (written as bytes, in a second) and runs
the real commands over it (`status`, `verify`, `export --dry-run`, `export`),
checking what each makes of it and what it costs: the peak RSS of the exporter
process (it was 330-960 MB). The readers themselves are tested in
`test_archive_reader.py`, the writer's side in `test_archive.py`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeServerHandle
from on_disk import read_failed, write_manifest
from runs import cli_peak_rss, export, export_args, make_config
from scripted import Conversation, keep_answering, scripted

from exporter.archive.layout import CHECKPOINT_LINE_BYTES, FAILED_LINE_BYTES, Summary
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings
from exporter.digests import DigestSet
from exporter.errors import ExitCode
from exporter.offline.verify import verify_archives

T0 = "2026-01-01T00:00:00.000Z"
MB = 1 << 20
#: The exporter's own peak RSS over any of these archives stays under this (KiB); idle it is about 30 MB.
PEAK_KIB = 100 * 1024


def small_archive(out: Path) -> None:
    """One finished run: records a, b, c; `gone` not found; a summary."""
    settings = ArchiveSettings(out_dir=out)
    archive = Archive.open(settings, RunRequest(started_at=T0, refetch=False, manifest="ids.txt", shard=None))
    try:
        archive.commit([(i, json.dumps({"id": i}).encode()) for i in "abc"])
        archive.record_failures([_failed_line("gone", "not_found", "HTTP 404")])
        archive.write_failed(DigestSet())
        files = archive.files_report()
        archive.end_run(at=T0, exit_code=1, status="incomplete", counts={"exported": 3})
        archive.write_summary(Summary(run=archive.run, records=3, files=tuple(files)))
    finally:
        archive.close()


def _failed_line(record_id: str, reason: str, error: str) -> bytes:
    return json.dumps({"id": record_id, "reason": reason, "error": error, "at": T0}).encode() + b"\n"


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """`python -m exporter ARGS`: its exit code, stdout and stderr; its peak RSS must stay under 100 MB."""
    result, peak_kib = cli_peak_rss(*args, report=tmp_path / "peak-rss")
    assert 10 * 1024 < peak_kib < PEAK_KIB, f"{args[0]}: peak RSS {peak_kib} KiB\n{result.stderr}"
    return result.returncode, result.stdout, result.stderr


def test_a_100_mb_failed_ndjson_line_is_skipped_and_reported(api: FakeServerHandle, tmp_path: Path) -> None:
    """A 100 MB line in failed.ndjson (an `error` of 100 MB, as an older version could store): status lists
    it as skipped, a dry run and a run warn and go on without it, the run's failed.ndjson leaves it out,
    and the lines after it still count (`y` is known missing)."""
    out = tmp_path / "out"
    small_archive(out)
    with open(out / "failed.ndjson", "ab") as handle:
        start = handle.tell()
        handle.write(b'{"id":"x","reason":"http_error","at":"' + T0.encode() + b'","error":"')
        for _ in range(100):
            handle.write(b"e" * MB)
        handle.write(b'"}')
        size = f"a line of {handle.tell() - start:,} bytes, over the {FAILED_LINE_BYTES:,}-byte limit"
        handle.write(b"\n" + _failed_line("y", "not_found", "HTTP 404"))
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b", "c", "d", "y"])

    code, stdout, _ = run(tmp_path, "status", str(out))
    assert code == 0
    assert f"SKIPPED failed.ndjson line 2: {size}" in stdout
    assert "not_found: 2  (gone, y)" in stdout

    code, stdout, stderr = run(tmp_path, *export_args(manifest, out, api.url, "--dry-run", "--json"))
    assert code == 0, stderr
    report = json.loads(stdout)
    assert (report["to_fetch"], report["not_found_skipped"], report["already_archived"]) == (1, 1, 3)
    assert f"failed.ndjson line 2: {size}: skipped" in stderr

    code, _, stderr = run(tmp_path, *export_args(manifest, out, api.url))
    assert code == ExitCode.INCOMPLETE, stderr  # y: not found by an earlier run
    assert f"failed.ndjson line 2: {size}: skipped" in stderr
    assert (out / "failed.ndjson").stat().st_size < 1024
    assert set(read_failed(out)) == {"gone", "y"}


def test_a_100_mb_summary_is_reported_not_read(tmp_path: Path) -> None:
    """A summary.json of 100 MB: status lists it as not read, verify reports it as a problem."""
    out = tmp_path / "out"
    small_archive(out)
    doc: dict[str, Any] = json.loads((out / "summary.json").read_bytes())
    with open(out / "summary.json", "wb") as handle:
        handle.write(json.dumps(doc)[:-1].encode() + b', "pad": "')
        for _ in range(100):
            handle.write(b"p" * MB)
        handle.write(b'"}\n')
    # 1 MiB, and 512 bytes for its one records file
    over = f"{(out / 'summary.json').stat().st_size:,} bytes, over the 1,049,088-byte limit"

    code, stdout, _ = run(tmp_path, "status", str(out), "--json")
    assert code == 0
    [skipped] = json.loads(stdout)["skipped"]["first"]
    assert (skipped["name"], skipped["line"]) == ("summary.json", None)
    assert over in skipped["problem"]

    code, stdout, _ = run(tmp_path, "verify", str(out))
    assert code == ExitCode.INCOMPLETE
    assert f"{out}/summary.json: is not a summary this exporter writes ({over})" in stdout


async def test_a_checkpoint_line_of_9_million_ids_is_damage_unless_it_is_the_last(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A commit entry of 9M ids (36 MB) before the last line: damage, named by its line, for every command
    (exit 4, or a problem for verify) at once; as the last line, a torn tail the next run cuts."""
    out = tmp_path / "out"
    small_archive(out)
    checkpoint = out / "checkpoint.ndjson"
    good = checkpoint.read_bytes()
    ids = b'"x",' * (9_000_000 - 1) + b'"x"'
    entry = (
        b'{"t":"commit","file":"records-00001.ndjson","end":36,"lines":9000003,"crc32":0,"ids":['
        + ids
        + b"]}\n"
    )
    later = b'{"t":"run","run":2,"at":"' + T0.encode() + b'","refetch":false,"manifest":"m","shard":null}\n'
    checkpoint.write_bytes(good + entry + later)
    line = good.count(b"\n") + 1
    damage = f"checkpoint.ndjson line {line} is damaged (a line of {len(entry) - 1:,} bytes, over the "
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b", "c", "d"])

    code, _, stderr = run(tmp_path, "status", str(out))
    assert (code, damage in stderr) == (ExitCode.ARCHIVE, True), stderr
    code, stdout, _ = run(tmp_path, "verify", str(out))
    assert code == ExitCode.INCOMPLETE
    assert f"{checkpoint}:{line}: damaged entry (a line of {len(entry) - 1:,} bytes" in stdout
    code, _, stderr = run(tmp_path, *export_args(manifest, out, api.url, "--dry-run"))
    assert (code, damage in stderr) == (ExitCode.ARCHIVE, True), stderr
    code, _, stderr = run(tmp_path, *export_args(manifest, out, api.url))
    assert (code, damage in stderr) == (ExitCode.ARCHIVE, True), stderr
    assert checkpoint.read_bytes() == good + entry + later  # refused before anything was written

    checkpoint.write_bytes(good + entry)  # the same entry, last: what a crash mid-write could leave
    outcome = await export(make_config(manifest, out, api.url))
    assert outcome.exit_code == ExitCode.OK, outcome.message
    assert max(map(len, checkpoint.read_bytes().splitlines())) < CHECKPOINT_LINE_BYTES
    report = verify_archives([out])
    assert (report.ok, report.records) == (True, 4), report.findings


async def test_a_48_mib_member_name_is_stored_and_logged_capped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server answering with one 48 MiB member name: failed.ndjson's error and every log line stay
    short (the error was 50 MB), and say how long the name was."""
    body = b'{"' + b"k" * (48 << 20) + b'":1}'

    async def handler(conv: Conversation) -> None:
        await keep_answering(conv, body)

    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "ids.txt", ["r1"])
    caplog.set_level(logging.DEBUG, logger="exporter")
    async with scripted(handler) as server:
        config = make_config(manifest, out, f"http://127.0.0.1:{server.port}", max_attempts=2)
        outcome = await export(config)
    assert outcome.exit_code == ExitCode.INCOMPLETE
    assert (out / "failed.ndjson").stat().st_size < 1024
    error = read_failed(out)["r1"]["error"]
    assert error.startswith('body has no "data" member (it has: kkkk')
    assert "(50,331,648 bytes)" in error
    assert caplog.records, "the retry is logged"
    assert max(len(record.getMessage()) for record in caplog.records) < 1024
