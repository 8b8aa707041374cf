"""The ids an archive held when a run opened it, as the planner asks about them: archived, met before.

Backed by the index (`index.IndexView`), so a run's memory does not grow with
the archive: lookups search the mapped runs, and the only per-id state is one
byte per archived id for `visit`'s marks, allocated zeroed (pages no id of the
manifest touches are never made resident).
"""

from __future__ import annotations

from .index import IndexView


class ArchivedIds:
    """Digest lookups against an index view, with `visit` marks (a `DigestSet` stand-in)."""

    __slots__ = ("_count", "_marks", "_view")

    def __init__(self, view: IndexView) -> None:
        self._view = view
        self._count = view.ids
        self._marks = bytearray(view.ids)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: bytes) -> bool:
        return self._count > 0 and self._view.lookup(digest) is not None

    def ordinal(self, digest: bytes) -> int | None:
        """The ordinal of the id's first place in the archive, or None."""
        return self._view.lookup(digest) if self._count else None

    def visit(self, digest: bytes) -> int:
        """0 if the archive does not hold the id; else 1 the first time it is visited, 2 after.

        A manifest that lists an archived id twice counts its later lines as
        duplicates; the mark is one byte per archived id, by ordinal.
        """
        if not self._count:
            return 0
        ordinal = self._view.lookup(digest)
        if ordinal is None:
            return 0
        if self._marks[ordinal]:
            return 2
        self._marks[ordinal] = 1
        return 1

    def __repr__(self) -> str:
        return f"<ArchivedIds {self._count} ids, {self._view!r}>"
