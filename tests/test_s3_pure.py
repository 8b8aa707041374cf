"""The pure parts of the object-storage archive: URLs, checksums and parts, listings, standings, the
remote form of a directory, and the writer's shipping hooks. No server.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from pathlib import Path

import pytest

from exporter.archive import checkpoint
from exporter.archive.layout import CHECKPOINT_NAME, segment_name
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, ManifestSource
from exporter.errors import ArchiveCorrupt, UsageError
from exporter.offline.status import gather_status
from exporter.offline.verify import verify_archives
from exporter.remote.checksums import MAX_PARTS, composite, part_size, parts
from exporter.remote.location import Location, parse
from exporter.remote.state import Standing, sort_listing, standing, strays

REQUEST = RunRequest(started_at="2026-01-01T00:00:00.000Z", refetch=False, manifest="m.txt", shard=None)


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://bkt", "bkt", ""),
        ("s3://bkt/", "bkt", ""),
        ("s3://my.bucket-1/exports/2026/", "my.bucket-1", "exports/2026"),
    ],
)
def test_urls(text: str, bucket: str, prefix: str) -> None:
    location = parse(text)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert location.key("records-00001.ndjson") == (f"{prefix}/" if prefix else "") + "records-00001.ndjson"
    assert location.name_of(location.key("checkpoint.d/00000001.ndjson")) == "checkpoint.d/00000001.ndjson"


@pytest.mark.parametrize(
    "text",
    ["s3://", "s3://ab", "s3://UPPER/x", "s3://a_b/x", "s3://bkt/a//b", "s3://bkt/../x", "s3://bkt/a\nb"],
)
def test_bad_urls(text: str) -> None:
    with pytest.raises(UsageError):
        parse(text)


def test_part_sizes_stay_under_10000_parts() -> None:
    """8 MiB parts until a file needs more than 10,000 of them; then larger, in whole MiB."""
    assert part_size(100 << 20, 8 << 20) == 8 << 20
    huge = 5 * (1 << 40)  # 5 TiB, S3's largest object
    each = part_size(huge, 8 << 20)
    assert each % (1 << 20) == 0
    assert len(parts(huge, each)) <= MAX_PARTS
    pieces = parts(20, 8)
    assert [(p.number, p.offset, p.length) for p in pieces] == [(1, 0, 8), (2, 8, 8), (3, 16, 4)]


def test_composite_is_s3s() -> None:
    """The SHA-256 of the parts' digests, base64, with the count: what S3 answers for a COMPOSITE object."""
    digests = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    expected = base64.b64encode(hashlib.sha256(digests[0] + digests[1]).digest()).decode() + "-2"
    assert composite(digests) == expected


def test_listing_is_sorted_and_gaps_are_damage() -> None:
    location = Location("bkt", "p")
    listed = [
        ("p/records-00001.ndjson", 10),
        ("p/checkpoint.d/00000002.ndjson", 3),
        ("p/checkpoint.d/00000001.ndjson", 3),
        ("p/summary.d/run-00002.json", 5),
        ("p/failed.d/run-00001.ndjson", 0),
        ("p/failed.d/run-00002.ndjson", 0),
        ("p/notes.txt", 1),
        ("other/records-00009.ndjson", 1),
    ]
    listing = sort_listing(location, listed)
    assert [n for n, _, _ in listing.segments] == [1, 2]
    assert listing.records == {"records-00001.ndjson": 10}
    assert listing.last_failed == "p/failed.d/run-00002.ndjson"
    assert listing.other == ["p/notes.txt"]
    with pytest.raises(ArchiveCorrupt, match="checkpoint segment 1 is missing"):
        sort_listing(location, [("p/checkpoint.d/00000002.ndjson", 3)])


def test_standing_and_strays() -> None:
    assert standing(b"abc", b"ab") is Standing.AHEAD
    assert standing(b"ab", b"ab") is Standing.AHEAD
    assert standing(b"", b"ab") is Standing.BEHIND
    assert standing(b"ax", b"ab") is Standing.DIVERGED
    location = Location("bkt", "p")
    listing = sort_listing(location, [(f"p/records-0000{n}.ndjson", 1) for n in (1, 2, 3, 5)])
    orphan, foreign = strays(location, listing, ["records-00001.ndjson", "records-00002.ndjson"])
    assert orphan == "records-00003.ndjson"
    assert foreign == ["p/records-00005.ndjson"]


def _archive(tmp_path: Path, count: int, per_file: int) -> tuple[Path, list[str]]:
    """A local archive of `count` records, a file sealed every `per_file`."""
    out = tmp_path / "out"
    ids = [f"id-{n}" for n in range(count)]
    archive = Archive.open(ArchiveSettings(out_dir=out, max_file_bytes=None), REQUEST)
    try:
        for start in range(0, count, 3):
            archive.commit([(i, json.dumps({"id": i}).encode()) for i in ids[start : start + 3]])
            if (start + 3) % per_file == 0:
                archive.seal()
        archive.end_run(at="2026-01-01T00:00:01.000Z", exit_code=0, status="complete", counts={})
    finally:
        archive.close()
    return out, ids


