"""Hostile manifests end to end, against the fake API: long cells and lines, stray quotes, damage.

What a run does with them (exit code, requests that reached the API, records,
failed.ndjson) and what it costs (peak RSS of a real exporter process). The
readers themselves are tested in `test_manifest.py`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fakeapi import FakeServerHandle
from on_disk import read_records
from runs import PEAK_RSS_OF, ROOT, cli_env, export, make_config

from exporter.errors import ExitCode


def failed_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "failed.ndjson").read_text().splitlines()]


def _csv_manifest(path: Path) -> bytes:
    long_id = "i" * 200_000
    rows = [
        b"id,notes",
        b"a,short",
        b"b," + b"n" * 300_000,  # a notes cell over csv's own 131,072 limit
        long_id.encode() + b",x",  # an id cell over it
        b'c,"a stray quote that would swallow the rest of the file',
        b"d,x",
        b"e,y",
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    return long_id.encode()


async def test_long_csv_cells_and_a_stray_quote_cost_only_their_rows(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """Cells over 131,072 characters and a stray quote: no exit 70, every id around them exported.

    The long id is `invalid_id`, reported by its first KiB, length and sha256;
    the damaged row is `bad_manifest_line` with its line number.
    """
    manifest = tmp_path / "ids.csv"
    long_id = _csv_manifest(manifest)
    out = tmp_path / "out"
    outcome = await export(make_config(manifest, out, api.url))
    assert outcome.exit_code == ExitCode.INCOMPLETE
    assert sorted(r["id"] for r in read_records(out)) == ["a", "b", "d", "e"]
    invalid, bad = failed_lines(out)
    assert invalid["reason"] == "invalid_id"
    assert invalid["id"] == "i" * 1024
    assert invalid["id_bytes"] == len(long_id)
    assert invalid["id_sha256"] == hashlib.sha256(long_id).hexdigest()
    assert invalid["line"] == 4
    assert (bad["reason"], bad["line"]) == ("bad_manifest_line", 5)
    assert "unexpected end of data" in bad["error"]
    assert (out / "failed.ndjson").stat().st_size < 4096

    # The next run over the same manifest replaces the cut report instead of adding one.
    again = await export(make_config(manifest, out, api.url))
    assert again.exit_code == ExitCode.INCOMPLETE
    assert [(f["reason"], f.get("line")) for f in failed_lines(out)] == [
        ("invalid_id", 4),
        ("bad_manifest_line", 5),
    ]


def _stored_gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=0, mtime=0)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def _flip_middle(blob: bytes) -> bytes:
    damaged = bytearray(blob)
    for at in range(len(blob) // 2, len(blob) // 2 + 4):
        damaged[at] ^= 0xFF
    return bytes(damaged)


_IDS = b"".join(b"rec-%05d\n" % i for i in range(5000))


@pytest.mark.parametrize(
    ("compress", "suffix"), [(_stored_gzip, ".gz"), (_zstd, ".zst")], ids=["gzip", "zstd"]
)
@pytest.mark.parametrize("where", ["file", "stdin"])
def test_a_damaged_compressed_manifest_reaches_neither_the_api_nor_the_archive(
    api: FakeServerHandle, tmp_path: Path, compress: Any, suffix: str, where: str
) -> None:
    """Flipped bytes in the middle of a gzip or zstd manifest: exit 2, no request, nothing archived.

    Uncompressed gzip (level 0) is the worst case: the flipped bytes decode to
    other, plausible ids, and only the CRC at the end of the member tells.
    """
    blob = _flip_middle(compress(_IDS))
    manifest = tmp_path / f"ids.txt{suffix}"
    manifest.write_bytes(blob)
    out = tmp_path / "out"
    args = ["export", "-" if where == "stdin" else str(manifest), "--base-url", api.url, "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *args, "--rate", "0"],
        input=blob if where == "stdin" else None,
        env=cli_env(),
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    assert api.stats()["requests_total"] == 0
    assert not out.exists() or not list(out.glob("records-*"))
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert b"is damaged (" in result.stderr
    assert b"none of its ids were used" in result.stderr


def test_an_intact_compressed_stdin_is_exported(api: FakeServerHandle, tmp_path: Path) -> None:
    """The copy to a temporary file that proves compressed standard input intact gets every id through."""
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "export",
            "-",
            "--base-url",
            api.url,
            "--out",
            str(out),
            "--rate",
            "0",
        ],
        input=_zstd(_IDS[: 10 * 10]),
        env=cli_env(),
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert len(read_records(out)) == 10


_LINE_BYTES = 200 << 20


@pytest.mark.parametrize(
    ("fmt", "before"),
    [("text", b"a\nb\n"), ("ndjson", b'{"id":"a"}\n{"id":"b"}\n'), ("csv", b"id,notes\na,x\nb,y\n")],
    ids=["text", "ndjson", "csv"],
)
def test_a_200_mb_line_keeps_peak_rss_under_100_mb(
    api: FakeServerHandle, tmp_path: Path, fmt: str, before: bytes
) -> None:
    """One 200 MB line without a newline, streamed into standard input: the exporter's peak RSS stays
    under 100 MB (it was 561-779 MB), the ids before it are exported and the report quotes 80 characters."""
    out = tmp_path / "out"
    peak = tmp_path / "peak-rss"
    exporter = [sys.executable, "-m", "exporter", "export", "-", "--format", fmt]
    process = subprocess.Popen(
        [sys.executable, "-c", PEAK_RSS_OF, str(peak), *exporter, "--base-url", api.url, "--out", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
    )
    assert process.stdin is not None

    def feed() -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(before)
            block = b"x" * (1 << 20)
            for _ in range(_LINE_BYTES >> 20):
                process.stdin.write(block)
        finally:
            process.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    assert process.stderr is not None
    stderr = process.stderr.read()  # not communicate(): it would close stdin under the writer
    process.wait(timeout=120)
    writer.join()
    assert process.returncode == ExitCode.INCOMPLETE, stderr.decode()
    peak_kib = int(peak.read_text())
    assert 10 * 1024 < peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
    assert sorted(r["id"] for r in read_records(out)) == ["a", "b"]
    [bad] = failed_lines(out)
    assert bad["reason"] == "bad_manifest_line"
    assert len(bad["id"]) <= 80
    assert f"line of {_LINE_BYTES} bytes" in bad["error"]
