"""The ids an archive held when a run opened it, as the planner asks about them: archived, met before.

Backed by the index (`index.IndexView`), so a run's memory does not grow with
the archive: lookups search the mapped runs, and the only state per archived
id is one byte of `visit` marks, allocated zeroed (pages that no line of the
manifest touches are never made resident).

A resume reads a manifest whose archived part lists its ids in nearly the order
the archive holds them: the previous run fetched them in manifest order, a few
dozen in flight at a time. So besides looking ids up one at a time, `claim`
keeps a *window*: the set of archived ids, as bytes, of a stretch of the
checkpoint near where the manifest is (`BLOCK_IDS` at a time, at most
`WINDOW_BLOCKS` blocks), against which a whole chunk of manifest lines is
checked with a few calls in C (`set.intersection`, `difference_update`). An id
leaves the window when a line claims it, so the window only ever holds ids not
met yet, and a line it answers is an id's first visit. When the window runs low
the next block is read; a block that leaves it records which of its ids were
met as marks (usually all: one slice assignment). Lines it does not answer are
looked up (`visit`), which also moves the window to where those lookups keep
finding ids. A line met twice in one chunk is sorted out line by line.

Which ordinals are met: those marked, and those of the window's stretch
(`_low.._high`) whose id has left the window.

One difference from a digest set is left: in an archive whose checkpoint lists
an id twice (never written so; only damage, which `exporter verify` reports), a
manifest line repeating that id may be counted as already archived rather than
as a duplicate. Nothing is fetched either way.
"""

from __future__ import annotations

import collections
import itertools
import operator
from collections.abc import Iterator, Sequence

from .index import IndexView

#: Archived ids read into the window at a time, and the most blocks it holds: small enough for the
#: set to stay in the CPU's cache, far wider than the reordering of a run's few dozen requests in flight.
BLOCK_IDS = 1 << 13
WINDOW_BLOCKS = 4
#: The next block is read when fewer ids than this are left in the window.
_LOW_WATER = 2 * BLOCK_IDS
#: Blocks read, or lookups made, between two returns of the index's mapped pages (`forget_pages`).
_FORGET_BLOCKS = 64
_FORGET_LOOKUPS = 1 << 16
#: Lookups that found archived ids elsewhere, this many times the window's own hits, move it there.
_RESYNC_AT = 64
_RESYNC_RATIO = 4


