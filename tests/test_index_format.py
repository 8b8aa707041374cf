"""Unit and property tests for `exporter.archive.index_format`: runs built, looked up, merged, refused."""

from __future__ import annotations

import itertools
import random
import zlib
from array import array
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.archive import index_format
from exporter.archive.checkpoint import CheckpointState, Commit, FileState, RunState
from exporter.archive.index_format import (
    HEADER_BYTES,
    MAX_BUCKET_BITS,
    MIN_BUCKET_BITS,
    TRAILER_BYTES,
    IndexFormatError,
    Run,
    RunBuilder,
    bucket_bits,
    decode_state,
    empty_sha,
    encode_state,
    merged_by_ranges,
    merged_parts,
    sorting_is_cheaper,
    trailer,
)
from exporter.digests import id_digest

FILES = ["records-00001.ndjson", "records-00002.ndjson.zst"]

#: Any text an id could be, lone surrogates included (the exporter digests them with surrogatepass).
ids_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


def state_for(ids: int) -> CheckpointState:
    state = CheckpointState(ids=ids)
    for name in FILES:
        state.files[name] = FileState(name, size=10, lines=ids)
    state.runs.append(RunState(run=1, started_at="2026-01-01T00:00:00Z"))
    return state


def commits_of(batches: list[list[str]]) -> list[Commit]:
    """One commit per batch, with made-up byte ranges (a run only copies them)."""
    made, start, lines = [], 0, 0
    for number, ids in enumerate(batches):
        end = start + 100 + len(ids)
        made.append(
            Commit(FILES[number % 2], start, end, lines, lines + len(ids), crc32=number * 7, ids=list(ids))
        )
        start, lines = end, lines + len(ids)
    return made


def build(
    commits: list[Commit], *, first: int = 0, start: int = 0, end: int | None = None, bits: int | None = None
) -> Run:
    """A run holding `commits`, whose ids are numbered from `first`, covering checkpoint bytes start..end."""
    builder = RunBuilder(first_ordinal=first, ckpt_start=start)
    for number, commit in enumerate(commits):
        builder.add(commit, file_index=FILES.index(commit.file), ckpt_offset=start + number)
    end = start + len(commits) + 1 if end is None else end
    ids = first + len(builder)
    parts = builder.parts(
        ckpt_end=end, sha_start=empty_sha(), sha_end=bytes(32), state=state_for(ids), bits=bits
    )
    return Run.open(b"".join(parts))


def first_places(commits: list[Commit], first: int = 0) -> dict[str, int]:
    """The oracle: each id's first ordinal."""
    places: dict[str, int] = {}
    for ordinal, record_id in enumerate(itertools.chain.from_iterable(c.ids for c in commits), first):
        places.setdefault(record_id, ordinal)
    return places


batches_st = st.lists(st.lists(ids_text, max_size=12), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(batches=batches_st, absent=st.lists(ids_text, max_size=10))
def test_a_run_finds_every_id_at_its_first_place_and_nothing_else(
    batches: list[list[str]], absent: list[str]
) -> None:
    """Any ids (duplicates, empty, surrogates, any bucket): lookup gives the first ordinal, or None."""
    commits = commits_of(batches)
    run = build(commits)
    places = first_places(commits)
    for record_id, ordinal in places.items():
        assert run.lookup(id_digest(record_id)) == ordinal
    for record_id in absent:
        if record_id not in places:
            assert run.lookup(id_digest(record_id)) is None


@settings(max_examples=100, deadline=None)
@given(batches=batches_st)
def test_every_ordinal_is_placed_in_its_commit(batches: list[list[str]]) -> None:
    """place(ordinal) names the commit that lists the id, and the id's line in it."""
    commits = commits_of(batches)
    run = build(commits)
    ordinal = 0
    for number, commit in enumerate(commits):
        for line, _ in enumerate(commit.ids):
            place = run.place(ordinal, FILES)
            assert (place.file, place.start, place.end, place.crc32) == (
                commit.file,
                commit.start,
                commit.end,
                commit.crc32,
            )
            assert ordinal - place.first_ordinal == line
            assert place.count == len(commit.ids)
            assert place.ckpt_offset == number
            ordinal += 1
    assert [p.count for p in run.commit_places(FILES)] == [len(c.ids) for c in commits if c.ids]


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(ids_text, max_size=30), min_size=2, max_size=10),
    cuts=st.lists(st.integers(min_value=1, max_value=9), max_size=4),
    grouping=st.randoms(use_true_random=False),
)
def test_merged_runs_answer_as_one_run_built_at_once(
    batches: list[list[str]], cuts: list[int], grouping: random.Random
) -> None:
    """Split the commits into adjacent runs at any points, merge them in any grouping: same answers."""
    commits = commits_of(batches)
    bounds = sorted({0, len(commits), *(c for c in cuts if c < len(commits))})
    runs: list[Run] = []
    ordinal = 0
    for low, high in itertools.pairwise(bounds):
        run = build(commits[low:high], first=ordinal, start=low * 10, end=high * 10)
        runs.append(run)
        ordinal = run.header.end_ordinal
    while len(runs) > 1:  # merge random adjacent pairs (or more) until one is left
        at = grouping.randrange(len(runs) - 1)
        width = grouping.randint(2, len(runs) - at)
        merged = Run.open(b"".join(merged_parts(runs[at : at + width])))
        runs[at : at + width] = [merged]
    (run,) = runs
    places = first_places(commits)
    assert run.header.count == sum(len(c.ids) for c in commits)
    for record_id, place in places.items():
        assert run.lookup(id_digest(record_id)) == place
    assert [p.count for p in run.commit_places(FILES)] == [len(c.ids) for c in commits if c.ids]


