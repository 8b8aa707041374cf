"""The archive index on disk (`exporter.archive.index`): kept by the writer, caught up, never trusted blindly.

Every check compares the index with the checkpoint itself, replayed from its
first byte (`assert_exact`): every id at its first ordinal, every ordinal in its
commit, the state (files, runs, counts) equal.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import zlib
from pathlib import Path

import pytest

from exporter.archive import checkpoint, index, index_format, layout
from exporter.archive.index_format import HEADER_BYTES, ORDINAL_BYTES, TRAILER_BYTES, Run, RunHeader
from exporter.archive.safe_fs import SafeDir
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, Compression
from exporter.digests import id_digest
from exporter.errors import ArchiveCorrupt


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flush a run every 40 ids and merge only runs of similar size, so a few hundred ids make many."""
    monkeypatch.setattr(index, "FLUSH_IDS", 40)
    monkeypatch.setattr(index, "MERGE_FLOOR", 1)


def request(refetch: bool = False) -> RunRequest:
    return RunRequest(started_at="2026-01-01T00:00:00.000Z", refetch=refetch, manifest="m.txt", shard=None)


def export_run(
    out: Path, ids: list[str], *, per_commit: int = 7, end: bool = True, **settings: object
) -> None:
    """One run of the archive's writer committing `ids`, `per_commit` at a time."""
    archive = Archive.open(ArchiveSettings(out_dir=out, **settings), request())  # type: ignore[arg-type]
    try:
        for start in range(0, len(ids), per_commit):
            archive.commit([(i, json.dumps({"id": i}).encode()) for i in ids[start : start + per_commit]])
        if end:
            archive.end_run(at="t", exit_code=0, status="complete", counts={"exported": len(ids)})
    finally:
        archive.close()


def replayed(out: Path) -> tuple[checkpoint.CheckpointState, list[tuple[checkpoint.Commit, int]]]:
    """The checkpoint replayed from its first byte: its state, and each commit with its first ordinal."""
    state = checkpoint.CheckpointState()
    found = []
    ordinal = 0
    with open(out / layout.CHECKPOINT_NAME, "rb") as handle:
        for commit in checkpoint.commits(handle, state):
            found.append((commit, ordinal))
            ordinal += len(commit.ids)
    return state, found


def assert_exact(out: Path, *, absent: list[str] = ()) -> index.IndexReport:  # type: ignore[assignment]
    """The index of `out`, read as a reader does, says exactly what the checkpoint says."""
    state, commits = replayed(out)
    with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
        assert view.state.files == state.files
        assert view.state.runs == state.runs
        assert (view.state.ids, view.state.valid_bytes, view.state.torn_tail) == (
            state.ids,
            state.valid_bytes,
            state.torn_tail,
        )
        first: dict[str, int] = {}
        for commit, base in commits:
            for offset, record_id in enumerate(commit.ids):
                first.setdefault(record_id, base + offset)
                place = view.place(base + offset)
                assert (place.file, place.start, place.end, place.crc32) == (
                    commit.file,
                    commit.start,
                    commit.end,
                    commit.crc32,
                )
                assert base + offset - place.first_ordinal == offset
        for record_id, ordinal in first.items():
            assert view.lookup(id_digest(record_id)) == ordinal, record_id
        for record_id in absent:
            assert view.lookup(id_digest(record_id)) is None
        return view.report


def run_files(out: Path) -> list[str]:
    return sorted(name for name in os.listdir(out) if layout.index_run_span(name) is not None)


