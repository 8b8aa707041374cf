"""Unit tests for `exporter.digests`: the compact digest set, the id digest and shard choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from exporter.digests import DIGEST_BYTES, DigestSet, id_digest, shard_of

# --- DigestSet against a set oracle --------------------------------------------------------------


@pytest.mark.parametrize("prefixes", [65_536, 256], ids=["spread", "crowded-buckets"])
def test_matches_a_set_oracle(prefixes: int) -> None:
    """add, `in` and len agree with a Python set over ~50k random digests, duplicates included."""
    rng = random.Random(20240601 + prefixes)
    digests_set = DigestSet()
    oracle: set[bytes] = set()
    added: list[bytes] = []
    for _ in range(50_000):
        if added and rng.random() < 0.1:
            digest = rng.choice(added)
        else:
            # Only `prefixes` distinct bucket indexes: 256 makes buckets of ~200 keys.
            digest = rng.randrange(prefixes).to_bytes(2, "big") + rng.randbytes(DIGEST_BYTES - 2)
        assert digests_set.add(digest) is (digest not in oracle)
        oracle.add(digest)
        added.append(digest)
        assert len(digests_set) == len(oracle)
    assert all(digest in digests_set for digest in oracle)
    for _ in range(20_000):
        probe = rng.randrange(prefixes).to_bytes(2, "big") + rng.randbytes(DIGEST_BYTES - 2)
        assert (probe in digests_set) is (probe in oracle)


def test_overlapping_keys_match_a_set_oracle() -> None:
    """With keys from a two-byte alphabet in one bucket (overlaps everywhere) lookups still match a set."""
    rng = random.Random(7)
    digests_set = DigestSet()
    oracle: set[bytes] = set()
    for _ in range(3_000):
        digest = b"\xab\xcd" + bytes(rng.choice(b"\x00\x01") for _ in range(DIGEST_BYTES - 2))
        assert (digest in digests_set) is (digest in oracle)
        assert digests_set.add(digest) is (digest not in oracle)
        oracle.add(digest)
    assert len(digests_set) == len(oracle)


def test_add_reports_duplicates() -> None:
    """add returns True the first time and False after, and a duplicate does not change len."""
    digests_set = DigestSet()
    digest = id_digest("rec_1")
    assert digests_set.add(digest) is True
    assert digests_set.add(digest) is False
    assert digests_set.add(bytes(digest)) is False
    assert len(digests_set) == 1
    assert digest in digests_set


def test_empty_set() -> None:
    """A new set is empty and holds nothing, not even the all-zero digest."""
    digests_set = DigestSet()
    assert len(digests_set) == 0
    assert bytes(DIGEST_BYTES) not in digests_set
    assert id_digest("") not in digests_set


def test_visit_matches_an_oracle_while_keys_keep_arriving() -> None:
    """visit: 0 for absent digests, 1 on the first visit, 2 after, with adds between visits."""
    rng = random.Random(11)
    digests_set = DigestSet()
    members: list[bytes] = []
    member_set: set[bytes] = set()
    visited: set[bytes] = set()
    for _ in range(20_000):
        # 64 bucket indexes: buckets of ~100 keys that grow between visits.
        digest = rng.randrange(64).to_bytes(2, "big") + rng.randbytes(DIGEST_BYTES - 2)
        if rng.random() < 0.5:
            digests_set.add(digest)
            members.append(digest)
            member_set.add(digest)
        if members and rng.random() < 0.7:
            digest = rng.choice(members)
        expected = 0 if digest not in member_set else (2 if digest in visited else 1)
        assert digests_set.visit(digest) == expected
        if expected:
            visited.add(digest)
    assert len(digests_set) == len(members)


def test_visit_goes_past_a_match_straddling_two_keys() -> None:
    """A straddling match is not a member, and does not share a mark with a real one."""
    prefix = b"\x00\x00"
    straddling = b"A" * 7 + b"B" * 7
    digests_set = DigestSet()
    assert digests_set.visit(prefix + straddling) == 0
    for key in (b"A" * 14, b"B" * 14):
        digests_set.add(prefix + key)
    assert digests_set.visit(prefix + straddling) == 0
    digests_set.add(prefix + straddling)
    assert [digests_set.visit(prefix + straddling) for _ in range(2)] == [1, 2]
    assert digests_set.visit(prefix + b"B" * 14) == 1


# --- the key-alignment subtlety ------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [1, 7, 13])
def test_match_across_two_stored_keys_is_not_membership(overlap: int) -> None:
    """A query whose key appears in the bucket only straddling two stored keys is not reported present."""
    prefix = b"\x12\x34"
    first = bytes(range(1, 15))
    second = bytes(range(101, 115))
    query_key = first[overlap:] + second[:overlap]
    # The precondition the test relies on: a raw `find` would match, off a key boundary.
    assert (first + second).find(query_key) == overlap

    digests_set = DigestSet()
    digests_set.add(prefix + first)
    digests_set.add(prefix + second)
    assert prefix + query_key not in digests_set
    assert digests_set.add(prefix + query_key) is True
    assert prefix + query_key in digests_set
    assert len(digests_set) == 3


def test_aligned_match_after_a_straddling_one_is_found() -> None:
    """When the key straddles two keys and is also stored later, the search goes past the false match."""
    prefix = b"\x00\x00"
    first = b"A" * 14
    second = b"B" * 14
    straddling = b"A" * 7 + b"B" * 7
    digests_set = DigestSet()
    for key in (first, second, straddling):
        assert digests_set.add(prefix + key) is True
    assert prefix + straddling in digests_set
    assert digests_set.add(prefix + straddling) is False
    assert prefix + b"A" * 6 + b"B" * 8 not in digests_set
    assert len(digests_set) == 3


def test_same_key_in_another_bucket_is_not_membership() -> None:
    """The first two bytes choose the bucket: the same 14-byte key under another prefix is another digest."""
    key = bytes(range(14))
    digests_set = DigestSet()
    digests_set.add(b"\x01\x02" + key)
    assert b"\x02\x01" + key not in digests_set
    assert b"\x01\x03" + key not in digests_set


def test_repr_shows_size_and_buckets_used() -> None:
    """repr reports the number of digests and of non-empty buckets."""
    digests_set = DigestSet()
    assert repr(digests_set) == "<DigestSet len=0 buckets_used=0>"
    digests_set.add(b"\x00\x01" + bytes(14))
    digests_set.add(b"\x00\x01" + bytes(13) + b"\x01")
    digests_set.add(b"\xff\xff" + bytes(14))
    assert repr(digests_set) == "<DigestSet len=3 buckets_used=2>"


# --- id_digest and shard_of ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record_id", "hex_digest"),
    [
        ("rec_123", "0f7093d5a24df5f4406e32ba83f66242"),
        ("café", "9883c13e4279980fe3f262ea93047f84"),
        ("550e8400-e29b-41d4-a716-446655440000", "33a6638939517026737244b51c17b241"),
        ("", "cae66941d9efbd404e4d88758ea67670"),
    ],
)
def test_id_digest_is_pinned(record_id: str, hex_digest: str) -> None:
    """The digest is BLAKE2b-128 of the UTF-8 id; changing it would orphan every existing archive."""
    assert id_digest(record_id).hex() == hex_digest


def test_id_digest_accepts_lone_surrogates() -> None:
    """An id with a lone surrogate (from a badly encoded manifest) still gets a digest, not an exception."""
    digest = id_digest("bad\udcff")
    assert len(digest) == DIGEST_BYTES
    assert digest != id_digest("bad")


@pytest.mark.parametrize(
    ("record_id", "count", "shard"),
    [
        ("rec_123", 2, 0),
        ("rec_123", 4, 0),
        ("rec_123", 7, 2),
        ("rec_123", 16, 4),
        ("café", 4, 3),
        ("café", 7, 1),
        ("café", 16, 15),
        ("550e8400-e29b-41d4-a716-446655440000", 4, 2),
        ("550e8400-e29b-41d4-a716-446655440000", 16, 6),
    ],
)
def test_shard_of_is_pinned(record_id: str, count: int, shard: int) -> None:
    """Shard membership is stable across machines and releases: these assignments must never move."""
    assert shard_of(id_digest(record_id), count) == shard


def test_shard_of_reads_the_first_eight_bytes_big_endian() -> None:
    """The shard is the first eight bytes as a big-endian integer, modulo the count."""
    digest = bytes(7) + b"\x05" + b"\xff" * 8
    assert shard_of(digest, 4) == 1
    assert shard_of(digest, 3) == 2
    assert shard_of(b"\x80" + bytes(15), 3) == (1 << 63) % 3


def test_one_shard_holds_everything() -> None:
    """With a single shard every id belongs to shard 0."""
    assert {shard_of(id_digest(f"rec_{i}"), 1) for i in range(200)} == {0}


def test_shards_are_roughly_uniform() -> None:
    """10k ids split over 4 shards within ±8% of 2,500 each (about 4.6 standard deviations)."""
    counts = Counter(shard_of(id_digest(f"rec_{i}"), 4) for i in range(10_000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(2_300 <= n <= 2_700 for n in counts.values()), counts


def test_add_all_is_add_in_turn() -> None:
    """add_all gives what `add` would, one digest after the other."""
    rng = random.Random(5)
    pool = [rng.randbytes(DIGEST_BYTES) for _ in range(1500)]
    one, many = DigestSet(), DigestSet()
    for _ in range(6):
        chunk = rng.choices(pool, k=300)
        assert many.add_all(chunk) == [one.add(d) for d in chunk]
        assert len(many) == len(one)
    assert all(d in many for d in pool if d in one)
