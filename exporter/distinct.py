"""How many distinct ids a stream of millions holds, when only the number is wanted.

A dry run over an archive that holds nothing yet must still say how many of
a manifest's lines repeat an earlier one. The run itself decides that id by id
(`digests.DigestSet`, about 1.2 us an id in the interpreter at ten million
ids: most of a fresh dry run's time); a count needs no decision per id, so
here every step is one call into C for a whole chunk of ids:

- an id's key is Python's own `hash` of its bytes: SipHash, 64 bits, keyed
  afresh by every process, computed in C by `map`;
- keys gather in a `set` up to `SEGMENT_KEYS`, then the set is sealed into an
  `array` of 8 bytes a key, less the keys any earlier segment holds
  (`difference_update`, in C), so sealed segments never share a key and the
  count is the sum of their lengths;
- with more than `SEQUENTIAL_SEGMENTS` sealed (past some twenty million
  ids, where checking each new segment against every earlier one would cost
  more than sorting), segments are sealed as they come and counted at the end
  a slice of the key space at a time: each one sorted, then cut at the same
  key boundaries, so each slice's keys fit one set.

Measured on the 2-core VM over 10M shuffled ids: 5.7 s in all (0.57 us an
id; a fresh dry run of them takes 8.6 s, `scripts/bench_scale.py`), and 258 MB
at the peak (the open set, 2.4M int objects in 4M slots, about 160 MB, plus 8
bytes an id sealed).

Exactness: two different ids with the same 64-bit key count as one. For a
manifest of n ids the chance of that is about n**2 / 2**65 (3 in a million at
ten million ids), and since the key is drawn afresh by each process, no
manifest can be made to collide on purpose (unless PYTHONHASHSEED pins it).
The cost of a collision is a dry run that says one repeat too many, never a
record lost: the run decides repeats by 128-bit digest. Where Python's hash
is narrower than 64 bits or not SipHash (`usable`), the dry run decides id by
id as the run does.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from array import array
from collections.abc import Sequence

#: Keys in the open set before it is sealed: just under 0.6 of 2**22 slots, the fill at which a set
#: grows, so it stays at 4M slots (64 MB) plus 2.4M int objects (96 MB).
SEGMENT_KEYS = 2_400_000
#: Sealed segments each new one is checked against at once; past this, sort and count at the end.
SEQUENTIAL_SEGMENTS = 8
#: Keys a slice of the key space holds, on average, in the final count.
SLICE_KEYS = 1_000_000
_KEY_BITS = 64


def usable() -> bool:
    """Whether this Python's `hash` of bytes is keyed SipHash of 64 bits, which `DistinctCount` relies on."""
    info = sys.hash_info
    return info.width >= _KEY_BITS and info.algorithm.startswith("siphash")


class DistinctCount:
    """The number of distinct byte strings added, at 8 bytes a string once its segment is sealed."""

    __slots__ = ("_open", "_sealed", "_segment_keys", "_sequential", "_settled", "_slice_keys", "added")

    def __init__(
        self,
        *,
        segment_keys: int = SEGMENT_KEYS,
        sequential_segments: int = SEQUENTIAL_SEGMENTS,
        slice_keys: int = SLICE_KEYS,
    ) -> None:
        self._segment_keys = segment_keys
        self._sequential = sequential_segments
        self._slice_keys = slice_keys
        self._open: set[int] = set()
        #: Sealed keys; mutually disjoint while `_settled` is True.
        self._sealed: list[array[int]] = []
        self._settled = True
        #: Strings added, repeats included.
        self.added = 0

    def add(self, ids: Sequence[bytes]) -> None:
        """Count these ids (a chunk of a manifest: the work is in C, so give many at once)."""
        self.added += len(ids)
        self._open.update(map(hash, ids))
        if len(self._open) >= self._segment_keys:
            self._seal()

    def distinct(self) -> int:
        """How many distinct strings were added so far."""
        if self._open:
            self._seal()
        if self._settled:
            return sum(map(len, self._sealed))
        return self._count_by_slices()

    def _seal(self) -> None:
        keys = self._open
        self._open = set()
        if self._settled and len(self._sealed) < self._sequential:
            for sealed in self._sealed:
                keys.difference_update(sealed)
        else:
            self._settled = False
        self._sealed.append(array("q", keys))

    def _count_by_slices(self) -> int:
        """Distinct keys over segments that may share keys: sorted, then counted a key range at a time."""
        segments = self._sealed
        for number, segment in enumerate(segments):
            # One at a time, so only one segment is ever held as a list of int objects.
            segments[number] = array("q", sorted(segment))
        total = sum(map(len, segments))
        slices = max(1, total // self._slice_keys)
        low, span = -(1 << (_KEY_BITS - 1)), (1 << _KEY_BITS) // slices
        bounds = [low + span * at for at in range(1, slices)]
        starts = [0] * len(segments)
        distinct = 0
        for bound in itertools.chain(bounds, [None]):
            keys: set[int] = set()
            for number, segment in enumerate(segments):
                end = len(segment) if bound is None else bisect.bisect_left(segment, bound)
                keys.update(segment[starts[number] : end])
                starts[number] = end
            distinct += len(keys)
        return distinct

    def __repr__(self) -> str:
        return (
            f"<DistinctCount added={self.added} open={len(self._open)} "
            f"sealed={len(self._sealed)} settled={self._settled}>"
        )