# --- kept by the writer ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
@pytest.mark.usefixtures("small_runs")
def test_the_writer_keeps_the_index_exact_over_runs_and_rotation(
    tmp_path: Path, compress: Compression
) -> None:
    """Several runs, rotating files, duplicates listed in the checkpoint: the index covers it all, exactly."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(150)], compress=compress, max_file_bytes=900)
    export_run(out, [f"b-{i}" for i in range(90)] + ["a-3"], compress=compress, max_file_bytes=900)
    export_run(out, [], compress=compress)  # a run that commits nothing
    report = assert_exact(out, absent=["nope", "a-150", ""])
    assert report.covered_bytes == report.checkpoint_bytes == (out / layout.CHECKPOINT_NAME).stat().st_size
    assert report.covered_ids == report.ids == 241
    assert len(run_files(out)) == len(report.runs) <= 6
    assert not [n for n in os.listdir(out) if layout.is_index_temp(n)]


@pytest.mark.usefixtures("small_runs")
def test_runs_are_flushed_during_a_run_and_merged_by_size(tmp_path: Path) -> None:
    """A reader sees the index advance while the writer still has the archive open."""
    out = tmp_path / "out"
    archive = Archive.open(ArchiveSettings(out_dir=out), request())
    try:
        for start in range(0, 400, 10):
            archive.commit([(f"x-{i}", b"{}") for i in range(start, start + 10)])
        with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
            assert view.report.covered_ids >= 360  # all but the last unflushed stretch
            assert view.ids == 400
            assert 1 < len(view.report.runs) <= 6
            assert view.lookup(id_digest("x-399")) == 399  # from the tail, replayed in memory
    finally:
        archive.close()
    assert_exact(out)


def test_a_new_archive_has_an_index_from_its_first_commit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_run(out, ["only"])
    assert len(run_files(out)) == 1
    assert assert_exact(out).covered_ids == 1


# --- caught up, rebuilt, never trusted over the checkpoint ----------------------------------------


def damage(path: Path, rng: random.Random) -> None:
    raw = bytearray(path.read_bytes())
    raw[rng.randrange(len(raw))] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("harm", ["delete", "damage", "truncate", "other-version", "stray", "behind"])
@pytest.mark.usefixtures("small_runs")
def test_a_missing_damaged_or_behind_index_is_caught_up_by_the_next_run(tmp_path: Path, harm: str) -> None:
    """Whatever happened to the index files, a reader stays exact and the next run repairs the index."""
    rng = random.Random(harm)
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(300)])
    runs = run_files(out)
    victim = out / runs[rng.randrange(len(runs))]
    if harm == "delete":
        victim.unlink()
    elif harm == "damage":
        damage(victim, rng)
    elif harm == "truncate":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif harm == "other-version":
        raw = bytearray(victim.read_bytes())
        raw[8] = 2
        victim.write_bytes(bytes(raw))
    elif harm == "stray":
        (out / layout.index_run_name(5, 10)).write_bytes(b"not a run")
        (out / (layout.index_run_name(0, 99) + ".tmp-0123456789abcdef")).write_bytes(b"half")
    elif harm == "behind":
        for name in runs[1:]:
            (out / name).unlink()
    assert_exact(out)  # a reader replays what the index no longer covers
    export_run(out, ["b-1"])
    report = assert_exact(out)
    assert report.covered_ids == report.ids == 301
    assert not report.ignored
    assert all(layout.index_run_span(n) is not None or not n.startswith("index-") for n in os.listdir(out))


@pytest.mark.usefixtures("small_runs")
def test_an_index_of_another_history_is_cut_where_the_checkpoint_differs(tmp_path: Path) -> None:
    """Index files copied from another archive that shares the first commits are trusted only that far."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    common = [f"c-{i}" for i in range(100)]
    export_run(ours, common, end=False)
    shutil.copytree(ours, theirs)
    export_run(ours, [f"ours-{i}" for i in range(200)])
    export_run(theirs, [f"theirs-{i}" for i in range(300)])
    for name in run_files(ours):
        (ours / name).unlink()
    for name in run_files(theirs):
        shutil.copy(theirs / name, ours / name)
    report = assert_exact(ours, absent=["theirs-0", "theirs-299"])
    assert report.disagreed_at is not None
    assert report.covered_ids <= 100  # the common prefix at most
    export_run(ours, [])
    assert assert_exact(ours).covered_ids == 300


def test_a_checkpoint_shorter_than_the_index_is_followed(tmp_path: Path) -> None:
    """A checkpoint restored from an older backup: the index beyond it is dropped, not believed."""
    out = tmp_path / "out"
    export_run(out, ["a", "b"])
    backup = (out / layout.CHECKPOINT_NAME).read_bytes()
    export_run(out, ["c", "d"])
    (out / layout.CHECKPOINT_NAME).write_bytes(backup)
    (out / "records-00001.ndjson").write_bytes(
        (out / "records-00001.ndjson").read_bytes()[: len(b'{"id": "a"}\n') * 2]
    )
    assert_exact(out, absent=["c", "d"])


def test_torn_last_checkpoint_line_is_left_out(tmp_path: Path) -> None:
    """A torn last line is neither indexed nor trusted; the next run cuts it and indexes on."""
    out = tmp_path / "out"
    export_run(out, ["a", "b"])
    with open(out / layout.CHECKPOINT_NAME, "ab") as handle:
        handle.write(b'{"t":"commit","file":"records-00001.ndjson","end":99,"li')
    report = assert_exact(out, absent=["c"])
    assert report.covered_bytes == report.checkpoint_bytes
    export_run(out, ["c"])
    assert assert_exact(out).ids == 3


def test_rebuild_builds_the_same_index_from_the_checkpoint(tmp_path: Path) -> None:
    """`rebuild` throws the index away and writes it again: same answers, one run."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(50)], compress="zstd")
    before = {name: (out / name).read_bytes() for name in run_files(out)}
    with SafeDir.open_existing(out) as directory:
        report = index.rebuild(directory)
    assert report.covered_ids == 50
    assert {name: (out / name).read_bytes() for name in run_files(out)} == before
    assert_exact(out)


@pytest.mark.parametrize("merge", ["ranges", "slices"])
def test_a_rebuild_in_many_segments_writes_the_index_a_single_segment_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merge: str
) -> None:
    """Segments of 12 ids (own bucket bits) merged by ranges give the very bytes of one segment laid out at
    once; merged by buckets, the same answers."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(300)] + ["a-7", "", "a-299"], compress="zstd")
    with SafeDir.open_existing(out) as directory:
        index.rebuild(directory, flush_ids=1 << 20)
        (whole,) = run_files(out)
        once = (out / whole).read_bytes()
        monkeypatch.setattr(index_format, "_SORT_COST", 0.0 if merge == "ranges" else 1.0)
        monkeypatch.setattr(index_format, "_RANGE_ENTRIES", 16)
        report = index.rebuild(directory, flush_ids=3)
    assert report.runs == [whole]
    if merge == "ranges":
        assert (out / whole).read_bytes() == once
    assert_exact(out, absent=["a-300"])


