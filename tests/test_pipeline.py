"""End to end in-process: manifest to archive against the fake API, across runs."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path

import fakeapi
import pytest
from fakeapi import FakeServerHandle
from on_disk import read_failed, read_records, read_summary, write_manifest
from runs import export, make_config

from exporter.config import Budgets, LimitSettings
from exporter.errors import ExitCode

sys.set_int_max_str_digits(0)


def served(api: FakeServerHandle, record_id: str) -> object:
    """The `data` the fake API serves for an id, parsed with Python's json."""
    if record_id.startswith("edge-"):
        body = fakeapi.edge_body(record_id)
    else:
        body = fakeapi.success_body(record_id, api.config, frozenset())
    return json.loads(body)["data"]


async def test_every_id_exported_exactly(api: FakeServerHandle, tmp_path: Path) -> None:
    """Each id lands once, as exactly the data served, edge values, deep and pretty bodies included."""
    ids = [f"rec-{i}" for i in range(300)] + ["edge-1", "edge-2", "deep-1", "pretty-1"]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    outcome = await export(make_config(manifest, tmp_path / "out", api.url, concurrency=16))
    assert outcome.exit_code == ExitCode.OK
    records = read_records(tmp_path / "out")
    assert sorted(r["id"] for r in records) == sorted(ids)
    by_id = {r["id"]: r for r in records}
    for record_id in ids:
        assert by_id[record_id] == served(api, record_id), record_id
    assert api.stats()["requests_total"] == len(ids)


