"""What the read-only commands cost in memory when the archive's index is missing (`index.open_view`).

Then the whole checkpoint is the tail `open_view` replays into memory, a
segment at a time laid out as compact runs, so what a command holds grows by a
small constant per archived id and never by a Python object per id. Each
command runs as a real process over a real archive written by the archive's own
writer (no HTTP: a million ids in seconds), once over 3,000 ids for the base
(interpreter, imports) and once over 1,000,000; its own peak RSS is measured
(`runs.cli_peak_rss`: a small launcher reaps it with `wait4`).

A million, not fewer: a segment is 262,144 ids (`FLUSH_IDS * CATCH_UP_FACTOR`)
and laying one out costs a fixed ~39 MB while it lasts, which at a few hundred
thousand ids is most of the peak; over several segments the per-id part shows,
and so would a replay that stopped cutting the tail into segments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runs import cli_peak_rss

from exporter.archive.layout import index_run_span
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings

pytestmark = pytest.mark.slow

IDS = 1_000_000
BASE_IDS = 3_000
PER_COMMIT = 1_000
#: Peak RSS over the base may grow by at most this much per archived id. The runs the tail is laid
#: out in hold ~31 bytes an id; the peak comes when they are merged into one, holding the runs, the
#: merge's pieces and their join: 97-101 measured at 1,000,000 ids. Kept per id, a `bytes` took it to
#: 154 and a `str` in a `set` to 196-207; a tail replayed as one segment peaks at 183.
BYTES_AN_ID = 130


def record_id(number: int) -> str:
    return f"s-{number:08d}"


def archive_without_index(root: Path, count: int) -> tuple[Path, Path]:
    """An archive of `count` ids (zstd, 1,000 a commit) and a manifest listing them; its index deleted."""
    root.mkdir()
    out, manifest = root / "out", root / "ids.txt"
    ids = [record_id(n) for n in range(count)]
    manifest.write_text("".join(f"{i}\n" for i in ids), encoding="ascii")
    request = RunRequest(started_at="t", refetch=False, manifest=str(manifest), shard=None)
    writer = Archive.open(ArchiveSettings(out_dir=out, compress="zstd"), request)
    try:
        for start in range(0, count, PER_COMMIT):
            writer.commit([(i, b'{"id":"%s"}' % i.encode()) for i in ids[start : start + PER_COMMIT]])
        writer.end_run(at="t", exit_code=0, status="complete", counts={"exported": count})
    finally:
        writer.close()
    runs = [p for p in out.iterdir() if index_run_span(p.name) is not None]
    assert runs, "the writer kept no index: nothing to delete, so this test would replay nothing"
    for path in runs:
        path.unlink()
    return out, manifest


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under `out`: its size and mtime (a read-only command changes neither, adds none)."""
    return {
        str(path.relative_to(out)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(out.rglob("*"))
    }


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, Path]]:
    """Both archives, built once: the million takes most of this module's time."""
    root = tmp_path_factory.mktemp("index-memory")
    return {count: archive_without_index(root / str(count), count) for count in (BASE_IDS, IDS)}


def command(name: str, out: Path, manifest: Path, count: int) -> tuple[list[str], object]:
    """The command's arguments, and what it must print (a check that it read the whole tail)."""
    last = record_id(count - 1)
    if name == "get":
        return ["get", str(out), "--id", last], {"id": last}
    if name == "dry-run":
        argv = ["export", str(manifest), "--base-url", "http://127.0.0.1:9", "--out", str(out)]
        return [*argv, "--dry-run", "--json"], (count, 0)
    return ["status", str(out), "--json"], {"runs": [], "bytes": 0, "covered_ids": 0, "ids": count}


def shown(name: str, stdout: str) -> object:
    report = json.loads(stdout)
    if name == "dry-run":
        return report["already_archived"], report["to_fetch"]
    if name == "status":
        return report["index"]
    return report


@pytest.mark.parametrize("name", ["get", "dry-run", "status"])
def test_a_read_only_command_replays_a_missing_index_in_a_small_constant_per_id_and_writes_nothing(
    archives: dict[int, tuple[Path, Path]], name: str, tmp_path: Path
) -> None:
    """Over a million ids and no index, `get`, `export --dry-run` and `status` answer from the replayed
    checkpoint with a peak RSS at most BYTES_AN_ID bytes an id over the same command's on 3,000 ids,
    and leave the archive as it was (no index file written)."""
    peaks: dict[int, int] = {}
    for count, (out, manifest) in archives.items():
        argv, expected = command(name, out, manifest, count)
        before = snapshot(out)
        result, peak_kib = cli_peak_rss(*argv, report=tmp_path / f"peak-{count}")
        assert result.returncode == 0, result.stderr
        assert shown(name, result.stdout) == expected
        after = snapshot(out)
        assert after == before, f"{name} wrote {sorted(set(after.items()) - set(before.items()))}"
        peaks[count] = peak_kib * 1024
    per_id = (peaks[IDS] - peaks[BASE_IDS]) / (IDS - BASE_IDS)
    mib = {count: f"{peak / (1 << 20):.1f} MiB" for count, peak in peaks.items()}
    assert per_id < BYTES_AN_ID, f"{name}: peak RSS {mib}: {per_id:.0f} bytes an id"
