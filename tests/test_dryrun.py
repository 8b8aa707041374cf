"""`export --dry-run`: what a run would do, predicted exactly, with nothing sent, written or locked."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakeapi import FakeServerHandle
from on_disk import read_summary, write_manifest
from runs import cli, cli_env, export_args, spawn

from exporter.config import ManifestSource, Shard
from exporter.offline.dryrun import DryRunRequest, dry_run, render_text


def run_args(manifest: Path, out: Path, url: str, *extra: str) -> list[str]:
    return export_args(manifest, out, url, "--max-attempts", "2", *extra)


def dry(
    manifest: Path, out: Path, url: str, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    result = cli(*run_args(manifest, out, url, "--dry-run", "--json", *extra), env=env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `root` with its size, mode and mtime: what 'nothing written' must leave equal."""
    found = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_size, st.st_mode, st.st_mtime_ns)
    return found


def test_dry_run_predicts_the_run_and_touches_nothing(api: FakeServerHandle, tmp_path: Path) -> None:
    """Over an archive with earlier 404s and failures, the dry run's counts are what the run then does:
    the ids it requests, skips and reports; the dry run itself sends no request and changes no byte."""
    api.configure(fail_first={"bad-": ["500", 100]})
    out = tmp_path / "out"
    first = write_manifest(tmp_path / "first.txt", [f"r{i}" for i in range(20)] + ["missing-1", "bad-1"])
    assert cli(*run_args(first, out, api.url)).returncode == 1
    api.reset()
    api.configure(fail_first={})
    ids = [f"r{i}" for i in range(10, 30)] + ["missing-1", "bad-1", "r25", "r3", "../x", "missing-2"]
    manifest = write_manifest(tmp_path / "second.txt", ids)
    before = tree(out)
    report = dry(manifest, out, api.url, env=cli_env(token=None))  # no token needed
    assert api.stats()["requests_total"] == 0
    assert tree(out) == before
    assert report == report | {
        "dry_run": True,
        "archive_exists": True,
        "manifest_entries": 26,
        "to_fetch": 12,  # r20..r29, bad-1 (failed before: tried again), missing-2
        "already_archived": 11,  # r10..r19, r3
        "duplicates": 1,  # r25 again
        "invalid": 1,
        "not_found_skipped": 1,
        "failed_retried": 1,
        "not_found_retried": 0,
    }
    with_retry = dry(manifest, out, api.url, "--retry-failed")
    assert (with_retry["to_fetch"], with_retry["not_found_retried"], with_retry["not_found_skipped"]) == (
        13,
        1,
        0,
    )
    # The run does what the dry run said.
    assert cli(*run_args(manifest, out, api.url)).returncode == 1
    counts = read_summary(out)["counts"]
    assert len(api.stats()["per_id"]) == report["to_fetch"]
    for key in ("manifest_entries", "already_archived", "duplicates", "invalid", "other_shard"):
        assert counts[key] == report[key], key
    assert counts["not_found"] == report["not_found_skipped"] + 1  # missing-2, new