async def test_rerun_fetches_nothing_and_new_manifest_only_new_ids(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """Running again asks for nothing; a new manifest over the archive asks only for ids it lacks."""
    out = tmp_path / "out"
    first = write_manifest(tmp_path / "day1.txt", [f"rec-{i}" for i in range(50)])
    assert (await export(make_config(first, out, api.url))).exit_code == 0
    api.reset()
    outcome = await export(make_config(first, out, api.url))
    assert outcome.exit_code == 0
    assert api.stats()["requests_total"] == 0
    assert outcome.summary_json["counts"]["already_archived"] == 50
    second = write_manifest(tmp_path / "day2.txt", [f"rec-{i}" for i in range(40, 70)])
    outcome = await export(make_config(second, out, api.url))
    assert set(api.stats()["per_id"]) == {f"rec-{i}" for i in range(50, 70)}
    assert outcome.summary_json["counts"]["exported"] == 20
    assert sorted(r["id"] for r in read_records(out)) == sorted(f"rec-{i}" for i in range(70))


async def test_manifest_duplicates_fetched_once(api: FakeServerHandle, tmp_path: Path) -> None:
    """An id listed several times is requested and archived once, and counted as a duplicate."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a1", "a2", "a1", "a3", "a2", "a1"])
    outcome = await export(make_config(manifest, tmp_path / "out", api.url))
    assert [r["id"] for r in read_records(tmp_path / "out")].count("a1") == 1
    assert api.stats()["per_id"] == {"a1": 1, "a2": 1, "a3": 1}
    assert outcome.summary_json["counts"]["duplicates"] == 3


async def test_a_duplicate_of_an_archived_id_counts_as_a_duplicate(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """On a rerun, an archived id listed twice is one already_archived and one duplicate."""
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "ids.txt", ["a1", "a2", "a1", "a3", "a2", "a1"])
    assert (await export(make_config(manifest, out, api.url))).exit_code == 0
    outcome = await export(make_config(manifest, out, api.url))
    counts = outcome.summary_json["counts"]
    assert (counts["already_archived"], counts["duplicates"], counts["manifest_entries"]) == (3, 3, 6)
    assert outcome.summary_json["archive"]["records"] == 3
    buckets = ("exported", "already_archived", "duplicates", "not_found", "invalid", "failed")
    assert sum(counts[name] for name in (*buckets, "other_shard", "not_attempted")) == 6


async def test_invalid_ids_are_never_sent(api: FakeServerHandle, tmp_path: Path) -> None:
    """Ids that could escape their path segment are recorded as invalid_id and never requested."""
    bad = ["../admin", "..", "a/b", "with space", "x" * 300]
    manifest = tmp_path / "ids.ndjson"
    manifest.write_text("".join(json.dumps({"id": i}) + "\n" for i in ["ok-1", *bad]))
    outcome = await export(make_config(manifest, tmp_path / "out", api.url))
    assert outcome.exit_code == ExitCode.INCOMPLETE
    assert api.stats()["per_id"] == {"ok-1": 1}
    assert api.stats()["unknown_path_requests"] == 0
    failed = read_failed(tmp_path / "out")
    assert set(failed) == set(bad)
    assert {f["reason"] for f in failed.values()} == {"invalid_id"}
    assert failed["../admin"]["line"] == 2
    assert outcome.summary_json["counts"]["invalid"] == len(bad)


async def test_malformed_manifest_lines_are_reported_not_fatal(api: FakeServerHandle, tmp_path: Path) -> None:
    """A bad NDJSON line is listed with its line number while every good id is still exported."""
    manifest = tmp_path / "ids.ndjson"
    manifest.write_text('{"id": "a"}\nnot json\n{"name": "no id"}\n{"id": "b"}\n')
    outcome = await export(make_config(manifest, tmp_path / "out", api.url))
    assert outcome.exit_code == ExitCode.INCOMPLETE
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == ["a", "b"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "failed.ndjson").read_text().splitlines()]
    assert [(f["reason"], f["line"]) for f in lines] == [("bad_manifest_line", 2), ("bad_manifest_line", 3)]


async def test_failures_listed_and_retried_next_run(api: FakeServerHandle, tmp_path: Path) -> None:
    """Failed ids are listed with reason, status and attempts; the next run retries them, not 404s."""
    out = tmp_path / "out"
    api.configure(fail_first={"flaky-": ["503", 10]})
    manifest = write_manifest(tmp_path / "ids.txt", ["good-1", "flaky-1", "missing-1"])
    outcome = await export(make_config(manifest, out, api.url, max_attempts=3))
    assert outcome.exit_code == ExitCode.INCOMPLETE
    failed = read_failed(out)
    assert failed["flaky-1"]["reason"] == "http_error"
    assert failed["flaky-1"]["status"] == 503
    assert failed["flaky-1"]["attempts"] == 3
    assert failed["missing-1"]["reason"] == "not_found"
    assert outcome.summary_json["counts"]["failed"] == 1
    assert outcome.summary_json["counts"]["not_found"] == 1

    api.configure(fail_first={})
    api.reset()
    outcome = await export(make_config(manifest, out, api.url))
    assert api.stats()["per_id"] == {"flaky-1": 1}
    assert set(read_failed(out)) == {"missing-1"}
    assert outcome.exit_code == ExitCode.INCOMPLETE

    api.reset()
    outcome = await export(make_config(manifest, out, api.url, retry_failed=True))
    assert api.stats()["per_id"] == {"missing-1": 1}


async def test_failures_of_ids_not_in_tonights_manifest_stay_listed(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A nightly run with another manifest keeps yesterday's unresolved failures in failed.ndjson."""
    out = tmp_path / "out"
    api.configure(fail_first={"flaky-": ["500", 10]})
    await export(
        make_config(write_manifest(tmp_path / "d1.txt", ["flaky-1", "a"]), out, api.url, max_attempts=2)
    )
    outcome = await export(make_config(write_manifest(tmp_path / "d2.txt", ["b"]), out, api.url))
    assert outcome.exit_code == ExitCode.OK
    assert set(read_failed(out)) == {"flaky-1"}


async def test_refused_token_stops_the_run_at_once(api: FakeServerHandle, tmp_path: Path) -> None:
    """After a 403 the run stops within the requests in flight, keeps what it archived, exits 3."""
    api.configure(revoke_after=40, latency_ms=5)
    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(500)])
    outcome = await export(make_config(manifest, tmp_path / "out", api.url, concurrency=8))
    assert outcome.exit_code == ExitCode.AUTH
    assert "refused the token" in (outcome.message or "")
    requests = api.stats()["requests_total"]
    assert requests <= 40 + 8 + 1
    records = read_records(tmp_path / "out")
    assert 30 <= len(records) <= 40
    assert read_summary(tmp_path / "out")["status"] == "auth_refused"
    api.configure(revoke_after=None)
    api.reset()
    outcome = await export(make_config(manifest, tmp_path / "out", api.url, concurrency=8))
    assert outcome.exit_code == ExitCode.OK
    assert api.stats()["requests_total"] == 500 - len(records)