def test_a_directory_in_the_remote_form_reads_as_the_archive(tmp_path: Path) -> None:
    """checkpoint.d/ segments cut anywhere between entries: verify and status read them as the checkpoint."""
    out, ids = _archive(tmp_path, 30, 9)
    lines = (out / CHECKPOINT_NAME).read_bytes().splitlines(keepends=True)
    (out / CHECKPOINT_NAME).unlink()
    cuts = [0, 2, 3, 7, len(lines)]
    for number, (start, end) in enumerate(itertools.pairwise(cuts), 1):
        path = out / segment_name(number)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"".join(lines[start:end]))
    manifest = tmp_path / "ids.txt"
    manifest.write_text("\n".join(ids) + "\n")
    report = verify_archives([out], manifest=ManifestSource(path=manifest))
    assert report.ok, [str(f) for f in report.findings]
    assert report.records == 30
    status = gather_status(out)
    assert status.records == 30
    assert len(status.files) == 4
    (out / segment_name(2)).unlink()
    broken = verify_archives([out])
    assert [str(p) for p in broken.problems] == [
        f"{out}/checkpoint.d: segment 2 is missing (the next is 00000003.ndjson): the checkpoint cannot be "
        "read past it; download it again, or restore it from the bucket's versions"
    ]


def test_the_writer_seals_early_and_forgets_shipped_files(tmp_path: Path) -> None:
    """seal() closes the open file with its sha256; a shipped, dropped file is no longer needed on disk."""
    out = tmp_path / "stage"
    settings = ArchiveSettings(out_dir=out, max_file_bytes=None)
    archive = Archive.open(settings, REQUEST)
    try:
        archive.commit([("a", b'{"id":"a"}'), ("b", b'{"id":"b"}')])
        name = archive.seal()
        assert name == "records-00001.ndjson"
        state = archive.state.files[name]
        assert state.closed
        assert state.sha256 == hashlib.sha256(b'{"id":"a"}\n{"id":"b"}\n').hexdigest()
        assert archive.seal() is None
        end = archive.log_shipped(name, key="p/" + name, checksum="x", etag='"e"', version="v1")
        assert end == (out / CHECKPOINT_NAME).stat().st_size
        archive.drop_shipped(name)
        assert not (out / name).exists()
        archive.commit([("c", b'{"id":"c"}')])
    finally:
        archive.close()
    reopened = Archive.open(settings, REQUEST)
    try:
        assert reopened.state.files[name].shipped == checkpoint.ShippedCopy(
            key="p/" + name, checksum="x", etag='"e"', version="v1"
        )
        assert len(reopened.archived) == 3
    finally:
        reopened.close()
    (out / "records-00002.ndjson").unlink()  # closed? no: open, and never shipped
    with pytest.raises(ArchiveCorrupt, match=r"records-00002\.ndjson is missing"):
        Archive.open(settings, REQUEST)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_an_orphan_is_taken_in_with_entries_under_the_cap(tmp_path: Path, compression: str) -> None:
    """18,000 ids in one piece: commits split where the file's frames end, each entry under the cap,
    and the directory they make verifies (every line, crc32 and the sha256)."""
    import gzip
    import os

    import zstandard

    from exporter.archive.layout import CHECKPOINT_LINE_BYTES, records_name
    from exporter.remote.adopt import _entries
    from exporter.remote.checksums import b64
    from exporter.remote.store import ObjectFacts

    name = records_name(1, compression)  # type: ignore[arg-type]
    ids = [f"orphan-{n:06d}" for n in range(18_000)]
    frames = []
    for start in range(0, len(ids), 1000):  # one frame per commit of 1,000 records, as the writer would
        text = b"".join(json.dumps({"id": i}).encode() + b"\n" for i in ids[start : start + 1000])
        if compression == "gzip":
            frames.append(gzip.compress(text, mtime=0))
        elif compression == "zstd":
            frames.append(zstandard.ZstdCompressor().compress(text))
        else:
            frames.append(text)
    data = b"".join(frames)
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(data)
    checksum = b64(hashlib.sha256(data).digest())
    facts = ObjectFacts(
        key=f"p/{name}", size=len(data), etag='"e"', version_id="v", checksum_sha256=checksum,
        checksum_type="FULL_OBJECT", lock_mode=None, retain_until=None, legal_hold=False, sse=None,
    )  # fmt: skip
    fd = os.open(out / name, os.O_RDONLY)
    try:
        entries = _entries(fd, name, len(data), b"", facts)
    finally:
        os.close(fd)
    lines = entries.splitlines(keepends=True)
    assert len(lines) >= 4  # several commits, a close, a shipped
    assert max(map(len, lines)) < CHECKPOINT_LINE_BYTES
    (out / CHECKPOINT_NAME).write_bytes(entries)
    manifest = tmp_path / "ids.txt"
    manifest.write_text("\n".join(ids) + "\n")
    report = verify_archives([out], manifest=ManifestSource(path=manifest))
    assert report.ok, [str(f) for f in report.findings][:5]
    fd = os.open(out / name, os.O_RDONLY)
    try:
        with pytest.raises(ArchiveCorrupt, match="already in the archive"):
            _entries(fd, name, len(data), entries, facts)
    finally:
        os.close(fd)
