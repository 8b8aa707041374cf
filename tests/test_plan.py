"""plan.Planner: every manifest entry sorted into exactly one bucket, without a request or a loop.

Pure: manifest entries and the archive's digest sets in, batches of ids to
fetch, failures to record and counts out.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import Shard
from exporter.digests import DigestSet, id_digest, shard_of
from exporter.errors import Reason
from exporter.manifest import Entry, read_entries
from exporter.plan import PlanBatch, PlanCounts, Planner


def _digests(ids: Iterable[str]) -> DigestSet:
    digests = DigestSet()
    for record_id in ids:
        digests.add(id_digest(record_id))
    return digests


def _entries(*values: str) -> list[Entry]:
    return [Entry(line, value) for line, value in enumerate(values, start=1)]


def _plan_all(planner: Planner, size: int = 1024) -> list[PlanBatch]:
    batches = []
    while (batch := planner.next_batch(size)) is not None:
        batches.append(batch)
    return batches


def test_each_entry_lands_in_one_bucket() -> None:
    """Fetched, archived, repeated, invalid, bad line or missing before: counted once each, in order."""
    entries = [
        *_entries("new-1", "done-1", "new-1", "../admin", "gone-1", "done-1", "new-2"),
        Entry(8, "a\x00b", problem="a NUL byte"),
    ]
    planner = Planner(iter(entries), archived=_digests(["done-1"]), known_missing=_digests(["gone-1"]))
    (batch,) = _plan_all(planner)
    assert batch.fetch == ["new-1", "new-2"]
    assert [(f.id, f.reason, f.line) for f in batch.failures] == [
        ("../admin", Reason.INVALID_ID, 4),
        ("gone-1", Reason.NOT_FOUND, None),
        ("a\x00b", Reason.BAD_MANIFEST_LINE, 8),
    ]
    assert batch.skipped == 3
    assert planner.counts == PlanCounts(
        entries=8,
        to_fetch=2,
        duplicates=2,
        already_archived=1,
        known_missing=1,
        invalid=1,
        bad_lines=1,
    )


def test_retry_failed_asks_again_for_ids_found_missing() -> None:
    """With --retry-failed an earlier 404 is fetched, not reported."""
    planner = Planner(
        iter(_entries("gone-1")), archived=DigestSet(), known_missing=_digests(["gone-1"]), retry_failed=True
    )
    (batch,) = _plan_all(planner)
    assert (batch.fetch, batch.failures, planner.counts.known_missing) == (["gone-1"], [], 0)


def test_a_shard_fetches_only_its_own_ids() -> None:
    """Ids of other shards are skipped and counted; the shards together fetch every id once."""
    ids = [f"rec-{i}" for i in range(200)]
    fetched: list[str] = []
    for index in range(3):
        planner = Planner(
            iter(_entries(*ids)),
            archived=DigestSet(),
            known_missing=DigestSet(),
            shard=Shard(index=index, count=3),
        )
        own = [i for batch in _plan_all(planner) for i in batch.fetch]
        assert all(shard_of(id_digest(i), 3) == index for i in own)
        assert planner.counts.other_shard == len(ids) - len(own)
        fetched += own
    assert sorted(fetched) == sorted(ids)


def test_batches_hold_at_most_size_entries_and_end_with_none() -> None:
    """A batch plans `size` entries (skipped ones included); then None, and None again."""
    planner = Planner(
        iter(_entries(*(f"r{i}" for i in range(10)))), archived=DigestSet(), known_missing=DigestSet()
    )
    sizes = [len(batch.fetch) for batch in _plan_all(planner, size=4)]
    assert sizes == [4, 4, 2]
    assert planner.next_batch(4) is None


@settings(max_examples=200, deadline=None)
@given(
    manifest=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "..", ""]), max_size=30),
    archived=st.sets(st.sampled_from(["a", "b", "z"])),
    missing=st.sets(st.sampled_from(["c", "d"])),
    size=st.integers(1, 7),
)
def test_the_counts_add_up_to_the_entries(
    manifest: list[str], archived: set[str], missing: set[str], size: int
) -> None:
    """Whatever the manifest and the archive: each entry is counted in one bucket, each new valid id
    is fetched once, and `seen` holds the ids this run handled that the archive did not hold."""
    planner = Planner(iter(_entries(*manifest)), archived=_digests(archived), known_missing=_digests(missing))
    batches = _plan_all(planner, size=size)
    counts = planner.counts
    buckets = (
        counts.to_fetch
        + counts.duplicates
        + counts.already_archived
        + counts.known_missing
        + counts.invalid
        + counts.bad_lines
        + counts.other_shard
    )
    assert counts.entries == buckets == len(manifest)
    fetched = [i for batch in batches for i in batch.fetch]
    assert fetched == list(dict.fromkeys(i for i in manifest if i not in archived | missing | {"..", ""}))
    assert counts.already_archived == len(set(manifest) & archived)
    assert len(planner.seen) == len(set(manifest) - archived)


_LINES = st.sampled_from(
    [
        *(b"a", b"b", b"c", b" b ", b"\xc3\xa9t\xc3\xa9", b"..", b""),
        *(b"# note", b"a b", b"\xff", b"x" * 300, b"x/y"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=40),
    cuts=st.lists(st.integers(0, 400), max_size=4),
    fmt=st.sampled_from(["text", "ndjson", "csv"]),
)
def test_counting_repeats_gives_the_counts_deciding_them_gives(
    lines: list[bytes], cuts: list[int], fmt: str
) -> None:
    """A dry run's `counts_only` (repeats counted at the end) and a run's planner (each decided in
    turn) sort any manifest into the same buckets: valid, invalid, non-ASCII, repeated, padded,
    over-long, bad lines, in chunks that are all sane ids or mixed, in every format."""
    if fmt == "ndjson":
        texts = [line.decode("utf-8", "replace").encode() for line in lines]
        lines = [b'{"id": "%s"}' % text for text in texts]
    elif fmt == "csv":
        lines = [b"id", *(line for line in lines if b"," not in line)]
    data = b"".join(line + b"\n" for line in lines)
    pieces = [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)]

    def counts(counts_only: bool) -> PlanCounts:
        entries = read_entries([piece for piece in pieces if piece], fmt, "-", max_line_bytes=256)  # type: ignore[arg-type]
        planner = Planner(entries, archived=DigestSet(), known_missing=DigestSet(), counts_only=counts_only)
        batches = _plan_all(planner, size=5)
        if counts_only:
            assert not any(batch.fetch for batch in batches)
        return planner.counts

    assert counts(counts_only=True) == counts(counts_only=False)


def test_counts_only_decides_when_there_is_more_than_repeats_to_decide() -> None:
    """With ids archived, a shard, or earlier 404s to skip, `counts_only` plans id by id as a run does."""
    manifest = ("a", "b", "a", "c")
    for options in (
        {"archived": _digests(["a"])},
        {"shard": Shard(index=0, count=2)},
        {"known_missing": _digests(["c"])},
    ):
        planner = Planner(
            iter(_entries(*manifest)),
            **{"archived": DigestSet(), "known_missing": DigestSet(), **options},  # type: ignore[arg-type]
            counts_only=True,
        )
        fetched = [i for batch in _plan_all(planner) for i in batch.fetch]
        assert fetched, options
        assert planner.counts.to_fetch == len(fetched), options
