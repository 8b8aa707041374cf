"""Planning against the archive index (`archive.archived.ArchivedIds`) plans exactly as a digest set does.

The planner answers most lines of a plain-text manifest in bulk, against a window
of the ids archived near them; whatever the manifest holds (ids out of order,
repeated, blank lines, comments, padding, CRLF, invalid ids, bytes that are not
UTF-8, over-long lines) and however the archive is laid out (runs on disk, a tail
in memory, ids that no text line can be), the plan must be the one the
per-line planner makes over a `DigestSet` of every archived id: the same ids to
fetch in the same order, the same failures, the same counts.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.archive import archived, index, index_format
from exporter.archive.archived import ArchivedIds
from exporter.archive.safe_fs import SafeDir
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings, Shard
from exporter.digests import DigestSet, id_digest
from exporter.manifest import read_entries
from exporter.plan import PlanBatch, Planner


def build_archive(out: Path, commits: list[list[str]]) -> None:
    archive = Archive.open(
        ArchiveSettings(out_dir=out), RunRequest(started_at="t", refetch=False, manifest="m", shard=None)
    )
    try:
        for ids in commits:
            archive.commit([(i, json.dumps({"id": i}).encode()) for i in ids])
    finally:
        archive.close()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)] or [b""]


def plan_all(planner: Planner) -> tuple[list[str], list[tuple[str, str, int | None]], int]:
    fetch: list[str] = []
    failures: list[tuple[str, str, int | None]] = []
    skipped = 0
    while (batch := planner.next_batch(7)) is not None:
        assert isinstance(batch, PlanBatch)
        fetch += batch.fetch
        failures += [(f.id, f.reason.value, f.line) for f in batch.failures]
        skipped += batch.skipped
    return fetch, failures, skipped


def manifest_lines(archived_ids: list[str], rng: random.Random) -> list[bytes]:
    """A manifest over an archive: its ids mostly in order, with every kind of line a manifest holds."""
    ids = list(archived_ids)
    for _ in range(len(ids) // 4):  # local reordering, as requests in flight finish out of order
        at = rng.randrange(len(ids))
        to = min(len(ids) - 1, at + rng.randrange(1, 6))
        ids[at], ids[to] = ids[to], ids[at]
    if rng.random() < 0.3:
        rng.shuffle(ids)  # another manifest altogether
    lines: list[bytes] = []
    for record_id in ids:
        roll = rng.random()
        raw = record_id.encode("utf-8", "surrogatepass")
        if roll < 0.05:
            lines.append(b"  " + raw + b"\r")  # padded, CRLF
        elif roll < 0.85:
            lines.append(raw)
        if rng.random() < 0.05:
            lines.append(rng.choice(archived_ids).encode("utf-8", "surrogatepass"))  # repeated later
        if rng.random() < 0.08:
            lines.append(
                rng.choice(
                    [
                        b"",
                        b"# a comment",
                        b"new-" + str(rng.randrange(50)).encode(),
                        b"bad/id",
                        b"\xff\xfe",
                        b"x" * 90,
                    ]
                )
            )
    return lines


archived_ids_st = st.lists(
    st.one_of(
        st.from_regex(r"[a-z]{1,3}-[0-9]{1,4}", fullmatch=True),
        st.sampled_from(["#hash", "", " padded", "tab\there", "new-3", "ünï", "line\nbreak"]),
    ),
    min_size=1,
    max_size=120,
    # An archive never lists an id twice (but through damage, which verify reports: then a repeat of
    # such an id in the manifest may count as already archived rather than as a duplicate).
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(
    ids=archived_ids_st,
    commit_size=st.integers(min_value=1, max_value=9),
    seed=st.integers(min_value=0, max_value=10_000),
    chunk=st.sampled_from([3, 17, 64, 1 << 16]),
    shard=st.sampled_from([None, Shard(index=1, count=3)]),
    indexed=st.booleans(),
)
def test_the_index_plans_exactly_as_a_digest_set(
    tmp_path_factory: object,
    ids: list[str],
    commit_size: int,
    seed: int,
    chunk: int,
    shard: Shard | None,
    indexed: bool,
) -> None:
    """Same fetches, failures and counts with the index's window (or, not `indexed`, the batch path alone)."""
    rng = random.Random(seed)
    out = tmp_path_factory.mktemp("plan") / "out"  # type: ignore[attr-defined]
    commits = [ids[at : at + commit_size] for at in range(0, len(ids), commit_size)]
    with (
        mock.patch.object(index, "FLUSH_IDS", 20),
        mock.patch.object(index, "MERGE_FLOOR", 1),
        mock.patch.object(archived, "BLOCK_IDS", 8),
        mock.patch.object(archived, "WINDOW_BLOCKS", 2),
        mock.patch.object(archived, "_LOW_WATER", 8),
        mock.patch.object(archived, "_RESYNC_AT", 3),
        mock.patch.object(index_format, "ID_POINT", 4),
        mock.patch.object(index, "_ID_STRETCH", 1),
    ):
        build_archive(out, commits)
        data = b"\n".join(manifest_lines(ids, rng)) + rng.choice([b"", b"\n"])
        digests = DigestSet()
        for record_id in ids if indexed else ():
            digests.add(id_digest(record_id))
        missing = DigestSet()
        for number in range(0, 50, 3):  # found missing by an earlier run: not asked again
            missing.add(id_digest(f"new-{number}"))
        plain = Planner(
            iter(list(read_entries(chunked(data, chunk), "text", "-", max_line_bytes=80))),
            archived=digests,
            known_missing=missing,
            shard=shard,
        )
        expected = plan_all(plain)
        with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
            windowed = Planner(
                read_entries(chunked(data, chunk), "text", "-", max_line_bytes=80),
                archived=ArchivedIds(view) if indexed else DigestSet(),
                known_missing=missing,
                shard=shard,
            )
            got = plan_all(windowed)
    assert got == expected
    assert windowed.counts == plain.counts
    assert len(windowed.seen) == len(plain.seen)