def test_merging_grows_the_bucket_bits_with_the_ids() -> None:
    """A large merge re-lays its smaller runs with more bucket bits, and every id is still found."""
    commits = commits_of([[f"a-{i}" for i in range(3000)], [f"b-{i}" for i in range(30)]])
    big = build(commits[:1], end=10)
    small = build(commits[1:], first=3000, start=10, end=20)
    assert small.header.bits < big.header.bits
    merged = Run.open(b"".join(merged_parts([big, small])))
    assert merged.header.bits == bucket_bits(3030)
    for record_id, place in first_places(commits).items():
        assert merged.lookup(id_digest(record_id)) == place


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.lists(ids_text, max_size=40), min_size=1, max_size=8),
    grow=st.integers(min_value=1, max_value=4),
    stretch=st.sampled_from([1, 3, 17, 1 << 16]),
)
def test_a_run_read_with_more_bucket_bits_is_the_run_laid_out_with_them(
    batches: list[list[str]], grow: int, stretch: int
) -> None:
    """Re-laid as it is read, a stretch at a time: the same fanout and columns as built with those bits."""
    commits = commits_of(batches)
    few = build(commits)
    bits = min(MAX_BUCKET_BITS, few.header.bits + grow)
    many = build(commits, bits=bits)
    assert many.header.bits == bits
    with mock.patch.object(index_format, "_REBUCKET_ENTRIES", stretch):
        assert few.fanout_for(bits) == array("I", many._fanout)
        for column in ("keys", "checks", "ordinals"):
            assert list(few.bucket_slices(column, bits)) == list(many.bucket_slices(column))


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.lists(ids_text, max_size=30), min_size=2, max_size=10),
    grouping=st.randoms(use_true_random=False),
    stretch=st.sampled_from([1, 5, 1 << 16]),
)
def test_merges_that_grow_the_bucket_bits_at_every_step_answer_as_one_run(
    batches: list[list[str]], grouping: random.Random, stretch: int
) -> None:
    """Runs whose buckets hold pieces of several runs, re-laid with more bits by the next merge."""
    commits = commits_of(batches)
    with (
        mock.patch.object(index_format, "BUCKET_TARGET", 1),
        mock.patch.object(index_format, "_REBUCKET_ENTRIES", stretch),
    ):
        runs = []
        ordinal = 0
        for number, commit in enumerate(commits):
            run = build([commit], first=ordinal, start=number * 10, end=number * 10 + 10)
            runs.append(run)
            ordinal = run.header.end_ordinal
        while len(runs) > 1:
            at = grouping.randrange(len(runs) - 1)
            width = grouping.randint(2, len(runs) - at)
            runs[at : at + width] = [Run.open(b"".join(merged_parts(runs[at : at + width])))]
    (run,) = runs
    assert run.header.bits == max(MIN_BUCKET_BITS, min(MAX_BUCKET_BITS, run.header.count.bit_length()))
    for record_id, place in first_places(commits).items():
        assert run.lookup(id_digest(record_id)) == place
    assert [p.count for p in run.commit_places(FILES)] == [len(c.ids) for c in commits if c.ids]


def by_ranges(runs: list[Run]) -> Run:
    """`merged_by_ranges`' pieces put in place in zeros, then its trailer: the file a merge writes."""
    size, placed = merged_by_ranges(runs)
    buf = bytearray(size)
    for at, piece in placed:
        buf[at : at + len(piece)] = piece
    buf[size - TRAILER_BYTES :] = trailer(zlib.crc32(buf[: size - TRAILER_BYTES]))
    return Run.open(bytes(buf))