def test_a_fresh_dry_run_counts_repeats_as_the_run_skips_them(api: FakeServerHandle, tmp_path: Path) -> None:
    """No archive yet (repeats counted, not decided, `plan.Planner` counts_only): the same counts as the
    run that follows, over repeats near and far, an invalid id listed twice, non-ASCII ids and comments."""
    ids = [f"r{i}" for i in range(3000)]
    ids += ["r5", "r2999", "\u00e9t\u00e9", "a b", "a b", "\u00e9t\u00e9", "# c"]
    ids += [f"r{i}" for i in range(0, 3000, 7)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    report = dry(manifest, out, api.url)
    assert not out.exists()
    assert report == report | {
        "archive_exists": False,
        "manifest_entries": len(ids) - 1,
        "to_fetch": 3001,
        "duplicates": 2 + 1 + 1 + 429,
        "invalid": 1,
    }
    assert cli(*run_args(manifest, out, api.url)).returncode == 1
    counts = read_summary(out)["counts"]
    assert len(api.stats()["per_id"]) == report["to_fetch"]
    for key in ("manifest_entries", "duplicates", "invalid"):
        assert counts[key] == report[key], key


def test_dry_run_answers_while_a_run_holds_the_archive(api: FakeServerHandle, tmp_path: Path) -> None:
    """With a run in progress (holding the lock), --dry-run still reads the archive and exits 0."""
    api.configure(latency_ms=200)
    ids = [f"h{i}" for i in range(200)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    runner = spawn(*run_args(manifest, out, api.url, "--concurrency", "4", "--quiet"))
    try:
        deadline = time.monotonic() + 20
        while (
            not (out / "checkpoint.ndjson").exists()
            or b"commit" not in (out / "checkpoint.ndjson").read_bytes()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        locked = cli(*run_args(manifest, out, api.url))
        assert locked.returncode == 4  # the archive is held right now
        report = dry(manifest, out, api.url)
        assert runner.poll() is None
    finally:
        runner.terminate()
        runner.wait(timeout=20)
    assert report["already_archived"] > 0
    assert report["already_archived"] + report["to_fetch"] == len(ids)
    assert not any(name.startswith(".lock.") for name in os.listdir(out))


def test_time_and_budgets(tmp_path: Path) -> None:
    """The shortest fetch at --rate, and what --max-requests / --max-duration leave for the next run."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"t{i}" for i in range(100)])
    base = DryRunRequest(manifest=ManifestSource(path=manifest), out_dir=tmp_path / "none", rate_per_s=10)
    plain = dry_run(base)
    assert (plain.to_fetch, plain.min_fetch_s, plain.requests_allowed, plain.left_for_next_run) == (
        100,
        10,
        None,
        0,
    )
    assert "at least 10s for 100 requests" in render_text(plain)
    assert not (tmp_path / "none").exists()
    capped = dry_run(DryRunRequest(**{**_fields(base), "max_requests": 30, "max_duration_s": 2.0}))
    assert (capped.requests_allowed, capped.left_for_next_run) == (20, 80)  # 2 s at 10/s is the tighter
    assert "80 ids are left for the next run (exit 5)" in render_text(capped)
    roomy = dry_run(DryRunRequest(**{**_fields(base), "max_duration_s": 3600.0}))
    assert (roomy.requests_allowed, roomy.left_for_next_run) == (36000, 0)
    unlimited = dry_run(DryRunRequest(**{**_fields(base), "rate_per_s": 0}))
    assert unlimited.min_fetch_s is None
    sharded = dry_run(DryRunRequest(**{**_fields(base), "shard": Shard(index=1, count=4)}))
    assert sharded.to_fetch + sharded.other_shard == 100
    assert 10 < sharded.to_fetch < 40


def _fields(request: DryRunRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__slots__}


def test_refetch_would_start_over(api: FakeServerHandle, tmp_path: Path) -> None:
    """With --refetch over a finished archive, every id would be fetched again."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b", "missing-1"])
    out = tmp_path / "out"
    assert cli(*run_args(manifest, out, api.url)).returncode == 1
    report = dry(manifest, out, api.url, "--refetch")
    assert (report["starts_over"], report["to_fetch"], report["already_archived"]) == (True, 3, 0)


def test_usage_errors_exit_2_and_an_unsafe_archive_4(api: FakeServerHandle, tmp_path: Path) -> None:
    """--json without --dry-run, or another shard than the archive's: exit 2; a linked checkpoint: exit 4."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"s{i}" for i in range(10)])
    out = tmp_path / "out"
    assert cli(*run_args(manifest, out, api.url, "--shard", "0/2")).returncode == 0
    no_dry = cli(*run_args(manifest, out, api.url, "--json"))
    assert no_dry.returncode == 2
    assert "--dry-run" in no_dry.stderr
    other = cli(*run_args(manifest, out, api.url, "--dry-run", "--shard", "1/2"))
    assert other.returncode == 2
    assert "shard" in other.stderr
    missing = cli(*run_args(tmp_path / "nope.txt", out, api.url, "--dry-run"))
    assert missing.returncode == 2
    (out / "checkpoint.ndjson").rename(tmp_path / "elsewhere")
    (out / "checkpoint.ndjson").symlink_to(tmp_path / "elsewhere")
    linked = cli(*run_args(manifest, out, api.url, "--dry-run", "--shard", "0/2"))
    assert linked.returncode == 4
    assert "checkpoint.ndjson" in linked.stderr


def test_dry_run_refuses_the_options_the_run_refuses(tmp_path: Path) -> None:
    """MANIFEST, --out and --shard are read as for the run: object-storage options with a directory exit 2."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b"])
    out = tmp_path / "out"
    for extra, says in (
        (["--work-dir", str(tmp_path / "work")], "object storage"),
        (["--legal-hold"], "object storage"),
        (["--proxy", "http://[x"], "--proxy"),
    ):
        run = cli(*run_args(manifest, out, "https://127.0.0.1:9", *extra))
        dry = cli(*run_args(manifest, out, "https://127.0.0.1:9", "--dry-run", *extra))
        assert (run.returncode, dry.returncode) == (2, 2), dry.stdout
        assert says in run.stderr
        assert dry.stderr == run.stderr
    assert not out.exists()


def test_dry_run_refuses_the_records_files_a_run_refuses(api: FakeServerHandle, tmp_path: Path) -> None:
    """Records files a run will not add to (one missing, one cut short, one the checkpoint does not
    list, records without a checkpoint): the dry run exits 4 with the run's own message, not 0."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"s{i}" for i in range(10)])
    made = tmp_path / "made"
    assert cli(*run_args(manifest, made, api.url)).returncode == 0
    records = "records-00001.ndjson"
    damages: dict[str, Callable[[Path], object]] = {
        "missing": lambda out: (out / records).unlink(),
        "cut short": lambda out: os.truncate(out / records, 10),
        "not listed": lambda out: (out / "records-00007.ndjson").write_bytes(b"{}\n"),
        "no checkpoint": lambda out: (out / "checkpoint.ndjson").unlink(),
    }
    for what, damage in damages.items():
        out = tmp_path / what.replace(" ", "-")
        shutil.copytree(made, out)
        (out / ".lock").unlink(missing_ok=True)
        damage(out)
        dry = cli(*run_args(manifest, out, api.url, "--dry-run"))
        run = cli(*run_args(manifest, out, api.url))
        assert (dry.returncode, run.returncode) == (4, 4), (what, dry.stdout)
        said = dry.stderr.strip()
        assert said, what
        assert said in run.stderr, what
    assert api.stats()["requests_total"] == 10
