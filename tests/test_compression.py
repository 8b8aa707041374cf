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
from conftest import export, make_config, read_summary, write_manifest
from fake_api import FakeServerHandle

from exporter.config import ArchiveSettings, Compression


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
    config = replace(config, archive=ArchiveSettings(out_dir=out, compress=codec, max_file_bytes=100_000))
    outcome = await export(config)
    assert outcome.exit_code == 0, outcome.summary
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
    # Commits are compressed one by one, so how small depends on how records batched up;
    # even one 9 KB record per frame more than halves.
    assert stored < raw / 2, f"{stored} bytes stored for {raw} raw in {len(files)} files"
