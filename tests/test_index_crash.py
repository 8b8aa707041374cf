"""kill -9 at chosen instants of the index's life: the next reader is exact, the next run catches up.

A helper process runs the archive's real writer with small index runs (a run
every 30 ids, merged by size), and stops dead at one instant: halfway through
writing a run, halfway through a merge (by buckets or by ranges), halfway
through an `exporter index --rebuild` (a segment, or the merge), after a merge's rename but before its
inputs are removed, with a commit's records written but its checkpoint entry
torn, with an entry durable but not yet folded into the index, and right after
a seal. It prints PAUSED there and the test SIGKILLs it. Then a reader must be
exact (`test_index.assert_exact`), the next run must open it, catch the index up
to the whole checkpoint and leave no temporary file, and `exporter verify` must
find the archive sound.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import cli, export_args, spawn
from test_crash import decompressed
from test_index import assert_exact, export_run

from exporter.archive import index, layout
from exporter.offline.get import Found, get_records
from exporter.offline.verify import verify_archives

#: Real processes killed and resumed: `pytest -m 'not slow'` leaves them out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

HELPER = r"""
import os, sys, time
from pathlib import Path
from exporter.archive import index, index_format, layout, writer
from exporter.archive.safe_fs import SafeDir
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings

index.FLUSH_IDS = 30
index.MERGE_FLOOR = 1
out, where, nth, compress = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
calls = {"n": 0}
rebuilding = False

def due():
    calls["n"] += 1
    return calls["n"] == nth

def pause():
    print("PAUSED", flush=True)
    time.sleep(120)

if where.endswith("-ranges"):  # merges sort by ranges (`merged_by_ranges`), whatever they cost
    index_format._SORT_COST = 0.0
    where = where.removesuffix("-ranges")

def torn(self, name, placed):  # some of a run file's pieces, under its temporary name; then the pause
    temp, fd = self.create_temp(name)
    for at, piece in placed:
        os.pwrite(fd, piece, at)
    os.fsync(fd)
    pause()

def merging(self, span):
    return len([s for s in map(layout.index_run_span, self.names()) if s and span[0] <= s[0] < span[1]]) > 1

