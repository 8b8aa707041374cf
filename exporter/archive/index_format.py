"""The archive index's run format: which ids are archived and where, in files a lookup maps, not reads.

The index is derived from the checkpoint alone (docs/decisions/0004-archive-index.md says why,
and how it compares with LSM trees, git's pack `.idx` and Parquet's page index). Every id the
checkpoint lists gets an *ordinal*, its position in checkpoint order (0, 1, 2, ... over every
commit of the generation). A *run* covers a stretch of the checkpoint, its bytes
`ckpt_start..ckpt_end`, and holds:

    header     128 bytes: magic, version, bucket bits, the ordinals and checkpoint bytes it
               covers, and the sha256 of the checkpoint's first `ckpt_start` / `ckpt_end` bytes
    fanout     (2**bits + 1) u32: fanout[b] = entries in buckets below b, as git's `.idx`, on
               the first `bits` bits of the id's BLAKE2b-128 digest (the exporter's `id_digest`)
    keys       per entry, the digest's first 8 bytes, grouped by bucket: what a lookup searches
    checks     per entry, the digest's last 8 bytes, in the same order: compared once found
    ordinals   per entry, its ordinal (u32, big-endian), in the same order
    ids        the ids themselves in ordinal order, UTF-8, each ending in a newline; an id no
               plain-text manifest line can be (empty, a `#` comment, holding a newline, not
               UTF-8) as an empty line: what the planner compares manifest lines with, in bulk
    idpoints   per ordinal divisible by 1,024, where its id starts in `ids` (u64)
    firsts     per commit that holds ids, its first ordinal (u64), ascending
    commits    per such commit: its records file (an index into `state.files`), crc32, start
               and end bytes in that file, and where its entry starts in the checkpoint (as
               Parquet's OffsetIndex gives a page's place and first row)
    state      JSON: the checkpoint's state at `ckpt_end` (files, runs, id count), so a reader
               replays only the checkpoint after the last run
    trailer    crc32 of everything before it, and the magic again

Sections start on 8-byte boundaries; integers are little-endian but the ordinals. A run of n
ids has about n / 24 buckets (`bucket_bits`): a lookup is one `find` of 8 bytes over some 24
keys, then one 8-byte comparison. Within a bucket, the entries of one digest are in ordinal
order, so the first found is the id's first place: all a reader relies on. A run built here
orders its entries by the first FINE_BITS bits of their key, then by ordinal, which is that
order for any bucket bits.

Runs merge in one of two ways, whichever costs less (`sorting_is_cheaper`). `merged_parts`
concatenates each bucket's entries, run after run, so it does no sorting, but costs a slice
a bucket, run and column (a run with fewer bucket bits than the result is re-laid with more
as it is read, `Run.bucket_slices`): cheap for two large runs, 55 million slices for the 35
runs of a 9M-id catch-up. `merged_by_ranges` takes a range of buckets at a time, every run's
entries in it one run after another, and sorts them as a built run is ordered: a sort an
entry, whatever the number of runs, and its result is the run built at once.

Pure: bytes in, bytes and values out (`merged_by_ranges` gives its pieces with their
offsets, out of file order); `index.py` does the files.

Why one module of this size: it is one on-disk format (as `layout.py` is for the rest of
the archive): how a run is built, read, looked up and merged are the same byte layout seen
from four sides, and a format change must be made in one place.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import struct
import sys
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .checkpoint import CheckpointState, Commit, FileState, RunState, ShippedCopy

MAGIC = b"EXPIDX\r\n"
VERSION = 1
MIN_BUCKET_BITS = 4
MAX_BUCKET_BITS = 20
#: Within a run, entries are in the order of this many leading bits of their key (`_ordered`).
FINE_BITS = MAX_BUCKET_BITS
#: Ids a bucket holds on average, at most (but in runs of over 24 * 2**20 ids).
BUCKET_TARGET = 24
_KEY = slice(0, 8)
_CHECK = slice(8, 16)
KEY_BYTES = 8
CHECK_BYTES = 8
ORDINAL_BYTES = 4
_DIGEST_BYTES = 16
#: Ordinals are u32: the index numbers at most this many ids.
MAX_IDS = 1 << 32
_HEADER = struct.Struct("<8sHBB4xQQQQQQQ32s32s")
HEADER_BYTES = 160
#: `idpoints` marks the ordinals divisible by this.
ID_POINT = 1024
_COMMIT = struct.Struct("<IIQQQ")
_TRAILER = struct.Struct("<I4s8s")
_TRAILER_PAD = bytes(4)
TRAILER_BYTES = _TRAILER.size
_EMPTY_SHA = hashlib.sha256().digest()
_LITTLE = sys.byteorder == "little"
#: Pieces joined at a time when a merge writes its buckets.
_BATCH_PIECES = 1 << 14
#: Entries re-laid at a time when a run is merged into one with more bucket bits.
_REBUCKET_ENTRIES = 1 << 14
_COLUMNS = (("Q", "keys"), ("Q", "checks"), ("I", "ordinals"))
#: `merged_by_ranges` sorts about this many entries at a time...
_RANGE_ENTRIES = 1 << 15
#: ... reading runs with coarser buckets whole, as long as they hold this many ids in all.
_SMALL_RUN = 1 << 16
#: What a merge costs, in seconds on the development VM: a slice of a bucket of a run's column
#: (`merged_parts`), and an entry sorted and moved (`merged_by_ranges`, or a run re-laid).
_SLICE_COST = 0.2e-6
_SORT_COST = 0.6e-6
#: A merge copies a run's ids and commits in pieces of this size.
_SECTION_PIECE_BYTES = 1 << 22
assert _HEADER.size <= HEADER_BYTES
assert _COMMIT.size == 32


class IndexFormatError(ValueError):
    """Bytes that are not a run of this version: damaged, cut short, or written by another version."""


class Buffer(Protocol):
    """What a run is read from: `bytes` (built in memory) or an `mmap` of its file."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...


