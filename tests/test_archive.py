"""archive.Archive: group commits, recovery after a crash, locking, rotation, compression."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from exporter.archive import checkpoint
from exporter.archive.layout import CHECKPOINT_LINE_BYTES
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, Compression
from exporter.digests import DigestSet, id_digest
from exporter.errors import ArchiveCorrupt, ArchiveLocked
from exporter.offline.verify import verify_archives


def request(refetch: bool = False) -> RunRequest:
    return RunRequest(started_at="2026-01-01T00:00:00.000Z", refetch=refetch, manifest="m.txt", shard=None)


def settings(out: Path, **changes: object) -> ArchiveSettings:
    return ArchiveSettings(out_dir=out, **changes)  # type: ignore[arg-type]


def lines_for(ids: list[str]) -> list[tuple[str, bytes]]:
    return [(i, json.dumps({"id": i, "v": 1}).encode()) for i in ids]


def committed(out: Path, ids: list[str], **changes: object) -> None:
    archive = Archive.open(settings(out, **changes), request())
    try:
        archive.commit(lines_for(ids))
    finally:
        archive.close()


def stored_ids(out: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(out.glob("records-*")):
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        elif path.name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
        ids.extend(json.loads(line)["id"] for line in raw.splitlines())
    return ids


def test_new_archive_is_private(tmp_path: Path) -> None:
    """A new archive directory is 0700 and every file in it 0600, whatever the umask."""
    out = tmp_path / "a" / "b"
    old = os.umask(0)
    try:
        committed(out, ["x"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_commit_writes_lines_and_checkpoint(tmp_path: Path) -> None:
    """A commit appends the lines in order and logs their ids and the file's new length."""
    committed(tmp_path, ["a", "b", "c"])
    assert stored_ids(tmp_path) == ["a", "b", "c"]
    entries = [json.loads(line) for line in (tmp_path / "checkpoint.ndjson").read_text().splitlines()]
    commit = next(e for e in entries if e["t"] == "commit")
    assert commit["ids"] == ["a", "b", "c"]
    assert commit["end"] == (tmp_path / "records-00001.ndjson").stat().st_size
    assert commit["lines"] == 3


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_a_batch_too_large_for_one_entry_is_split_into_commits(tmp_path: Path, codec: Compression) -> None:
    """A batch of 30,000 records (say, tiny records in a byte-bounded batch): every checkpoint entry stays
    under the cap readers hold, each commit decodes on its own, and verify finds the archive whole."""
    ids = [f"recording-{n:010}-{'x' * 20}" for n in range(30_000)]  # 44 bytes each in an entry: 1.3 MB
    committed(tmp_path, ids, compress=codec)
    lines = (tmp_path / "checkpoint.ndjson").read_bytes().splitlines(keepends=True)
    assert max(map(len, lines)) <= CHECKPOINT_LINE_BYTES
    commits = [json.loads(line) for line in lines if b'"t":"commit"' in line]
    assert len(commits) == 6  # 261,632 bytes of ids in each but the last
    assert [i for c in commits for i in c["ids"]] == ids
    assert stored_ids(tmp_path) == ids
    assert commits[-1]["end"] == next(tmp_path.glob("records-*")).stat().st_size
    report = verify_archives([tmp_path])
    assert report.ok, report.findings
    assert report.records == len(ids)


def test_reopen_knows_what_is_archived(tmp_path: Path) -> None:
    """Ids committed by an earlier run are in `archived` when the archive is opened again."""
    committed(tmp_path, ["a", "b"])
    committed(tmp_path, ["c"])
    archive = Archive.open(settings(tmp_path), request())
    try:
        assert all(id_digest(i) in archive.archived for i in "abc")
        assert id_digest("d") not in archive.archived
        assert archive.run == 3
    finally:
        archive.close()
    assert stored_ids(tmp_path) == ["a", "b", "c"]