def split_runs(commits: list[Commit], cuts: list[int], bits: list[int | None]) -> list[Run]:
    """`commits` as adjacent runs, cut at `cuts`, each laid out with the next of `bits` (None: its own)."""
    bounds = sorted({0, len(commits), *(c for c in cuts if c < len(commits))})
    runs: list[Run] = []
    for number, (low, high) in enumerate(itertools.pairwise(bounds)):
        first = runs[-1].header.end_ordinal if runs else 0
        runs.append(
            build(
                commits[low:high], first=first, start=low * 10, end=high * 10, bits=bits[number % len(bits)]
            )
        )
    return runs


SECTIONS = ["fanout", "keys", "checks", "ordinals", "ids", "idpoints", "firsts"]


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(ids_text, max_size=30), min_size=2, max_size=10),
    cuts=st.lists(st.integers(min_value=1, max_value=9), max_size=5),
    bits=st.lists(st.sampled_from([None, 4, 5, 7, 9]), min_size=1, max_size=4),
    grouping=st.randoms(use_true_random=False),
    range_entries=st.sampled_from([1, 3, 1 << 15]),
    small_run=st.sampled_from([0, 5, 1 << 16]),
)
def test_runs_merged_by_ranges_are_the_run_built_at_once(
    batches: list[list[str]],
    cuts: list[int],
    bits: list[int | None],
    grouping: random.Random,
    range_entries: int,
    small_run: int,
) -> None:
    """Built runs of any bucket bits, merged by ranges in any grouping (ranges of any size, small runs
    read whole or not): the fanout, columns and ids of one run built at once with the same bits."""
    commits = commits_of(batches)
    runs = split_runs(commits, cuts, bits)
    with (
        mock.patch.object(index_format, "_RANGE_ENTRIES", range_entries),
        mock.patch.object(index_format, "_SMALL_RUN", small_run),
    ):
        while len(runs) > 1:
            at = grouping.randrange(len(runs) - 1)
            width = grouping.randint(2, len(runs) - at)
            runs[at : at + width] = [by_ranges(runs[at : at + width])]
    (run,) = runs
    once = build(commits, end=len(commits) * 10, bits=run.header.bits)
    assert [run.section(name) for name in SECTIONS] == [once.section(name) for name in SECTIONS]
    assert run.header == once.header


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.lists(ids_text, max_size=30), min_size=2, max_size=10),
    cuts=st.lists(st.integers(min_value=1, max_value=9), max_size=5),
    bits=st.lists(st.sampled_from([None, 4, 6]), min_size=1, max_size=3),
    grouping=st.randoms(use_true_random=False),
)
def test_merges_by_buckets_and_by_ranges_mixed_answer_as_one_run(
    batches: list[list[str]], cuts: list[int], bits: list[int | None], grouping: random.Random
) -> None:
    """A run merged by buckets (a bucket holds runs one after another, not in key order) merged again by
    ranges, and the other way round: every id at its first place."""
    commits = commits_of(batches)
    runs = split_runs(commits, cuts, bits)
    with (
        mock.patch.object(index_format, "_RANGE_ENTRIES", 2),
        mock.patch.object(index_format, "_SMALL_RUN", 3),
    ):
        while len(runs) > 1:
            at = grouping.randrange(len(runs) - 1)
            width = grouping.randint(2, len(runs) - at)
            group = runs[at : at + width]
            runs[at : at + width] = [
                by_ranges(group) if grouping.random() < 0.5 else Run.open(b"".join(merged_parts(group)))
            ]
    (run,) = runs
    for record_id, place in first_places(commits).items():
        assert run.lookup(id_digest(record_id)) == place
    assert [p.count for p in run.commit_places(FILES)] == [len(c.ids) for c in commits if c.ids]


def test_many_runs_merge_by_ranges_and_two_large_ones_by_buckets() -> None:
    """The merge that costs less is chosen: many runs sort, two large ones with the result's bits slice."""
    commits = commits_of([[f"c-{n}-{i}" for i in range(400)] for n in range(40)])
    bits = bucket_bits(16_000)
    assert sorting_is_cheaper(split_runs(commits, list(range(1, 40)), [bits]))
    assert not sorting_is_cheaper(split_runs(commits, [20], [bits]))
    assert sorting_is_cheaper(split_runs(commits, [20], [None]))  # fewer bits: re-laid either way