def bucket_bits(count: int) -> int:
    """The bucket bits of a run of `count` ids: about BUCKET_TARGET ids a bucket."""
    return min(MAX_BUCKET_BITS, max(MIN_BUCKET_BITS, (count // BUCKET_TARGET).bit_length()))


def _pad(size: int) -> int:
    return -size % 8


@dataclass(frozen=True, slots=True)
class RunHeader:
    """What a run covers: ordinals `first_ordinal..end_ordinal`, checkpoint bytes, and their hashes."""

    bits: int
    first_ordinal: int
    count: int
    commits: int
    ckpt_start: int
    ckpt_end: int
    state_bytes: int
    #: sha256 of the checkpoint's first `ckpt_start` / `ckpt_end` bytes.
    sha_start: bytes
    sha_end: bytes
    ids_bytes: int = 0

    @property
    def end_ordinal(self) -> int:
        return self.first_ordinal + self.count

    @property
    def id_points(self) -> int:
        """How many ordinals divisible by ID_POINT the run holds."""
        if not self.count:
            return 0
        return (self.end_ordinal - 1) // ID_POINT - (self.first_ordinal - 1) // ID_POINT

    def sections(self) -> dict[str, tuple[int, int]]:
        """Offset and length of each section, in file order."""
        layout: dict[str, tuple[int, int]] = {}
        at = HEADER_BYTES
        for name, size in (
            ("fanout", ((1 << self.bits) + 1) * 4),
            ("keys", self.count * KEY_BYTES),
            ("checks", self.count * CHECK_BYTES),
            ("ordinals", self.count * ORDINAL_BYTES),
            ("ids", self.ids_bytes),
            ("idpoints", self.id_points * 8),
            ("firsts", self.commits * 8),
            ("commits", self.commits * _COMMIT.size),
            ("state", self.state_bytes),
        ):
            layout[name] = (at, size)
            at += size + _pad(size)
        layout["trailer"] = (at, TRAILER_BYTES)
        return layout

    @property
    def file_bytes(self) -> int:
        offset, size = self.sections()["trailer"]
        return offset + size

    def pack(self) -> bytes:
        packed = _HEADER.pack(
            MAGIC,
            VERSION,
            self.bits,
            1,  # the sections' integers are little-endian
            self.first_ordinal,
            self.count,
            self.commits,
            self.ckpt_start,
            self.ckpt_end,
            self.state_bytes,
            self.ids_bytes,
            self.sha_start,
            self.sha_end,
        )
        return packed + bytes(HEADER_BYTES - len(packed))

    @classmethod
    def unpack(cls, raw: bytes) -> RunHeader:
        """The header at the start of `raw`; IndexFormatError when it is not one of this version."""
        if len(raw) < HEADER_BYTES:
            raise IndexFormatError("shorter than a header")
        (magic, version, bits, order, first, count, commits, start, end, state, ids, sha_start, sha_end) = (
            _HEADER.unpack_from(raw)
        )
        if magic != MAGIC:
            raise IndexFormatError("not an index run (wrong magic)")
        if version != VERSION or order != 1 or not MIN_BUCKET_BITS <= bits <= MAX_BUCKET_BITS:
            raise IndexFormatError(f"written by another version (format {version})")
        if start >= end or first + count > MAX_IDS:
            raise IndexFormatError("covers an impossible span")
        return cls(bits, first, count, commits, start, end, state, sha_start, sha_end, ids)


@dataclass(frozen=True, slots=True)
class CommitPlace:
    """Where the records of one commit are: bytes `start..end` of a records file, checked by `crc32`.

    Its ids hold ordinals `first_ordinal..first_ordinal+count`, one line each, in
    order, in the commit's bytes (decompressed when the file is compressed).
    """

    file: str
    start: int
    end: int
    crc32: int
    first_ordinal: int
    count: int
    #: Where the commit's entry starts in the checkpoint.
    ckpt_offset: int


# -- the checkpoint's state, carried by each run -----------------------------------------------


def encode_state(state: CheckpointState) -> bytes:
    """The state a run carries: files, runs and the id count (the bytes it covers are in the header)."""
    return orjson.dumps(
        {
            "ids": state.ids,
            "files": [
                [f.name, f.size, f.lines, f.closed, f.sha256, _shipped(f.shipped)]
                for f in state.files.values()
            ],
            "runs": [
                [
                    r.run,
                    r.started_at,
                    r.refetch,
                    r.manifest,
                    r.shard,
                    r.ended_at,
                    r.exit_code,
                    r.status,
                    r.counts,
                    r.message,
                ]
                for r in state.runs
            ],
        }
    )


def _shipped(copy: ShippedCopy | None) -> list[str | None] | None:
    """Where a closed file was shipped (`--out s3://...`), as the state carries it."""
    return None if copy is None else [copy.key, copy.checksum, copy.etag, copy.version]


def _shipped_copy(raw: object) -> ShippedCopy | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 4:
        raise TypeError("a file's shipped copy")
    key, checksum, etag, version = raw
    if not all(isinstance(value, str) for value in (key, checksum, etag)) or not isinstance(
        version, str | None
    ):
        raise TypeError("a file's shipped copy")
    return ShippedCopy(key=key, checksum=checksum, etag=etag, version=version)


def decode_state(raw: bytes, valid_bytes: int) -> CheckpointState:
    """The state `encode_state` wrote, at checkpoint length `valid_bytes`; IndexFormatError if it is not."""
    try:
        doc = orjson.loads(raw)
        state = CheckpointState(ids=_count(doc["ids"]), valid_bytes=valid_bytes)
        for name, size, lines, closed, sha, shipped in doc["files"]:
            if not isinstance(name, str) or not isinstance(closed, bool) or not isinstance(sha, str | None):
                raise TypeError("a file's name, state or hash")
            state.files[name] = FileState(
                name, _count(size), _count(lines), closed, sha, _shipped_copy(shipped)
            )
        for run in doc["runs"]:
            number, started, refetch, manifest, shard, ended, exit_code, status, counts, message = run
            if not all(isinstance(value, str | None) for value in (shard, ended, status, message)):
                raise TypeError("a run's text fields")
            if not isinstance(started, str) or not isinstance(manifest, str) or not isinstance(refetch, bool):
                raise TypeError("a run's start")
            if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
                raise TypeError("a run's counts")
            state.runs.append(
                RunState(
                    run=_count(number),
                    started_at=started,
                    refetch=refetch,
                    manifest=manifest,
                    shard=shard,
                    ended_at=ended,
                    exit_code=None if exit_code is None else _count(exit_code),
                    status=status,
                    counts=counts,
                    message=message,
                )
            )
    except (ValueError, TypeError, KeyError) as exc:
        raise IndexFormatError(f"its checkpoint state is unreadable ({exc})") from None
    return state


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{value!r} is not a count")
    return value


# -- laying out entries --------------------------------------------------------------------------


def _ordered(
    keys: array[int], checks: array[int], ordinals: array[int]
) -> tuple[array[int], array[int], array[int], list[int]]:
    """Entries (three columns, as stored) sorted by the first FINE_BITS bits of their key, stably.

    Also returns those bits of each entry, ascending. Stable, so the places of
    one digest stay in the order they came in (ordinal order, when the columns
    came so); ordered by the finest bucket bits, so a run laid out this way has
    its buckets in order for any bits, and each stretch of it is already sorted
    when a merge sorts it again (`merged_by_ranges`). In C but for a few calls:
    the sort is of small integers, the columns moved by `itemgetter`.
    """
    fine = _fine(keys)
    if len(fine) < 2:
        return keys, checks, ordinals, fine
    order = sorted(range(len(fine)), key=fine.__getitem__)
    take = operator.itemgetter(*order)
    return array("Q", take(keys)), array("Q", take(checks)), array("I", take(ordinals)), list(take(fine))


def _fine(keys: array[int]) -> list[int]:
    """The first FINE_BITS bits of each key (stored big-endian), as numbers."""
    values = array("Q", keys)
    if _LITTLE:
        values.byteswap()
    return list(map(operator.rshift, values, itertools.repeat(64 - FINE_BITS)))


def _fanout(fine: list[int], bits: int, first: int, end: int, base: int) -> array[int]:
    """fanout[first..end) of `bits` bucket bits, for entries whose FINE_BITS bits `fine` are ascending,
    all in those buckets, and `base` entries before them.

    A bisection a bucket when there are fewer buckets than entries; else each
    entry's bucket ends a step of the table, and `repeat` writes the steps, so
    a table far larger than its entries (a run laid out for a larger one)
    costs C time, not a Python step a bucket.
    """
    shift = FINE_BITS - bits
    if end - first < len(fine):
        bounds = map(operator.lshift, range(first, end), itertools.repeat(shift))
        before = map(bisect_left, itertools.repeat(fine), bounds)
        return array("I", map(operator.add, before, itertools.repeat(base)) if base else before)
    buckets = list(map(operator.rshift, fine, itertools.repeat(shift)))
    widths = map(operator.sub, itertools.chain(buckets, (end,)), itertools.chain((first - 1,), buckets))
    steps = map(itertools.repeat, range(base, base + len(buckets) + 1), widths)
    return array("I", itertools.islice(itertools.chain.from_iterable(steps), end - first))


def _lay_out(digests: list[bytes], first_ordinal: int, bits: int) -> list[bytes]:
    """Digests in ordinal order (from `first_ordinal`) as the fanout, keys, checks and ordinals sections.

    As `_ordered` lays out entries, but the digests are moved whole (one
    `bytes` each, as hashlib made them) and the ordinals are their places.
    """
    words = array("Q", b"".join(digests))  # two 8-byte words a digest: its key, its check
    fine = _fine(words[0::2])
    count = len(fine)
    order = sorted(range(count), key=fine.__getitem__)
    if count > 1:
        take = operator.itemgetter(*order)
        words, fine = array("Q", b"".join(take(digests))), list(take(fine))
    ordinals = array("I", map(operator.add, order, itertools.repeat(first_ordinal)))
    if _LITTLE:
        ordinals.byteswap()  # stored big-endian
    fanout = _fanout(fine, bits, 0, 1 << bits, 0)
    fanout.append(count)
    if not _LITTLE:
        fanout.byteswap()
    return [fanout.tobytes(), words[0::2].tobytes(), words[1::2].tobytes(), ordinals.tobytes()]


class RunBuilder:
    """Collects the commits of a stretch of the checkpoint, then lays them out as one run.

    Each id costs its digest (a 16-byte `bytes`, 57 bytes with its pointer) and
    the id until `parts` lays them out (and about 100 bytes more while it sorts
    them), so the caller bounds a
    builder (the index flushes one every `FLUSH_IDS` ids).
    """

    __slots__ = (
        "_digests",
        "_firsts",
        "_ids",
        "_points",
        "_rows",
        "ckpt_start",
        "first_ordinal",
        "next_ordinal",
    )

    def __init__(self, *, first_ordinal: int, ckpt_start: int) -> None:
        self.first_ordinal = first_ordinal
        self.next_ordinal = first_ordinal
        self.ckpt_start = ckpt_start
        # The ids' digests in ordinal order (their ordinals are their places), as hashlib made them.
        self._digests: list[bytes] = []
        #: The ids section so far (each id and a newline), and where each ID_POINT-th ordinal's id starts.
        self._ids = bytearray()
        self._points = array("Q")
        self._firsts = array("Q")
        self._rows: list[bytes] = []

    def __len__(self) -> int:
        return self.next_ordinal - self.first_ordinal

    def add(self, commit: Commit, *, file_index: int, ckpt_offset: int) -> None:
        """Add one commit (in checkpoint order) whose entry starts at `ckpt_offset` in the checkpoint."""
        ids = commit.ids
        if not ids:
            return  # an empty commit holds no record to find
        first = self.next_ordinal
        if first + len(ids) > MAX_IDS:
            raise IndexFormatError(f"more than {MAX_IDS} ids: the index cannot number them")
        try:
            raw = list(map(str.encode, ids))
            listed = raw
        except UnicodeEncodeError:  # a lone surrogate: no plain-text line equals that id
            raw = [i.encode("utf-8", "surrogatepass") for i in ids]
            listed = [i if _is_utf8(i) else b"" for i in raw]
        _add_ids(self._ids, self._points, listed, first)
        # All in C, as the writer adds every id of every commit (and a rebuild millions).
        self._digests.extend(map(_DIGEST_DONE, map(_DIGEST, raw)))
        self._firsts.append(first)
        self._rows.append(_COMMIT.pack(file_index, commit.crc32, commit.start, commit.end, ckpt_offset))
        self.next_ordinal = first + len(ids)

    def parts(
        self,
        *,
        ckpt_end: int,
        sha_start: bytes,
        sha_end: bytes,
        state: CheckpointState,
        bits: int | None = None,
    ) -> list[bytes]:
        """The run's bytes, in pieces to write one after another (the builder is spent).

        `bits` lays it out for a larger run it will be merged into (see `bucket_bits`).
        """
        digests, self._digests = self._digests, []
        count = len(digests)
        bits = max(bucket_bits(count), bits or 0)
        firsts = self._firsts
        if not _LITTLE:
            firsts.byteswap()
        state_raw = encode_state(state)
        ids, offsets = bytes(self._ids), self._points
        if not _LITTLE:
            offsets.byteswap()
        points = offsets.tobytes()
        self._ids, self._points = bytearray(), array("Q")
        header = RunHeader(
            bits=bits,
            first_ordinal=self.first_ordinal,
            count=count,
            commits=len(self._rows),
            ckpt_start=self.ckpt_start,
            ckpt_end=ckpt_end,
            state_bytes=len(state_raw),
            sha_start=sha_start,
            sha_end=sha_end,
            ids_bytes=len(ids),
        )
        sections = [
            header.pack(),
            *_lay_out(digests, self.first_ordinal, bits),
            ids,
            points,
            firsts.tobytes(),
            b"".join(self._rows),
            state_raw,
        ]
        return _with_trailer(sections)


_DIGEST = functools.partial(hashlib.blake2b, digest_size=_DIGEST_BYTES)
_DIGEST_DONE = operator.methodcaller("digest")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _add_ids(section: bytearray, points: array[int], ids: list[bytes], first_ordinal: int) -> None:
    """Append `ids` (ordinals from `first_ordinal`) to an `ids` section, and its `idpoints` (where each
    ID_POINT-th ordinal's id starts) to `points`."""
    if not ids:
        return
    joined = b"\n".join(ids)
    if joined.count(b"\n") != len(ids) - 1 or joined.startswith(b"#") or b"\n#" in joined:
        # An id holding a newline, or one a plain-text manifest takes for a comment: no line equals it.
        ids = [i if b"\n" not in i and not i.startswith(b"#") else b"" for i in ids]
        joined = b"\n".join(ids)
    skip = -first_ordinal % ID_POINT
    if skip < len(ids):
        before = list(itertools.accumulate(map(len, ids), initial=0))
        base = len(section)
        points.extend(base + before[k] + k for k in range(skip, len(ids), ID_POINT))
    section += joined
    section += b"\n"


def _with_trailer(sections: Sequence[bytes]) -> list[bytes]:
    """The sections, each padded to 8 bytes, then the trailer (crc32 of all of it, and the magic)."""
    parts: list[bytes] = []
    crc = 0
    for section in sections:
        for piece in (section, bytes(_pad(len(section)))):
            if piece:
                parts.append(piece)
                crc = zlib.crc32(piece, crc)
    parts.append(_TRAILER.pack(crc, _TRAILER_PAD, MAGIC))
    return parts


# -- reading a run -------------------------------------------------------------------------------


class Run:
    """One run, read in place from a buffer (an mmap of its file, or bytes built in memory).

    `open` checks everything a damaged or foreign file could get wrong before
    a lookup trusts it: the magic and version, the size, the crc32 of the whole
    file, the fanout's shape and the state's JSON. Lookups then touch only the
    pages of the buckets they search.
    """

    __slots__ = ("_buf", "_fanout", "_firsts", "_points", "_sections", "_shift", "header", "state")

    def __init__(self, buf: Buffer, header: RunHeader, state: CheckpointState) -> None:
        self._buf = buf
        self.header = header
        self.state = state
        self._sections = header.sections()
        self._shift = 24 - header.bits
        self._fanout = _native(buf, *self._sections["fanout"], "I")
        self._firsts = _native(buf, *self._sections["firsts"], "Q")
        self._points = _native(buf, *self._sections["idpoints"], "Q")

    @classmethod
    def open(cls, buf: Buffer, *, check_crc: bool = True, crc_of_body: int | None = None) -> Run:
        """The run in `buf`; IndexFormatError when it is damaged, cut short or of another version.

        `crc_of_body` is the crc32 of everything before the trailer when the
        caller computed it already (reading the file, rather than the mapping).
        """
        header = RunHeader.unpack(buf[:HEADER_BYTES])
        if len(buf) != header.file_bytes:
            raise IndexFormatError(f"{len(buf)} bytes where its header says {header.file_bytes}")
        trailer_at = len(buf) - TRAILER_BYTES
        crc, pad, magic = _TRAILER.unpack(buf[trailer_at:])
        if magic != MAGIC or pad != _TRAILER_PAD:
            raise IndexFormatError("its trailer is damaged")
        if check_crc and (_crc32(buf, trailer_at) if crc_of_body is None else crc_of_body) != crc:
            raise IndexFormatError("its crc32 does not match: the file is damaged")
        at, size = header.sections()["state"]
        state = decode_state(buf[at : at + size], header.ckpt_end)
        if state.ids != header.end_ordinal:
            raise IndexFormatError(f"its state counts {state.ids} ids, its entries {header.end_ordinal}")
        run = cls(buf, header, state)
        fanout, firsts = run._fanout, run._firsts
        shaped = fanout[0] == 0 and fanout[-1] == header.count
        if not shaped or any(map(operator.gt, fanout[:-1], fanout[1:])):
            run.release()
            raise IndexFormatError("its fanout table is not a count of its entries")
        if firsts and (firsts[0] != header.first_ordinal or firsts[-1] >= header.end_ordinal):
            run.release()
            raise IndexFormatError("its commits do not number its ids")
        points = run._points
        if points and (points[-1] > header.ids_bytes or any(map(operator.gt, points[:-1], points[1:]))):
            run.release()
            raise IndexFormatError("its id points are not offsets into its ids")
        return run

    def lookup(self, digest: bytes) -> int | None:
        """The first ordinal of the id with this 16-byte digest, or None when the run does not hold it."""
        fanout = self._fanout
        bucket = int.from_bytes(digest[:3], "big") >> self._shift
        low, high = fanout[bucket], fanout[bucket + 1]
        if low == high:
            return None
        buf = self._buf
        keys = self._sections["keys"][0]
        key = digest[_KEY]
        end = keys + high * KEY_BYTES
        at = buf.find(key, keys + low * KEY_BYTES, end)
        while at >= 0:
            offset = at - keys
            if offset % KEY_BYTES:
                at = buf.find(key, at + 1, end)  # a match across two keys
                continue
            entry = offset // KEY_BYTES
            check = self._sections["checks"][0] + entry * CHECK_BYTES
            if buf[check : check + CHECK_BYTES] == digest[_CHECK]:
                place = self._sections["ordinals"][0] + entry * ORDINAL_BYTES
                return int.from_bytes(buf[place : place + ORDINAL_BYTES], "big")
            at = buf.find(key, at + KEY_BYTES, end)
        return None

    def holds(self, ordinal: int) -> bool:
        return self.header.first_ordinal <= ordinal < self.header.end_ordinal

    def place(self, ordinal: int, files: Sequence[str]) -> CommitPlace:
        """The commit holding `ordinal` (which this run must hold); `files` names the file indexes."""
        if not self.holds(ordinal):
            raise IndexFormatError(f"ordinal {ordinal} is not in this run")
        return self._commit(bisect_right(self._firsts, ordinal) - 1, files)

    def commit_places(self, files: Sequence[str]) -> Iterator[CommitPlace]:
        """Every commit of the run that holds ids, in checkpoint order (for `verify`)."""
        return (self._commit(number, files) for number in range(len(self._firsts)))

    def _commit(self, number: int, files: Sequence[str]) -> CommitPlace:
        firsts = self._firsts
        first = firsts[number]
        end = firsts[number + 1] if number + 1 < len(firsts) else self.header.end_ordinal
        at = self._sections["commits"][0] + number * _COMMIT.size
        file_index, crc, start, stop, ckpt_offset = _COMMIT.unpack(self._buf[at : at + _COMMIT.size])
        if file_index >= len(files):
            raise IndexFormatError(f"a commit names file {file_index}, which the state does not list")
        return CommitPlace(files[file_index], start, stop, crc, first, end - first, ckpt_offset)

    def ids_between(self, start: int, end: int) -> list[bytes]:
        """The ids (UTF-8) of ordinals `start..end`, each an end of the run or divisible by ID_POINT."""
        at = self._sections["ids"][0]
        low, high = (self._id_offset(ordinal) for ordinal in (start, end))
        if high <= low:
            return []
        return self._buf[at + low : at + high - 1].split(b"\n")

    def _id_offset(self, ordinal: int) -> int:
        header = self.header
        if ordinal == header.first_ordinal:
            return 0
        if ordinal == header.end_ordinal:
            return header.ids_bytes
        if ordinal % ID_POINT or not self.holds(ordinal):
            raise ValueError(f"ordinal {ordinal} is neither an end of the run nor a multiple of {ID_POINT}")
        first_point = header.first_ordinal + (-header.first_ordinal % ID_POINT)
        return self._points[(ordinal - first_point) // ID_POINT]

    def fanout_for(self, bits: int) -> array[int]:
        """The fanout this run has with `bits` bucket bits (at least its own), as `bucket_slices` lays it."""
        if bits == self.header.bits:
            return array("I", self._fanout)
        fanout = array("I")
        for low, _high, first, end, ranked, _order in self._rebucketing(bits):
            fanout.extend(
                map(
                    operator.add,
                    itertools.repeat(low),
                    map(bisect_left, itertools.repeat(ranked), range(first, end)),
                )
            )
        fanout.append(self.header.count)
        return fanout

    def bucket_slices(self, column: str, bits: int | None = None) -> Iterator[bytes]:
        """The `column` ("keys", "checks", "ordinals") of each bucket in turn, for merging.

        With more `bits` than the run's own, the buckets it would have with
        that many: each of its buckets split in two or more, its entries' order
        kept within each (see `_rebucketing`).
        """
        width = {"keys": KEY_BYTES, "checks": CHECK_BYTES, "ordinals": ORDINAL_BYTES}[column]
        base = self._sections[column][0]
        if bits is not None and bits != self.header.bits:
            return self._split_slices(base, width, bits)
        # In C (map, slice, getitem), and lazily: a merge slices every bucket of every run and column.
        fanout = self._fanout
        starts = map(operator.add, itertools.repeat(base), map(operator.mul, fanout, itertools.repeat(width)))
        ends = map(
            operator.add,
            itertools.repeat(base),
            map(operator.mul, itertools.islice(fanout, 1, None), itertools.repeat(width)),
        )
        return map(self._buf.__getitem__, map(slice, starts, ends))

    def _split_slices(self, base: int, width: int, bits: int) -> Iterator[bytes]:
        # Chained in C: one call here a stretch, not a Python step a bucket.
        stretches = self._rebucketing(bits)
        return itertools.chain.from_iterable(
            map(self._split_stretch, itertools.repeat((base, width)), stretches)
        )

    def _split_stretch(
        self, column: tuple[int, int], stretch: tuple[int, int, int, int, list[int], list[int] | None]
    ) -> Iterator[bytes]:
        """A stretch's buckets (see `_rebucketing`) of the column at `column` (start, entry width)."""
        base, width = column
        low, high, first, end, ranked, order = stretch
        data = self._buf[base + low * width : base + high * width]
        if order is not None:
            size = len(data)
            pieces = list(
                map(data.__getitem__, map(slice, range(0, size, width), range(width, size + width, width)))
            )
            data = b"".join(map(pieces.__getitem__, order))
        bounds = list(
            map(
                operator.mul,
                map(bisect_left, itertools.repeat(ranked), range(first, end + 1)),
                itertools.repeat(width),
            )
        )
        return map(data.__getitem__, map(slice, bounds, itertools.islice(bounds, 1, None)))

    def _rebucketing(self, bits: int) -> Iterator[tuple[int, int, int, int, list[int], list[int] | None]]:
        """The run's buckets as `bits` bits lay them, about `_REBUCKET_ENTRIES` entries at a time.

        For each stretch: its entries `low..high`, the new buckets `first..end`
        they fill, each entry's new bucket in ascending order, and the order in
        which to take the stretch's entries (None: as they are). A new bucket is
        a part of one old bucket (its next bits), and a stable sort keeps each
        digest's entries in ordinal order: in C but for a few calls a stretch,
        and memory for one stretch only, whatever the run's size.
        """
        own = self.header.bits
        if bits < own:
            raise ValueError(f"a run of {own} bucket bits cannot be laid out with {bits}")
        grow, shift = bits - own, 64 - bits
        fanout, buckets = self._fanout, 1 << own
        keys = self._sections["keys"][0]
        buf = self._buf
        bucket = 0
        while bucket < buckets:
            low = fanout[bucket]
            stop = max(bucket + 1, bisect_right(fanout, low + _REBUCKET_ENTRIES, bucket + 1, buckets + 1) - 1)
            high = fanout[stop]
            words = array("Q", buf[keys + low * KEY_BYTES : keys + high * KEY_BYTES])
            if _LITTLE:
                words.byteswap()
            targets = list(map(operator.rshift, words, itertools.repeat(shift)))
            ranked = sorted(targets)
            order = None if ranked == targets else sorted(range(len(targets)), key=targets.__getitem__)
            yield low, high, bucket << grow, stop << grow, ranked, order
            bucket = stop

    def entries(self, first: int, end: int) -> tuple[bytes, bytes, bytes]:
        """Keys, checks and ordinals of the entries of buckets `first..end`, as stored."""
        low, high = self._fanout[first], self._fanout[end]
        return tuple(  # type: ignore[return-value]
            self._buf[at + low * width : at + high * width]
            for at, width in (
                (self._sections["keys"][0], KEY_BYTES),
                (self._sections["checks"][0], CHECK_BYTES),
                (self._sections["ordinals"][0], ORDINAL_BYTES),
            )
        )

    def section(self, name: str) -> bytes:
        at, size = self._sections[name]
        return self._buf[at : at + size]

    def section_pieces(self, name: str) -> Iterator[bytes]:
        """A section in pieces of at most `_SECTION_PIECE_BYTES` (a merge copies the ids so, not whole)."""
        at, size = self._sections[name]
        for start in range(at, at + size, _SECTION_PIECE_BYTES):
            yield self._buf[start : min(at + size, start + _SECTION_PIECE_BYTES)]

    def release(self) -> None:
        """Let go of the views into the buffer, so an mmap under them can be closed."""
        for view in (self._fanout, self._firsts, self._points):
            if isinstance(view, memoryview):
                view.release()

    def __repr__(self) -> str:
        h = self.header
        return f"<Run ids {h.first_ordinal}..{h.end_ordinal} checkpoint {h.ckpt_start}..{h.ckpt_end}>"


def _native(buf: Buffer, at: int, size: int, code: str) -> Sequence[int]:
    """A little-endian integer section as a sequence: a view in place, or a swapped copy on big-endian."""
    if _LITTLE:
        view: Sequence[int] = memoryview(buf)[at : at + size].cast(code)  # type: ignore[arg-type,call-overload]
        return view
    values = array(code, buf[at : at + size])
    values.byteswap()
    return values


def _crc32(buf: Buffer, size: int) -> int:
    crc = 0
    view = memoryview(buf)  # type: ignore[arg-type]
    try:
        for at in range(0, size, 1 << 24):
            crc = zlib.crc32(view[at : min(size, at + (1 << 24))], crc)
    finally:
        view.release()
    return crc


# -- merging runs --------------------------------------------------------------------------------


def _merged_header(runs: Sequence[Run]) -> tuple[RunHeader, bytes]:
    """The header of the run merging `runs` (adjacent, oldest first), and its state (the last run's)."""
    if len(runs) < 2:
        raise ValueError("a merge needs two runs or more")
    for older, newer in itertools.pairwise(runs):
        a, b = older.header, newer.header
        if a.end_ordinal != b.first_ordinal or a.ckpt_end != b.ckpt_start:
            raise ValueError(f"{older} and {newer} are not adjacent")
    first, last = runs[0].header, runs[-1].header
    count = sum(r.header.count for r in runs)
    state_raw = runs[-1].section("state")
    header = RunHeader(
        bits=max(bucket_bits(count), *(r.header.bits for r in runs)),
        first_ordinal=first.first_ordinal,
        count=count,
        commits=sum(r.header.commits for r in runs),
        ckpt_start=first.ckpt_start,
        ckpt_end=last.ckpt_end,
        state_bytes=len(state_raw),
        sha_start=first.sha_start,
        sha_end=last.sha_end,
        ids_bytes=sum(r.header.ids_bytes for r in runs),
    )
    return header, state_raw


def sorting_is_cheaper(runs: Sequence[Run]) -> bool:
    """Whether `merged_by_ranges` merges `runs` in less time than `merged_parts`.

    `merged_parts` costs a slice a bucket, run and column (and re-lays the
    runs with fewer bucket bits); `merged_by_ranges` a sort and a move an
    entry. Many runs (a catch-up's) or few ids a bucket make sorting cheaper;
    two large runs (the writer's usual merge) make slicing cheaper. The costs
    are this machine's, measured per piece (docs/decisions/0004-archive-index.md).
    """
    bits = max(bucket_bits(sum(r.header.count for r in runs)), *(r.header.bits for r in runs))
    slicing = (
        3 * len(runs) * (1 << bits) * _SLICE_COST
        + sum(r.header.count for r in runs if r.header.bits != bits) * _SORT_COST
    )
    sorting = sum(r.header.count for r in runs) * _SORT_COST
    return sorting < slicing


def merged_by_ranges(runs: Sequence[Run]) -> tuple[int, Iterator[tuple[int, bytes]]]:
    """The run holding `runs` (adjacent, oldest first), as its size and its bytes placed at their offsets.

    The same run as `merged_parts` says, laid out as `RunBuilder` lays one
    out: a range of buckets at a time (about `_RANGE_ENTRIES` entries), the
    range's entries of every run, one run after the other, sorted by the
    finest bucket bits (stably: a digest's places stay in ordinal order). So it
    costs a sort an entry, not a slice a bucket and run, and holds one range.
    The columns are filled range by range, each at its place, so the pieces
    come out of file order: the caller writes them into a file of `size` zero
    bytes and then the trailer (`trailer`), whose crc32 is of all before it.
    """
    header, state_raw = _merged_header(runs)
    return header.file_bytes, _placed(runs, header, state_raw)


def trailer(crc: int) -> bytes:
    """A run's last bytes: the crc32 `crc` of everything before them, and the magic."""
    return _TRAILER.pack(crc, _TRAILER_PAD, MAGIC)


def _placed(runs: Sequence[Run], header: RunHeader, state_raw: bytes) -> Iterator[tuple[int, bytes]]:
    bits = header.bits
    sources: list[_RangeSource] = []
    budget = _SMALL_RUN  # entries of coarser runs read whole, at most
    for run in runs:
        sources.append(_RangeSource(run, bits, load=run.header.count <= budget))
        budget -= run.header.count if sources[-1].loaded else 0
    align = max((source.coarser for source in sources if not source.loaded), default=0)
    ranges = (header.count // _RANGE_ENTRIES).bit_length()
    step = max(1 << align, 1 << max(0, bits - ranges))
    sections = header.sections()
    at = {name: sections[name][0] for name in ("fanout", "keys", "checks", "ordinals")}
    yield 0, header.pack()
    done = 0
    for first in range(0, 1 << bits, step):
        end = first + step
        pieces = [source.columns(first, end) for source in sources]
        keys, checks, ordinals, fine = _ordered(
            array("Q", b"".join(piece[0] for piece in pieces)),
            array("Q", b"".join(piece[1] for piece in pieces)),
            array("I", b"".join(piece[2] for piece in pieces)),
        )
        fanout = _fanout(fine, bits, first, end, done)
        low, high = first << (FINE_BITS - bits), end << (FINE_BITS - bits)
        if fine and not low <= fine[0] <= fine[-1] < high:  # only a forged run, its crc32 right
            raise IndexFormatError("a run holds entries outside the buckets its fanout puts them in")
        if not _LITTLE:
            fanout.byteswap()
        yield at["fanout"] + first * 4, fanout.tobytes()
        yield at["keys"] + done * KEY_BYTES, keys.tobytes()
        yield at["checks"] + done * CHECK_BYTES, checks.tobytes()
        yield at["ordinals"] + done * ORDINAL_BYTES, ordinals.tobytes()
        done += len(fine)
    if done != header.count:
        raise IndexFormatError(f"the runs' buckets hold {done} entries, their headers {header.count}")
    yield at["fanout"] + (1 << bits) * 4, struct.pack("<I", done)
    for name in ("ids", "idpoints", "firsts", "commits"):
        place = sections[name][0]
        copied = (
            _shifted_points(runs)
            if name == "idpoints"
            else itertools.chain.from_iterable(r.section_pieces(name) for r in runs)
        )
        for piece in copied:
            yield place, piece
            place += len(piece)
    yield sections["state"][0], state_raw


class _RangeSource:
    """One run's entries in a range of the merged run's buckets, for `merged_by_ranges`.

    A range of buckets is a slice of the run when it covers whole buckets of
    the run's own, fewer bits. A small run with fewer bits is read whole and
    ordered by its finest bits instead (its entries are few: `_SMALL_RUN` in
    all), so that the ranges are as small as the other runs allow.
    """

    __slots__ = ("_columns", "_fine", "_run", "coarser", "loaded")

    def __init__(self, run: Run, bits: int, *, load: bool) -> None:
        self._run = run
        self.coarser = bits - run.header.bits
        self.loaded = self.coarser > 0 and load
        self._columns: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self._fine: list[int] = []
        if self.loaded:
            keys, checks, ordinals, self._fine = _ordered(
                array("Q", run.section("keys")),
                array("Q", run.section("checks")),
                array("I", run.section("ordinals")),
            )
            self._columns = (keys.tobytes(), checks.tobytes(), ordinals.tobytes())

    def columns(self, first: int, end: int) -> tuple[bytes, bytes, bytes]:
        """Keys, checks and ordinals of the entries in buckets `first..end` (of the merged run's bits)."""
        if self.loaded:
            shift = FINE_BITS - (self._run.header.bits + self.coarser)
            low, high = (bisect_left(self._fine, bucket << shift) for bucket in (first, end))
            keys, checks, ordinals = self._columns
            return (
                keys[low * KEY_BYTES : high * KEY_BYTES],
                checks[low * CHECK_BYTES : high * CHECK_BYTES],
                ordinals[low * ORDINAL_BYTES : high * ORDINAL_BYTES],
            )
        return self._run.entries(first >> self.coarser, end >> self.coarser)


def merged_parts(runs: Sequence[Run]) -> Iterator[bytes]:
    """The bytes of one run holding `runs` (adjacent, oldest first), bucket by bucket, trailer last.

    Each bucket of the result is the same bucket of each run, one after the
    other, so a digest's places stay in ordinal order; commits and firsts are
    concatenated; the state is the last run's. Runs with fewer bucket bits than
    the result needs are re-laid as they are read (`Run.bucket_slices`). Yields
    the file in pieces of bounded size, so a merge of any size holds about one
    piece at a time.
    """
    header, state_raw = _merged_header(runs)
    bits = header.bits
    fanout = array("I", map(sum, zip(*(r.fanout_for(bits) for r in runs), strict=True)))
    if not _LITTLE:
        fanout.byteswap()
    crc = 0

    def emit(pieces: Iterable[bytes]) -> Iterator[bytes]:
        """A column's pieces (one a bucket and run: millions) joined in batches, in C; the padding."""
        source = iter(pieces)
        return whole(
            b"".join(batch) for batch in iter(lambda: list(itertools.islice(source, _BATCH_PIECES)), [])
        )

    def whole(pieces: Iterable[bytes]) -> Iterator[bytes]:
        """A section of a few large pieces (one a run): each yielded as it is, then the padding."""
        nonlocal crc
        size = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
            yield piece
        padding = bytes(_pad(size))
        if padding:
            crc = zlib.crc32(padding, crc)
            yield padding

    yield from whole([header.pack()])
    yield from whole([fanout.tobytes()])
    for column in ("keys", "checks", "ordinals"):
        buckets = zip(*(r.bucket_slices(column, bits) for r in runs), strict=True)
        yield from emit(itertools.chain.from_iterable(buckets))
    for name in ("ids", "idpoints", "firsts", "commits"):
        if name == "idpoints":
            yield from whole(_shifted_points(runs))
        else:
            yield from whole(itertools.chain.from_iterable(r.section_pieces(name) for r in runs))
    yield from whole([state_raw])
    yield trailer(crc)


def _shifted_points(runs: Sequence[Run]) -> Iterator[bytes]:
    """Each run's id points, moved by the ids of the runs before it (they become one `ids` section)."""
    shift = 0
    for run in runs:
        points = array("Q", run._points)
        if shift:
            points = array("Q", map(operator.add, points, itertools.repeat(shift)))
        if not _LITTLE:
            points.byteswap()
        yield points.tobytes()
        shift += run.header.ids_bytes


def empty_sha() -> bytes:
    """The sha256 of no bytes: what a run starting at the checkpoint's first byte records as `sha_start`."""
    return _EMPTY_SHA