def test_uncommitted_tail_is_cut_back(tmp_path: Path) -> None:
    """Bytes written after the last checkpointed commit (a crash mid-batch) are removed on open."""
    committed(tmp_path, ["a", "b"])
    records = tmp_path / "records-00001.ndjson"
    size = records.stat().st_size
    with open(records, "ab") as handle:
        handle.write(b'{"id":"c","v":1}\n{"id":"d","v"')
    archive = Archive.open(settings(tmp_path), request())
    archive.close()
    assert records.stat().st_size == size
    assert stored_ids(tmp_path) == ["a", "b"]


def test_torn_checkpoint_line_is_dropped(tmp_path: Path) -> None:
    """A half-written last checkpoint entry is removed and its records are cut back too."""
    committed(tmp_path, ["a"])
    records = tmp_path / "records-00001.ndjson"
    size = records.stat().st_size
    with open(records, "ab") as handle:
        handle.write(b'{"id":"b","v":1}\n')
    with open(tmp_path / "checkpoint.ndjson", "ab") as handle:
        handle.write(b'{"t":"commit","file":"records-00001.ndjson","end":')
    archive = Archive.open(settings(tmp_path), request())
    try:
        archive.commit(lines_for(["c"]))
    finally:
        archive.close()
    assert records.stat().st_size > size
    assert stored_ids(tmp_path) == ["a", "c"]
    for line in (tmp_path / "checkpoint.ndjson").read_bytes().splitlines():
        json.loads(line)


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    """While one run holds the archive, another process cannot open it."""
    archive = Archive.open(settings(tmp_path), request())
    try:
        code = (
            "import sys; from pathlib import Path\n"
            "from exporter.archive.writer import Archive, RunRequest\n"
            "from exporter.config import ArchiveSettings\n"
            "from exporter.errors import ArchiveLocked\n"
            "try:\n"
            "    Archive.open(ArchiveSettings(out_dir=Path(sys.argv[1])), RunRequest(started_at='t',"
            " refetch=False, manifest='m', shard=None))\n"
            "except ArchiveLocked as exc:\n"
            "    print(exc); sys.exit(9)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 9
        assert f"pid {os.getpid()}" in result.stdout
        with pytest.raises(ArchiveLocked):
            Archive.open(settings(tmp_path), request())
    finally:
        archive.close()
    Archive.open(settings(tmp_path), request()).close()


def test_rotation_closes_files_with_their_hash(tmp_path: Path) -> None:
    """With max_file_bytes, full files are closed, hashed in the checkpoint and never reopened."""
    archive = Archive.open(settings(tmp_path, max_file_bytes=40), request())
    try:
        for batch in (["a", "b"], ["c", "d"], ["e", "f"], ["g"]):
            archive.commit(lines_for(batch))  # 42 bytes a pair: each pair fills a file
    finally:
        archive.close()
    files = sorted(p.name for p in tmp_path.glob("records-*"))
    assert files == [f"records-0000{n}.ndjson" for n in (1, 2, 3, 4)]
    closes = [
        json.loads(line)
        for line in (tmp_path / "checkpoint.ndjson").read_text().splitlines()
        if '"t":"close"' in line
    ]
    assert [c["file"] for c in closes] == files[:3]
    for close in closes:
        data = (tmp_path / close["file"]).read_bytes()
        assert close["sha256"] == hashlib.sha256(data).hexdigest()
        assert close["bytes"] == len(data)
    assert stored_ids(tmp_path) == list("abcdefg")


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_commits_survive_a_torn_tail(tmp_path: Path, codec: Compression) -> None:
    """Each commit is its own gzip member / zstd frame, so cutting back leaves a readable file."""
    committed(tmp_path, ["a", "b"], compress=codec)
    committed(tmp_path, ["c"], compress=codec)
    path = next(tmp_path.glob("records-*"))
    size = path.stat().st_size
    with open(path, "ab") as handle:  # a crash mid-frame
        handle.write(gzip.compress(b'{"id":"x"}\n')[:15] if codec == "gzip" else b"\x28\xb5\x2f\xfd\x00")
    archive = Archive.open(settings(tmp_path, compress=codec), request())
    archive.close()
    assert path.stat().st_size == size
    assert stored_ids(tmp_path) == ["a", "b", "c"]
    tool = shutil.which("zcat" if codec == "gzip" else "zstdcat")
    if tool is not None:
        assert subprocess.run([tool, str(path)], capture_output=True, check=True).stdout.count(b"\n") == 3


def test_changing_compression_starts_a_new_file(tmp_path: Path) -> None:
    """A different --compress closes the open file and continues in a new one with the new codec."""
    committed(tmp_path, ["a"])
    committed(tmp_path, ["b"], compress="zstd")
    names = sorted(p.name for p in tmp_path.glob("records-*"))
    assert names == ["records-00001.ndjson", "records-00002.ndjson.zst"]
    assert stored_ids(tmp_path) == ["a", "b"]


def test_resumed_file_hash_covers_the_earlier_runs(tmp_path: Path) -> None:
    """The sha256 reported for a file appended by several runs is that of the whole file."""
    committed(tmp_path, ["a"])
    archive = Archive.open(settings(tmp_path), request())
    try:
        archive.commit(lines_for(["b"]))
        report = [f.to_json() for f in archive.files_report()]
    finally:
        archive.close()
    data = (tmp_path / "records-00001.ndjson").read_bytes()
    assert report == [
        {
            "name": "records-00001.ndjson",
            "bytes": len(data),
            "lines": 2,
            "sha256": hashlib.sha256(data).hexdigest(),
            "closed": False,
        }
    ]


def test_stray_next_file_from_a_crash_is_removed(tmp_path: Path) -> None:
    """A records file created but never committed (crash before its first commit) is discarded."""
    committed(tmp_path, ["a"], max_file_bytes=10)
    (tmp_path / "records-00002.ndjson").write_bytes(b'{"id":"zz"}\n')
    committed(tmp_path, ["b"], max_file_bytes=10)
    assert stored_ids(tmp_path) == ["a", "b"]


def test_unknown_records_file_is_refused(tmp_path: Path) -> None:
    """An unlisted records file out of sequence stops the run instead of being overwritten."""
    committed(tmp_path, ["a"])
    (tmp_path / "records-00007.ndjson").write_bytes(b'{"id":"zz"}\n')
    with pytest.raises(ArchiveCorrupt, match="records-00007"):
        Archive.open(settings(tmp_path), request())


def test_records_without_checkpoint_are_refused(tmp_path: Path) -> None:
    """Records files with no checkpoint are not an archive to add to: refused, left untouched."""
    (tmp_path / "records-00001.ndjson").write_bytes(b'{"id":"zz"}\n')
    with pytest.raises(ArchiveCorrupt, match="no checkpoint"):
        Archive.open(settings(tmp_path), request())
    assert (tmp_path / "records-00001.ndjson").read_bytes() == b'{"id":"zz"}\n'


def test_missing_or_shortened_committed_file_is_refused(tmp_path: Path) -> None:
    """Committed records that are gone are reported, not silently forgotten."""
    committed(tmp_path, ["a", "b"])
    path = tmp_path / "records-00001.ndjson"
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(ArchiveCorrupt, match="were committed"):
        Archive.open(settings(tmp_path), request())
    path.unlink()
    with pytest.raises(ArchiveCorrupt, match="missing"):
        Archive.open(settings(tmp_path), request())


def test_failed_file_merges_runs(tmp_path: Path) -> None:
    """failed.ndjson keeps earlier failures this run did not touch and drops those it handled."""
    archive = Archive.open(settings(tmp_path), request())
    archive.record_failures(
        [
            b'{"id":"gone","reason":"not_found"}\n',
            b'{"id":"flaky","reason":"http_error"}\n',
            b'{"id":"later","reason":"http_error"}\n',
            b'{"id":"bad line","reason":"bad_manifest_line"}\n',
        ]
    )
    archive.write_failed(DigestSet())
    archive.close()
    archive = Archive.open(settings(tmp_path), request())
    assert id_digest("gone") in archive.known_missing
    assert id_digest("flaky") not in archive.known_missing
    handled = DigestSet()
    handled.add(id_digest("flaky"))
    archive.commit(lines_for(["flaky"]))
    archive.record_failures([b'{"id":"new","reason":"timeout"}\n'])
    count = archive.write_failed(handled)
    archive.close()
    ids = [json.loads(line)["id"] for line in (tmp_path / "failed.ndjson").read_text().splitlines()]
    assert ids == ["gone", "later", "new"]
    assert count == 3


def test_refetch_sets_the_old_generation_aside(tmp_path: Path) -> None:
    """--refetch moves the current archive to superseded/ and starts empty; nothing is deleted."""
    committed(tmp_path, ["a", "b"])
    archive = Archive.open(settings(tmp_path), request(refetch=True))
    try:
        assert archive.superseded_to is not None
        assert len(archive.archived) == 0
        archive.commit(lines_for(["a"]))
    finally:
        archive.close()
    old = next((tmp_path / "superseded").iterdir())
    assert stored_ids(old) == ["a", "b"]
    assert (old / "checkpoint.ndjson").exists()
    assert stored_ids(tmp_path) == ["a"]


def test_interrupted_refetch_resumes_instead_of_restarting(tmp_path: Path) -> None:
    """Running an unfinished --refetch again continues it rather than setting it aside too."""
    committed(tmp_path, ["a"])
    archive = Archive.open(settings(tmp_path), request(refetch=True))
    archive.commit(lines_for(["b"]))
    archive.end_run(at="t", exit_code=130, status="interrupted", counts={})
    archive.close()
    archive = Archive.open(settings(tmp_path), request(refetch=True))
    try:
        assert archive.superseded_to is None
        assert id_digest("b") in archive.archived
    finally:
        archive.end_run(at="t", exit_code=0, status="complete", counts={})
        archive.close()
    archive = Archive.open(settings(tmp_path), request(refetch=True))
    archive.close()
    assert archive.superseded_to is not None
    assert len(list((tmp_path / "superseded").iterdir())) == 2


def test_crash_during_superseding_is_finished_on_next_open(tmp_path: Path) -> None:
    """If a run died while moving the old generation aside, the next open completes the move first."""
    committed(tmp_path, ["a"])
    target = tmp_path / "superseded" / "x"
    target.mkdir(parents=True)
    os.replace(tmp_path / "records-00001.ndjson", target / "records-00001.ndjson")
    (tmp_path / ".superseding").write_text("superseded/x\n")
    archive = Archive.open(settings(tmp_path), request())
    try:
        assert len(archive.archived) == 0
    finally:
        archive.close()
    # The index goes with the generation it describes.
    moved = sorted(p.name for p in target.iterdir())
    assert moved == ["checkpoint.ndjson", "index-000000000000-0000000000cf.idx", "records-00001.ndjson"]
    assert not (tmp_path / ".superseding").exists()


def test_checkpoint_entries_describe_runs(tmp_path: Path) -> None:
    """Run start and end entries are logged so a later reader can tell finished runs from killed ones."""
    archive = Archive.open(settings(tmp_path), request())
    archive.commit(lines_for(["a"]))
    archive.end_run(at="t2", exit_code=0, status="complete", counts={"exported": 1})
    archive.close()
    Archive.open(settings(tmp_path), request()).close()  # killed: no end entry
    with open(tmp_path / "checkpoint.ndjson", "rb") as handle:
        state = checkpoint.replay(handle, lambda ids: None)
    assert [(r.run, r.status, r.exit_code) for r in state.runs] == [(1, "complete", 0), (2, None, None)]
    assert state.runs[0].counts == {"exported": 1}
