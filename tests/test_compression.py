"""Compressed and rotated archives, end to end: readable by zcat/zstdcat and DuckDB, values intact."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
import zstandard
from fakeapi import FakeServerHandle
from gzip_members import one_member, sync_points
from on_disk import read_summary, write_manifest
from runs import cli, export, make_config

from exporter.archive import checkpoint
from exporter.archive.framing import GZIP_MIN_PIECE_BYTES
from exporter.archive.layout import CHECKPOINT_NAME
from exporter.config import ArchiveSettings, Budgets, Compression, LimitSettings


def lines_of(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    elif path.name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
    return raw.splitlines()


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_compressed_rotated_archive_is_readable_everywhere(
    api: FakeServerHandle, tmp_path: Path, codec: Compression
) -> None:
    """Rotated .gz/.zst files hold every record once, and zcat/zstdcat and DuckDB read them."""
    ids = [f"rec-{i}" for i in range(400)]
    out = tmp_path / "out"
    config = make_config(write_manifest(tmp_path / "ids.txt", ids), out, api.url, concurrency=16)
    archive = ArchiveSettings(
        out_dir=out, compress=codec, max_file_bytes=100_000, compressed_commit_bytes=200_000
    )
    config = replace(config, archive=archive)
    outcome = await export(config)
    assert outcome.exit_code == 0, outcome.summary_json
    files = sorted(out.glob("records-*"))
    suffix = ".ndjson.gz" if codec == "gzip" else ".ndjson.zst"
    assert len(files) > 3
    assert all(f.name.endswith(suffix) for f in files)
    records = [json.loads(line) for f in files for line in lines_of(f)]
    assert sorted(r["id"] for r in records) == sorted(ids), "some id missing or doubled"

    tool = shutil.which("zcat" if codec == "gzip" else "zstdcat")
    if tool is not None:
        listed = subprocess.run([tool, *map(str, files)], capture_output=True, check=True).stdout  # noqa: ASYNC221
        count = listed.count(b"\n")
        assert count == len(ids), f"{tool} read {count} lines"

    relation = duckdb.sql(
        f"select count(*), count(distinct id) from read_ndjson({[str(f) for f in files]!r}, "
        "maximum_object_size=100000000)"
    )
    assert relation is not None
    rows = relation.fetchall()
    assert rows == [(len(ids), len(ids))], f"duckdb read {rows}"

    summary = read_summary(out)
    stored = sum(f.stat().st_size for f in files)
    assert summary["archive"]["bytes"] == stored, (summary["archive"], stored)
    # Every file but the last is sealed (the last too, if the final commit happened to fill it).
    assert all(f["closed"] for f in summary["archive"]["files"][:-1]), summary["archive"]["files"]
    raw = sum(len(line) + 1 for f in files for line in lines_of(f))
    # Commits are compressed one by one, at least --compress-batch bytes each but the last.
    assert stored < raw / 3, f"{stored} bytes stored for {raw} raw in {len(files)} files"


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_a_slow_trickle_is_still_compressed_in_batches(
    api: FakeServerHandle, tmp_path: Path, codec: Compression
) -> None:
    """At 30 records a second, records wait for company instead of one frame each."""
    ids = [f"rec-{i}" for i in range(45)]
    out = tmp_path / "out"
    config = make_config(write_manifest(tmp_path / "ids.txt", ids), out, api.url, rate=30.0)
    config = replace(config, archive=ArchiveSettings(out_dir=out, compress=codec))
    outcome = await export(config)
    assert outcome.exit_code == 0, outcome.summary_json
    checkpoint = (out / "checkpoint.ndjson").read_text().splitlines()
    commits = [json.loads(line) for line in checkpoint if '"t":"commit"' in line]
    # 45 records of ~9 KB in ~1.5 s: under 1 MiB and 5 s, so they go out together at the end.
    assert len(commits) == 1, [len(c["ids"]) for c in commits]
    (records_file,) = out.glob("records-*")
    assert sorted(json.loads(line)["id"] for line in lines_of(records_file)) == sorted(ids)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_small_records_keep_the_rate_when_compressed(
    api: FakeServerHandle, tmp_path: Path, codec: Compression
) -> None:
    """300-byte records at --rate 50 go at 50/s compressed too, still gathered 5 s to a frame.

    Before, a compressed batch held at most 64 results while it waited 5 s for
    1 MiB, and every worker waited with it: 64 records per 5 s, 12.9/s.
    """
    api.configure(record_bytes=300)
    rate, burst, count = 50.0, 5, 275
    ids = [f"rec-{i}" for i in range(count)]
    out = tmp_path / "out"
    config = make_config(write_manifest(tmp_path / "ids.txt", ids), out, api.url)
    config = replace(
        config,
        archive=ArchiveSettings(out_dir=out, compress=codec),
        limits=LimitSettings(concurrency=8, rate_per_s=rate, burst=burst),
        budgets=Budgets(max_duration_s=12.0),
    )
    outcome = await export(config)
    starts = sorted(api.stats()["request_times"])
    held = (len(starts) - burst) / (starts[-1] - starts[0])
    assert held >= 0.9 * rate, f"{held:.1f} requests/s at --rate {rate:g}"
    assert outcome.exit_code == 0, outcome.summary_json
    (records_file,) = out.glob("records-*")
    assert sorted(json.loads(line)["id"] for line in lines_of(records_file)) == sorted(ids)
    checkpoint = (out / "checkpoint.ndjson").read_text().splitlines()
    commits = [len(json.loads(line)["ids"]) for line in checkpoint if '"t":"commit"' in line]
    # 5.5 s of records: a frame of what the first 5 s brought, then the rest at the end.
    assert 2 <= len(commits) <= 3, commits
    assert min(commits[:-1]) >= 2 * rate, commits


async def test_a_commit_deflated_in_pieces_is_one_member_that_everything_reads(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """Gzip commits of 1 MiB and more are deflated in pieces by two threads; each commit stays one member.

    The bytes a commit appended (checkpoint offsets) decode on their own as one
    gzip member with a sync point between its two pieces, and the gzip module,
    zcat, DuckDB and `exporter verify` read every record back. Before, the
    writer thread deflated each commit in one piece.
    """
    api.configure(record_bytes=2_200_000)
    ids = [f"rec-{i}" for i in range(5)]
    out = tmp_path / "out"
    config = make_config(write_manifest(tmp_path / "ids.txt", ids), out, api.url, concurrency=2)
    config = replace(config, archive=ArchiveSettings(out_dir=out, compress="gzip", compress_threads=2))
    outcome = await export(config)
    assert outcome.exit_code == 0, outcome.summary_json

    (records_file,) = out.glob("records-*.ndjson.gz")
    stored = records_file.read_bytes()
    commits = list(checkpoint.commits(io.BytesIO((out / CHECKPOINT_NAME).read_bytes()).readlines()))
    assert sum(len(c.ids) for c in commits) == len(ids)
    assert commits[-1].end == len(stored)
    for commit in commits:
        member = stored[commit.start : commit.end]
        data = one_member(member)
        assert data.count(b"\n") == commit.lines - commit.lines_before
        assert len(data) >= 2 * GZIP_MIN_PIECE_BYTES
        assert -(-len(data) // 2) in sync_points(member), commit

    assert sorted(json.loads(line)["id"] for line in lines_of(records_file)) == sorted(ids)
    zcat = shutil.which("zcat")
    if zcat is not None:
        listed = subprocess.run([zcat, str(records_file)], capture_output=True, check=True).stdout  # noqa: ASYNC221
        assert listed == gzip.decompress(stored)
    relation = duckdb.sql(
        f"select count(distinct id) from read_ndjson('{records_file}', maximum_object_size=100000000)"
    )
    assert relation is not None
    assert relation.fetchall() == [(len(ids),)]
    verify = cli("verify", str(out), timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