class ArchivedIds:
    """Digest lookups against an index view, `visit` marks by ordinal, and the batch window (`claim`)."""

    __slots__ = (
        "_blocks",
        "_commits",
        "_count",
        "_found_elsewhere",
        "_high",
        "_hits_before",
        "_low",
        "_marks",
        "_touched",
        "_view",
        "_window",
    )

    def __init__(self, view: IndexView) -> None:
        self._view = view
        self._count = view.ids
        self._marks = bytearray(view.ids)
        self._window: set[bytes] = set()
        #: (first ordinal, ids) of each block of the window, oldest first.
        self._blocks: collections.deque[tuple[int, list[bytes]]] = collections.deque()
        #: The window's stretch of ordinals; empty until `claim` starts it.
        self._low = self._high = 0
        self._commits: Iterator[tuple[int, list[bytes]]] | None = None
        #: Ordinals `visit` found outside the window since the last `claim`, and that claim's hits.
        self._found_elsewhere: list[int] = []
        self._hits_before = 0
        #: Lookups and blocks (as lookups) since the index's pages were last given back.
        self._touched = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: bytes) -> bool:
        return self._count > 0 and self._view.lookup(digest) is not None

    def visit(self, digest: bytes, text: str | None = None, /) -> int:
        """0 if the archive does not hold the id; else 1 the first time it is met, 2 after.

        A manifest that lists an archived id twice counts its later lines as
        duplicates. `text` (the id itself) is needed once the window is in use.
        """
        if not self._count:
            return 0
        self._touch(1)
        ordinal = self._view.lookup(digest)
        if ordinal is None:
            return 0
        if self._low <= ordinal < self._high and text is not None:
            key = text.encode("utf-8", "surrogatepass")
            if key not in self._window:
                return 2
            self._window.discard(key)
            return 1
        if self._marks[ordinal]:
            return 2
        self._marks[ordinal] = 1
        if len(self._found_elsewhere) < 4 * _RESYNC_AT:
            self._found_elsewhere.append(ordinal)
        return 1

    def claim(self, lines: Sequence[bytes]) -> list[int]:
        """Mark the lines the window holds as met; the positions of the others (to look up).

        `lines` are a chunk of a plain-text manifest's lines, stripped.
        """
        if not self._count:
            return list(range(len(lines)))
        self._follow()
        window = self._window
        before = len(window)
        if window.issuperset(lines):  # every line archived: the resume's common case
            window.difference_update(lines)
            if before - len(window) == len(lines):
                misses: list[int] = []
            else:  # an archived id twice in this chunk: its first line claims it
                window.update(lines)
                misses = [at for at, line in enumerate(lines) if not _take(window, line)]
        else:
            flags = list(map(window.__contains__, lines))
            claimed = list(itertools.compress(lines, flags))
            window.difference_update(claimed)
            if before - len(window) == len(claimed):
                misses = list(itertools.compress(range(len(lines)), map(operator.not_, flags)))
            else:
                window.update(claimed)
                misses = [at for at, line in enumerate(lines) if not _take(window, line)]
        self._hits_before = len(lines) - len(misses)
        while len(window) < _LOW_WATER and self._commits is not None:
            self._extend()
        return misses

    def _follow(self) -> None:
        """Start the window at the archive's first id, or move it to where lookups keep finding ids."""
        elsewhere = self._found_elsewhere
        if self._high == 0 and self._commits is None and not self._blocks:
            self._restart(0)
        elif len(elsewhere) >= _RESYNC_AT and len(elsewhere) > _RESYNC_RATIO * self._hits_before:
            self._restart(sorted(elsewhere)[len(elsewhere) // 2])
        elsewhere.clear()

    def _restart(self, ordinal: int) -> None:
        while self._blocks:
            self._evict()
        self._commits = self._view.ids_from(ordinal)
        self._low = self._high = -1
        for _ in range(2):
            self._extend()

    def _extend(self) -> None:
        """Read the next block of archived ids into the window; let the oldest go if there are too many."""
        commits = self._commits
        if commits is None:
            return
        ids: list[bytes] = []
        first = -1
        for start, commit in commits:
            if first < 0:
                first = start
            ids += commit
            if len(ids) >= BLOCK_IDS:
                break
        else:
            self._commits = None
        if first < 0:
            return
        if self._low < 0:
            self._low = first
        self._high = first + len(ids)
        marks = self._marks
        window = self._window
        if marks.find(1, first, self._high) >= 0:  # some met already, by a lookup: left out
            window.update(i for o, i in enumerate(ids, first) if not marks[o])
        else:
            window.update(ids)
        window.discard(b"")  # the index's stand-in for an id no plain-text line can be
        self._touch(_FORGET_LOOKUPS // _FORGET_BLOCKS)
        self._blocks.append((first, ids))
        while len(self._blocks) > WINDOW_BLOCKS:
            self._evict()

    def _evict(self) -> None:
        """The oldest block leaves the window: its ids met become marks, the others are forgotten."""
        first, ids = self._blocks.popleft()
        window = self._window
        end = first + len(ids)
        if window.isdisjoint(ids):
            self._marks[first:end] = b"\x01" * len(ids)
        else:
            self._marks[first:end] = bytes(map(operator.not_, map(window.__contains__, ids)))
            window.difference_update(ids)
        self._low = self._blocks[0][0] if self._blocks else self._high

    def _touch(self, count: int) -> None:
        """Count index pages read; now and then let them go, so RSS does not grow with the archive."""
        self._touched += count
        if self._touched >= _FORGET_LOOKUPS:
            self._touched = 0
            self._view.forget_pages()

    def __repr__(self) -> str:
        return f"<ArchivedIds {self._count} ids, window {self._low}..{self._high} ({len(self._window)} left)>"


def _take(window: set[bytes], line: bytes) -> bool:
    """Whether `line` was in the window (and is not any more)."""
    if line in window:
        window.discard(line)
        return True
    return False