def test_refetch_moves_the_index_with_its_generation(tmp_path: Path) -> None:
    """--refetch sets the index aside with the files it describes; each generation's index stays exact."""
    out = tmp_path / "out"
    export_run(out, ["old-1", "old-2"])
    archive = Archive.open(ArchiveSettings(out_dir=out), request(refetch=True))
    try:
        archive.commit([("new-1", b"{}")])
    finally:
        archive.close()
    assert archive.superseded_to is not None
    assert run_files(archive.superseded_to)
    assert assert_exact(archive.superseded_to, absent=["new-1"]).ids == 2
    assert assert_exact(out, absent=["old-1"]).ids == 1


def test_the_run_header_ties_the_index_to_the_checkpoint_bytes(tmp_path: Path) -> None:
    """Each run records the sha256 of the checkpoint up to where it ends (what readers check)."""
    out = tmp_path / "out"
    export_run(out, ["a", "b", "c"])
    data = (out / layout.CHECKPOINT_NAME).read_bytes()
    for name in run_files(out):
        run = Run.open((out / name).read_bytes())
        assert run.header.sha_end == hashlib.sha256(data[: run.header.ckpt_end]).digest()
        assert run.header.sha_start == hashlib.sha256(data[: run.header.ckpt_start]).digest()


# --- entries main's writer adds: split commits, shipped files ---------------------------------------


def test_a_commit_split_over_several_entries_is_indexed_exactly(tmp_path: Path) -> None:
    """A batch whose ids would make an entry over the cap is logged as several commit entries in one
    write (`checkpoint.commit_groups`); the writer's index folds in each, at its own offset."""
    out = tmp_path / "out"
    ids = [f"split-{n:05d}-{'x' * 30}" for n in range(9_000)]  # about 390 KB of ids in one batch
    export_run(out, ids, per_commit=len(ids), compress="gzip")
    state, commits = replayed(out)
    assert len(commits) > 1
    report = assert_exact(out)
    assert report.covered_ids == state.ids == len(ids)  # the run files cover it: nothing left to replay


def test_the_index_carries_where_files_were_shipped(tmp_path: Path) -> None:
    """A `shipped` entry (`--out s3://`, in the work dir's stage) is part of the state the index keeps."""
    out = tmp_path / "out"
    archive = Archive.open(ArchiveSettings(out_dir=out), request())
    try:
        archive.commit([("a", b'{"id":"a"}')])
        name = archive.seal()
        assert name is not None
        archive.log_shipped(name, key=f"p/{name}", checksum="c2hh", etag='"e"', version=None)
        archive.commit([("b", b'{"id":"b"}')])
        archive.end_run(at="t", exit_code=0, status="complete", counts={"exported": 2})
    finally:
        archive.close()
    state, _ = replayed(out)
    assert state.files[name].shipped is not None
    report = assert_exact(out)
    assert report.covered_ids == 2


def forge_ordinals(path: Path, ordinal: int) -> None:
    """Rewrite every ordinal of the run file at `path` to `ordinal`, its crc32 made right again:
    a forged run that every check at open passes (magic, sizes, crc32, state, the checkpoint's sha256)."""
    raw = bytearray(path.read_bytes())
    header = RunHeader.unpack(bytes(raw[:HEADER_BYTES]))
    at, size = header.sections()["ordinals"]
    raw[at : at + size] = ordinal.to_bytes(ORDINAL_BYTES, "big") * header.count
    body = len(raw) - TRAILER_BYTES
    raw[body : body + 4] = zlib.crc32(bytes(raw[:body])).to_bytes(4, "little")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("ordinal", [30, 2**31])
def test_a_run_placing_ids_outside_its_own_ordinals_is_damage_not_a_crash(
    tmp_path: Path, ordinal: int
) -> None:
    """A run file whose lookups answer ordinals it does not cover (forged with a right crc32) is
    ArchiveCorrupt naming it, so a run, a dry run and `get` exit 4, not an IndexError (exit 70)."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(30)])
    (run,) = run_files(out)
    forge_ordinals(out / run, ordinal)
    with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
        with pytest.raises(ArchiveCorrupt, match=re.escape(run)) as caught:
            view.lookup(id_digest("a-3"))
        assert "exporter index" in str(caught.value)
        assert view.lookup(id_digest("never-archived")) is None