async def test_server_rate_limit_slows_the_pool_and_loses_nothing(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """Against a server allowing 50 req/s, 429s lower the pace and every id still arrives once."""
    api.configure(rate_limit_rps=50, rate_limit_burst=10)
    ids = [f"rec-{i}" for i in range(60)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    outcome = await export(make_config(manifest, tmp_path / "out", api.url, concurrency=16, max_attempts=10))
    assert outcome.exit_code == ExitCode.OK, read_failed(tmp_path / "out")
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == sorted(ids)
    stats = api.stats()
    assert stats["rate_limited"] > 0
    assert outcome.summary_json["counts"]["rate_limited"] == stats["rate_limited"]
    assert stats["requests_total"] < 3 * len(ids)


async def test_client_rate_limit_is_respected(api: FakeServerHandle, tmp_path: Path) -> None:
    """With --rate 40 --burst 5 no one-second window sees more than 45 request starts."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(60)])
    config = make_config(manifest, tmp_path / "out", api.url, concurrency=16)
    config = replace(config, limits=LimitSettings(concurrency=16, rate_per_s=40, burst=5))
    outcome = await export(config)
    assert outcome.exit_code == 0
    times = sorted(api.stats()["request_times"])
    assert len(times) == 60
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= 5 + 40 + 1  # +1: server-side timestamps jitter by a few ms
    assert times[-1] - times[0] >= (60 - 5) / 40 * 0.95


async def test_include_and_query_parameters_reach_the_api(api: FakeServerHandle, tmp_path: Path) -> None:
    """Toggles and pass-through query parameters go with every request."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b"])
    config = make_config(manifest, tmp_path / "out", api.url)
    config = replace(
        config,
        http=replace(
            config.http, query=(("includePhotos", "true"), ("includeFollowups", "true"), ("k", "v"))
        ),
    )
    await export(config)
    assert api.stats()["queries"] == {"includePhotos=true&includeFollowups=true&k=v": 2}
    assert all("images" in r and "followups" in r for r in read_records(tmp_path / "out"))


async def test_summary_and_file_modes(api: FakeServerHandle, tmp_path: Path) -> None:
    """summary.json carries counts and per-file size, lines and sha256; all files are private."""
    import hashlib

    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b", "missing-1", "a"])
    await export(make_config(manifest, tmp_path / "out", api.url))
    summary = read_summary(tmp_path / "out")
    assert summary["status"] == "incomplete"
    assert summary["exit_code"] == 1
    counts = summary["counts"]
    assert (counts["exported"], counts["not_found"], counts["duplicates"], counts["requests"]) == (2, 1, 1, 3)
    (entry,) = summary["archive"]["files"]
    data = (tmp_path / "out" / entry["name"]).read_bytes()
    assert entry["bytes"] == len(data)
    assert entry["lines"] == 2
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert summary["records_per_s"] > 0
    assert summary["elapsed_s"] > 0
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_token_is_written_nowhere(api: FakeServerHandle, tmp_path: Path) -> None:
    """No file of the archive contains the token, even after failures of every kind."""
    api.configure(fail_first={"f-": ["500", 9]})
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "f-1", "missing-2"])
    await export(make_config(manifest, tmp_path / "out", api.url, max_attempts=2))
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"test-token" not in path.read_bytes(), path


async def test_refetch_starts_a_new_generation(api: FakeServerHandle, tmp_path: Path) -> None:
    """--refetch fetches every id again into a fresh archive and keeps the old one aside."""
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b"])
    await export(make_config(manifest, out, api.url))
    api.reset()
    outcome = await export(make_config(manifest, out, api.url, refetch=True))
    assert outcome.exit_code == 0
    assert api.stats()["per_id"] == {"a": 1, "b": 1}
    assert sorted(r["id"] for r in read_records(out)) == ["a", "b"]
    (old,) = (out / "superseded").iterdir()
    assert sorted(r["id"] for r in read_records(old)) == ["a", "b"]
    assert outcome.summary_json["archive"]["superseded_to"] == str(old)


async def test_stdin_and_gzip_manifests(api: FakeServerHandle, tmp_path: Path) -> None:
    """A gzip manifest read from standard input works like a file."""
    import gzip
    import io

    from exporter.pipeline import run_export

    data = gzip.compress(b"id\ns-1\ns-2\n")
    config = make_config(None, tmp_path / "out", api.url)
    outcome = await run_export(config, stdin=io.BytesIO(data))
    assert outcome.exit_code == 0
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == ["s-1", "s-2"]
    assert outcome.summary_json["manifest"] == "-"


