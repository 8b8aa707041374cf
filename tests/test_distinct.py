"""distinct.DistinctCount: the number of distinct ids, exact, through both of its ways of counting.

Small segments and slices stand in for the millions of ids of a real manifest,
so every path (sealing against earlier segments, then sorting and counting a
key range at a time) runs on a few dozen ids.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import distinct
from exporter.distinct import DistinctCount

_IDS = st.lists(st.lists(st.binary(max_size=6), max_size=12), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    chunks=_IDS,
    segment_keys=st.integers(1, 8),
    sequential=st.integers(0, 4),
    slice_keys=st.integers(1, 10),
)
def test_counts_each_distinct_id_once(
    chunks: list[list[bytes]], segment_keys: int, sequential: int, slice_keys: int
) -> None:
    """Whatever the chunks, the segment size and when it turns to slices: the count is len(set())."""
    counter = DistinctCount(segment_keys=segment_keys, sequential_segments=sequential, slice_keys=slice_keys)
    for chunk in chunks:
        counter.add(chunk)
    everything = [one for chunk in chunks for one in chunk]
    assert counter.added == len(everything)
    assert counter.distinct() == len(set(everything))
    # Asked again, and after more ids, it still answers exactly.
    counter.add([*everything[:3], b"\x00never-before\x00"])
    assert counter.distinct() == len(set(everything)) + 1


def test_a_large_shuffled_manifest_with_repeats_in_every_segment() -> None:
    """60,000 ids, a third of them repeated far apart, over 40 segments: both ways give the same count."""
    ids = [b"rec-%06d" % n for n in range(60_000)]
    manifest = ids + random.Random(7).sample(ids, 20_000)
    random.Random(8).shuffle(manifest)
    for sequential in (0, 8, 100):
        counter = DistinctCount(segment_keys=1_500, sequential_segments=sequential, slice_keys=700)
        for start in range(0, len(manifest), 4096):
            counter.add(manifest[start : start + 4096])
        assert counter.distinct() == 60_000, sequential
        assert counter.added == 80_000


def test_this_python_hashes_with_64_bit_siphash() -> None:
    """The count relies on a keyed 64-bit hash; CI's Python has one, so the fast dry run is what CI tests."""
    assert distinct.usable()


def test_repr_shows_live_state() -> None:
    counter = DistinctCount(segment_keys=2)
    counter.add([b"a", b"b", b"a"])
    assert repr(counter) == "<DistinctCount added=3 open=0 sealed=1 settled=True>"