if where in ("run-write", "merge-write", "rebuild-write"):
    original_write, original_placed = SafeDir.write_whole, SafeDir.write_placed
    def write_whole(self, name, chunks):
        span = layout.index_run_span(name)
        if span is not None:
            parts = list(chunks)
            merge = merging(self, span) == (where == "merge-write")
            if (rebuilding if where == "rebuild-write" else merge) and due():
                data = b"".join(parts)
                torn(self, name, [(0, data[: len(data) // 2])])
            chunks = parts
        return original_write(self, name, chunks)
    def write_placed(self, name, size, pieces, finish):
        pieces = list(pieces)
        if (rebuilding if where == "rebuild-write" else where == "merge-write") and due():
            torn(self, name, pieces[: len(pieces) // 2])
        return original_placed(self, name, size, pieces, finish)
    SafeDir.write_whole, SafeDir.write_placed = write_whole, write_placed
elif where == "merge-unlink":
    original_unlink = SafeDir.unlink
    def unlink(self, name):
        if layout.index_run_span(name) is not None and due():
            pause()
        return original_unlink(self, name)
    SafeDir.unlink = unlink
elif where in ("commit-torn", "seal"):
    original_log = Archive._log
    def log(self, entry):
        if where == "commit-torn" and entry.startswith(b'{"t":"commit"') and due():
            os.write(self._checkpoint_fd, entry[: len(entry) // 2])
            os.fsync(self._checkpoint_fd)
            pause()
        original_log(self, entry)
        if where == "seal" and entry.startswith(b'{"t":"close"') and due():
            pause()
    Archive._log = log
elif where == "before-fold":
    original_logged = index.IndexKeeper.logged
    def logged(self, entry):
        if due():
            pause()
        original_logged(self, entry)
    index.IndexKeeper.logged = logged

for run in range(3):
    archive = Archive.open(
        ArchiveSettings(out_dir=out, compress=compress, max_file_bytes=700),
        RunRequest(started_at=f"t{run}", refetch=False, manifest="m", shard=None),
    )
    for start in range(0, 120, 6):
        archive.commit([(f"r{run}-{i}", b'{"id":"r%d-%d"}' % (run, i)) for i in range(start, start + 6)])
    archive.end_run(at="t", exit_code=0, status="complete", counts={})
    archive.close()
if where == "rebuild-write":  # `exporter index --rebuild`: segments of 120 ids, then their merge
    rebuilding = True
    index.rebuild(SafeDir.open_archive(out), flush_ids=30)
print("FINISHED", flush=True)
"""

INSTANTS = [
    ("run-write", 3),
    ("run-write", 9),
    ("merge-write", 1),
    ("merge-write", 4),
    ("merge-write-ranges", 1),
    ("merge-write-ranges", 4),
    ("rebuild-write", 2),
    ("rebuild-write-ranges", 5),
    ("merge-unlink", 1),
    ("merge-unlink", 5),
    ("commit-torn", 7),
    ("commit-torn", 30),
    ("before-fold", 12),
    ("before-fold", 45),
    ("seal", 2),
]


def run_until_paused(out: Path, where: str, nth: int, compress: str) -> None:
    """Start the helper and SIGKILL it once it says PAUSED (it must get there)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(out), where, str(nth), compress],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            break
    os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert line == b"PAUSED\n", f"the helper never reached {where} #{nth}: {line!r} {stderr.decode()[-2000:]}"


@pytest.mark.parametrize("compress", ["none", "zstd"])
@pytest.mark.parametrize(("where", "nth"), INSTANTS, ids=[f"{w}-{n}" for w, n in INSTANTS])
def test_kill_at_an_instant_then_read_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, nth: int, compress: str
) -> None:
    """Killed at that instant: a reader is exact at once, and the next run leaves the index whole."""
    out = tmp_path / "out"
    run_until_paused(out, where, nth, compress)
    assert_exact(out, absent=["never"])  # a reader, before anything repairs the archive
    monkeypatch.setattr(index, "FLUSH_IDS", 30)
    monkeypatch.setattr(index, "MERGE_FLOOR", 1)
    export_run(out, ["after-1", "after-2"], compress=compress, max_file_bytes=700)
    report = assert_exact(out)
    assert report.covered_bytes == report.checkpoint_bytes  # the next start replays nothing
    assert not report.ignored
    names = os.listdir(out)
    assert not [n for n in names if layout.is_index_temp(n)]
    assert not [n for n in names if n.startswith(layout.INDEX_PREFIX) and n not in report.runs]
    verified = verify_archives([out])
    assert not verified.problems, verified.problems


def test_shards_and_a_refetch_killed_at_random_then_resumed(api: FakeServerHandle, tmp_path: Path) -> None:
    """Two shards exported by real processes SIGKILLed at random moments, then a --refetch of one, killed
    too: every generation's index is exact, and `get` over the shards gives each record as archived."""
    rng = random.Random(18)
    api.configure(latency_ms=5, jitter_ms=5)
    ids = [f"rec-{n}" for n in range(300)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    shards = [tmp_path / f"shard-{k}" for k in range(2)]

    kills = 0

    def run(k: int, *extra: str, kill_after: float | None = None) -> None:
        nonlocal kills
        args = export_args(
            manifest,
            shards[k],
            api.url,
            "--shard",
            f"{k}/2",
            "--concurrency",
            "8",
            "--quiet",
            "--compress",
            "zstd",
            "--compress-batch",
            "4KB",
            "--max-file-bytes",
            "20KB",
            *extra,
        )
        if kill_after is None:
            assert cli(*args).returncode == 0
            return
        process = spawn(*args, "--rate", "150")  # some 1 s a shard: the kill lands mid-run
        time.sleep(kill_after)
        kills += process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)

    for k in range(2):
        for _ in range(3):
            run(k, kill_after=rng.uniform(0.3, 1.5))
        run(k)
    run(0, "--refetch", kill_after=rng.uniform(0.5, 1.5))
    run(0, "--refetch")
    assert kills >= 4, "the runs ended before they were killed"
    generations = [*shards, *(shards[0] / "superseded").iterdir()]
    for out in generations:
        report = assert_exact(out, absent=["rec-300"])
        assert report.covered_bytes == report.checkpoint_bytes, out
    stored = {}
    for out in shards:
        for path in sorted(out.glob("records-*")):
            for line in decompressed(path).splitlines(keepends=True):
                stored[json.loads(line)["id"]] = line
    assert sorted(stored) == sorted(ids)
    results = list(get_records(shards, ids))
    assert [r.line for r in results if isinstance(r, Found)] == [stored[i] for i in ids]
    done = cli("verify", *map(str, shards), "--manifest", str(manifest))
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("agrees with the checkpoint") == 2