@pytest.mark.parametrize("umask", [0o000, 0o022])
async def test_modes_hold_under_any_umask(api: FakeServerHandle, tmp_path: Path, umask: int) -> None:
    """Even with umask 0 the archive stays private."""
    old = os.umask(umask)
    try:
        await export(make_config(write_manifest(tmp_path / "i.txt", ["a"]), tmp_path / "out", api.url))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "summary.json").stat().st_mode) == 0o600


async def test_disk_full_stops_with_exit_4_and_loses_nothing(
    api: FakeServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing fsync (disk full) ends the run with exit 4 and a clear message; a rerun completes it."""
    import errno

    ids = [f"rec-{i}" for i in range(200)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    real_fdatasync = os.fdatasync
    calls = {"n": 0}

    def failing_fdatasync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    outcome = await export(make_config(manifest, tmp_path / "out", api.url))
    assert outcome.exit_code == ExitCode.ARCHIVE
    assert "No space left on device" in (outcome.message or "")
    assert "run the same command again" in (outcome.message or "")
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    outcome = await export(make_config(manifest, tmp_path / "out", api.url))
    assert outcome.exit_code == ExitCode.OK
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == sorted(ids)


async def test_ctrl_c_then_a_full_disk_while_draining_exits_4_with_the_disk_error(
    api: FakeServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT reaches the run, then the commit of what was fetched hits a full disk: the disk error
    decides the exit code (4) and is the message shown, not the interruption (130)."""
    import errno
    import signal
    import time

    from exporter.pipeline import run_export
    from exporter.signals import ProcessSignals

    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(300)])
    real_fdatasync = os.fdatasync
    calls = {"n": 0}

    def interrupted_then_full(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)  # (the writer thread) the run takes the SIGINT before this commit fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", interrupted_then_full)
    with ProcessSignals().installed() as signals:
        outcome = await run_export(make_config(manifest, tmp_path / "out", api.url), signals=signals)
    assert calls["n"] >= 4
    assert outcome.exit_code == ExitCode.ARCHIVE
    assert "No space left on device" in (outcome.message or "")
    assert outcome.summary is not None  # only that commit failed: the reports say how the run ended
    assert (outcome.summary.exit_code, outcome.summary.status) == (ExitCode.ARCHIVE, "archive_error")


async def test_max_requests_stops_with_exit_5_and_the_rerun_continues(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """--max-requests 25 sends at most 25 requests, ends budget_reached (exit 5); the rerun finishes."""
    ids = [f"rec-{i}" for i in range(60)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    config = make_config(manifest, tmp_path / "out", api.url, concurrency=8, rate=0)
    outcome = await export(replace(config, budgets=Budgets(max_requests=25)))
    assert outcome.exit_code == ExitCode.BUDGET
    assert outcome.summary_json["status"] == "budget_reached"
    assert api.stats()["requests_total"] <= 25
    archived = read_records(tmp_path / "out")
    assert len(archived) == outcome.summary_json["counts"]["exported"] >= 17
    assert outcome.summary_json["counts"]["not_attempted"] == 60 - len(archived)
    assert read_failed(tmp_path / "out") == {}
    again = await export(config)
    assert again.exit_code == ExitCode.OK
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == sorted(ids)


async def test_max_duration_stops_with_exit_5(api: FakeServerHandle, tmp_path: Path) -> None:
    """--max-duration 1.5 s at 10/s: the run ends after about 1.5 s with about 15 records, exit 5."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(100)])
    config = make_config(manifest, tmp_path / "out", api.url, concurrency=4, rate=10)
    outcome = await export(replace(config, budgets=Budgets(max_duration_s=1.5)))
    assert outcome.exit_code == ExitCode.BUDGET
    assert outcome.summary_json["status"] == "budget_reached"
    assert 1.4 <= outcome.summary_json["elapsed_s"] < 5.0  # the whole manifest would take 10 s
    assert 10 <= outcome.summary_json["counts"]["exported"] <= 17
    assert len(read_records(tmp_path / "out")) == outcome.summary_json["counts"]["exported"]