def test_a_resume_is_answered_by_the_window(tmp_path: Path) -> None:
    """The archived part of a resumed manifest is claimed in bulk: few lookups, the right counts."""
    out = tmp_path / "out"
    ids = [f"r-{n}" for n in range(5000)]
    build_archive(out, [ids[at : at + 50] for at in range(0, 4000, 50)])
    data = b"\n".join(i.encode() for i in ids) + b"\n"
    with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
        archive_ids = ArchivedIds(view)
        lookups = 0
        real_lookup = index.IndexView.lookup

        def counting(self: index.IndexView, digest: bytes) -> int | None:
            nonlocal lookups
            lookups += 1
            return real_lookup(self, digest)

        with mock.patch.object(index.IndexView, "lookup", counting):
            planner = Planner(
                read_entries([data], "text", "-"), archived=archive_ids, known_missing=DigestSet()
            )
            fetch, failures, _ = plan_all(planner)
    assert fetch == ids[4000:]
    assert not failures
    assert planner.counts.already_archived == 4000
    assert lookups == 1000  # only the ids to fetch were looked up


def test_ids_of_the_index_come_back_in_order_from_any_ordinal(tmp_path: Path) -> None:
    """`IndexView.ids_from` hands out the archived ids in order, from the run's start or 1,024-mark before."""
    out = tmp_path / "out"
    ids = [f"id-{n}" for n in range(5000)]
    with mock.patch.object(index, "FLUSH_IDS", 1500), mock.patch.object(index, "MERGE_FLOOR", 1):
        build_archive(out, [ids[at : at + 333] for at in range(0, 5000, 333)])
    with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
        assert len(view.runs()) > 1
        for start in (0, 1, 1023, 1024, 2047, 3500, 4999):
            got = list(itertools.chain.from_iterable(chunk for _, chunk in view.ids_from(start)))
            first = next(view.ids_from(start))[0]
            assert start - start % 1024 <= first <= start
            assert got == [i.encode() for i in ids[first:]]


def test_an_id_met_ahead_of_the_window_is_a_duplicate_when_the_window_reaches_it(tmp_path: Path) -> None:
    """Looked up before the window got there, an id is not answered again as a first visit later on."""
    out = tmp_path / "out"
    ids = [f"a-{n}" for n in range(100)]
    with (
        mock.patch.object(archived, "BLOCK_IDS", 8),
        mock.patch.object(archived, "WINDOW_BLOCKS", 2),
        mock.patch.object(archived, "_LOW_WATER", 8),
        mock.patch.object(index_format, "ID_POINT", 4),
        mock.patch.object(index, "_ID_STRETCH", 1),
    ):
        build_archive(out, [ids[at : at + 5] for at in range(0, 100, 5)])
        data = b"\n".join(i.encode() for i in ["a-50", "a-70", *ids]) + b"\n"
        with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
            entries = read_entries(chunked(data, 24), "text", "-")  # a few lines a chunk
            planner = Planner(entries, archived=ArchivedIds(view), known_missing=DigestSet())
            fetch, failures, skipped = plan_all(planner)
    assert (fetch, failures, skipped) == ([], [], 102)
    assert (planner.counts.already_archived, planner.counts.duplicates) == (100, 2)
