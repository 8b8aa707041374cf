"""Crash safety: SIGKILL a real exporter process at random moments, resume, prove exactly-once.

Each scenario kills `python -m exporter` several times at seeded random
moments (during start-up, then after a random number of requests: mid-fetch,
mid-commit, mid-rotation), then runs it to
completion and checks the archive: every id exactly once, each value exactly as
served, no partial line, the checkpoint listing exactly the records on disk,
and no more repeated requests per kill than were outstanding at the kill.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import signal
import sys
import time
from pathlib import Path

import fakeapi
import pytest
import zstandard
from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import cli, spawn

from exporter.archive import checkpoint
from exporter.archive.layout import CHECKPOINT_NAME

#: Real processes killed and resumed: `pytest -m 'not slow'` leaves them out.
pytestmark = pytest.mark.slow

sys.set_int_max_str_digits(0)

CONCURRENCY = 8
# What a kill can cost: requests in flight, plus results fetched but not yet on
# disk (the writer's batch and the result queue, each at most max(16, concurrency)).
REPEATS_PER_KILL = CONCURRENCY + 2 * max(16, CONCURRENCY)
# A compressed commit gathers up to --compress-batch bytes of records first (or 5 s of them).
COMPRESS_BATCH_BYTES = 32_000
# Small records: a --compress-batch of them is more than the 64 results a batch once held.
SMALL_RECORD_BYTES = 300
SMALL_COMPRESS_BATCH_BYTES = 60_000
# Commits of over 1 MiB, which two threads deflate at the same time into one gzip member.
PIECES_RECORD_BYTES = 40_000
PIECES_BATCH_BYTES = 1_100_000
# The first kill comes this long after the start, usually before any request (start-up); the
# others when the fake API has answered a random number of requests, up to this share of the ids,
# so each lands mid-run however fast the machine: the rest of the ids take the fake API's latency.
STARTUP_KILL_S = (0.05, 0.3)
KILLED_MID_RUN = 4
LAST_KILL_SHARE = 0.8


def decompressed(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
    return raw


def archive_lines(out: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(out.glob("records-*")):
        data = decompressed(path)
        assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a partial line"
        lines.extend(data.splitlines())
    return lines


def checkpoint_ids(out: Path) -> list[str]:
    ids: list[str] = []
    path = out / CHECKPOINT_NAME
    if path.exists():
        with open(path, "rb") as handle:
            checkpoint.replay(handle, ids.extend)
    return ids


def served(api: FakeServerHandle, record_id: str) -> object:
    body = fakeapi.edge_body(record_id) if record_id.startswith("edge-") else None
    if body is None:
        body = fakeapi.success_body(record_id, api.config, frozenset())
    return json.loads(body)["data"]


@pytest.mark.parametrize(
    ("options", "seed", "record_bytes"),
    [
        ([], 1, None),
        (
            [
                "--compress",
                "gzip",
                "--max-file-bytes",
                "200KB",
                "--compress-batch",
                str(COMPRESS_BATCH_BYTES),
            ],
            2,
            None,
        ),
        (
            [
                "--compress",
                "zstd",
                "--max-file-bytes",
                "100KB",
                "--compress-batch",
                str(COMPRESS_BATCH_BYTES),
            ],
            3,
            None,
        ),
        (["--compress", "zstd", "--compress-batch", str(SMALL_COMPRESS_BATCH_BYTES)], 4, SMALL_RECORD_BYTES),
        (
            ["--compress", "gzip", "--max-file-bytes", "2MB", "--compress-batch", str(PIECES_BATCH_BYTES)],
            5,
            PIECES_RECORD_BYTES,
        ),
    ],
    ids=["plain", "gzip-rotating", "zstd-rotating", "zstd-small-records", "gzip-in-pieces"],
)
def test_sigkill_at_random_moments_then_resume(
    api: FakeServerHandle, tmp_path: Path, options: list[str], seed: int, record_bytes: int | None
) -> None:
    """After any number of SIGKILLs, running again yields every id exactly once, exact, and whole.

    A kill costs at most the requests in flight and the results not yet
    committed: with --compress, the batch gathering and the one being written,
    each at most --compress-batch bytes and one record.
    """
    rng = random.Random(seed)
    api.configure(
        latency_ms=10,
        jitter_ms=10,
        fail_first={"flaky-": ["503", 1]},
        retry_after_s=0,
        record_bytes=record_bytes,
    )
    ids = [f"rec-{i}" for i in range(800)] + [f"flaky-{i}" for i in range(20)] + ["edge-1", "edge-2"]
    rng.shuffle(ids)
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    args = [
        "export", str(manifest), "--base-url", api.url, "--out", str(out),
        "--rate", "0", "--concurrency", str(CONCURRENCY), "--quiet", *options,
    ]  # fmt: skip

    targets = sorted(rng.sample(range(1, int(LAST_KILL_SHARE * len(ids))), KILLED_MID_RUN))
    kills = 0
    for target in [None, *targets]:
        before = set(checkpoint_ids(out))
        process = spawn(*args)
        if target is None:
            time.sleep(rng.uniform(*STARTUP_KILL_S))
        else:
            while api.stats()["requests_total"] < target and process.poll() is None:
                time.sleep(0.005)
        assert process.poll() is None, f"the run ended before its kill: {process.communicate()[1]!r}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        kills += 1
        after = set(checkpoint_ids(out))
        assert before <= after, "a kill lost committed ids"

    result = cli(*args, timeout=120)
    assert result.returncode == 0, result.stderr

    lines = archive_lines(out)
    records = [json.loads(line) for line in lines]
    got = [r["id"] for r in records]
    assert sorted(got) == sorted(ids), "some id is missing or doubled"
    assert checkpoint_ids(out) == got, "checkpoint and records disagree"
    for record in records:
        assert record == served(api, record["id"])

    per_id = api.stats()["per_id"]
    # Each flaky id needs two requests (a 503, then the record); every other id one.
    repeated = sum(max(0, count - (2 if rid.startswith("flaky-") else 1)) for rid, count in per_id.items())
    bound = REPEATS_PER_KILL
    if "--compress" in options:
        batch_bytes = int(options[options.index("--compress-batch") + 1])
        smallest = min(len(line) for line in lines)
        bound = CONCURRENCY + 2 * (batch_bytes // smallest + 1)
    assert repeated <= kills * bound, (repeated, kills, bound, smallest if "--compress" in options else None)