def test_a_forged_run_with_keys_outside_their_buckets_is_refused_by_a_merge_by_ranges() -> None:
    """A run whose crc32 is right but whose first and last keys swapped places: damage, not a bad merge."""
    commits = commits_of([[f"f-{i}" for i in range(200)], ["g"]])
    run = build(commits[:1], end=10)
    raw = bytearray(run._buf[: run.header.file_bytes])
    at, size = run.header.sections()["keys"]
    raw[at : at + 8], raw[at + size - 8 : at + size] = raw[at + size - 8 : at + size], raw[at : at + 8]
    body = len(raw) - TRAILER_BYTES
    raw[body:] = trailer(zlib.crc32(raw[:body]))
    forged = Run.open(bytes(raw))
    with (
        mock.patch.object(index_format, "_RANGE_ENTRIES", 1),  # a range a bucket: the keys cross ranges
        pytest.raises(IndexFormatError, match="outside the buckets"),
    ):
        by_ranges([forged, build(commits[1:], first=200, start=10, end=20)])


def test_only_adjacent_runs_merge() -> None:
    """Runs that do not continue each other (ordinals or checkpoint bytes) are refused."""
    one = build(commits_of([["a"]]), end=10)
    gap = build(commits_of([["b"]]), first=1, start=11, end=20)
    with pytest.raises(ValueError, match="not adjacent"):
        list(merged_parts([one, gap]))
    with pytest.raises(ValueError, match="not adjacent"):
        merged_by_ranges([one, gap])


def test_bucket_bits_keep_buckets_small_within_bounds() -> None:
    assert bucket_bits(0) == MIN_BUCKET_BITS
    assert bucket_bits(10_000_000) == 19
    assert bucket_bits(10**12) == MAX_BUCKET_BITS


# --- damage -------------------------------------------------------------------------------------


def sample_run_bytes() -> bytes:
    commits = commits_of([[f"id-{i}" for i in range(50)], ["x", "y"]])
    builder = RunBuilder(first_ordinal=0, ckpt_start=0)
    for commit in commits:
        builder.add(commit, file_index=FILES.index(commit.file), ckpt_offset=0)
    return b"".join(builder.parts(ckpt_end=99, sha_start=empty_sha(), sha_end=bytes(32), state=state_for(52)))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_refused(data: st.DataObject) -> None:
    """Damage anywhere in a run file (header, fanout, keys, state, trailer) makes it unusable."""
    raw = bytearray(sample_run_bytes())
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(IndexFormatError):
        Run.open(bytes(raw))


@settings(max_examples=50, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_a_cut_file_is_refused(cut: int) -> None:
    raw = sample_run_bytes()
    with pytest.raises(IndexFormatError):
        Run.open(raw[: min(cut, len(raw) - 1)])


def test_another_version_is_refused() -> None:
    """A run of another format version is not read, whatever its crc says."""
    raw = bytearray(sample_run_bytes())
    raw[8] = 99  # the version, right after the magic
    with pytest.raises(IndexFormatError, match="another version"):
        Run.open(bytes(raw), check_crc=False)


def test_a_shaped_header_with_a_bad_fanout_is_refused() -> None:
    """Even with a matching crc (a writer's bug), a fanout that does not count the entries is refused."""
    raw = bytearray(sample_run_bytes())
    raw[HEADER_BYTES] = 1  # fanout[0] must be 0
    with pytest.raises(IndexFormatError, match="fanout"):
        Run.open(bytes(raw), check_crc=False)


# --- the state a run carries ------------------------------------------------------------------


def test_state_round_trips() -> None:
    """Files (open and sealed), runs (ended or killed), counts and messages come back equal."""
    state = CheckpointState(ids=7, valid_bytes=123)
    state.files["records-00001.ndjson"] = FileState("records-00001.ndjson", 10, 3, True, "ab" * 32)
    state.files["records-00002.ndjson.gz"] = FileState("records-00002.ndjson.gz", 5, 4, False, None)
    state.runs.append(
        RunState(
            run=1,
            started_at="t0",
            refetch=True,
            manifest="m.txt",
            shard="0/2",
            ended_at="t1",
            exit_code=1,
            status="incomplete",
            counts={"exported": 3},
            message="ids failed\nsee failed.ndjson",
        )
    )
    state.runs.append(RunState(run=2, started_at="t2"))
    assert decode_state(encode_state(state), 123) == state


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b'{"ids": -1, "files": [], "runs": []}',
        b'{"ids": 1, "files": [[1, 2, 3, true, null]], "runs": []}',
        b"[",
    ],
)
def test_a_bad_state_is_refused(raw: bytes) -> None:
    with pytest.raises(IndexFormatError):
        decode_state(raw, 0)
