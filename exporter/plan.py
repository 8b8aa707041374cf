"""Which manifest ids this run fetches: the manifest minus what needs no request.

A `Planner` reads manifest entries in batches and sorts each one into exactly
one bucket: fetch it, or skip it (already archived, seen earlier in this
manifest, in another shard, found missing by an earlier run), or report it
(a malformed line, an id that must never be sent). It runs in the manifest
reader's thread, so neither reading nor hashing millions of ids ever blocks the
event loop; it touches no state the loop uses while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .config import Shard
from .digests import DigestSet, id_digest, shard_of
from .errors import Reason
from .fetcher import Failure
from .manifest import Entry, id_problem


@dataclass(slots=True)
class PlanCounts:
    """How the manifest's entries were sorted, for summary.json."""

    entries: int = 0
    to_fetch: int = 0
    duplicates: int = 0
    already_archived: int = 0
    known_missing: int = 0
    invalid: int = 0
    bad_lines: int = 0
    other_shard: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class PlanBatch:
    """One batch of planning: ids to fetch, and failures to record without a request."""

    fetch: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: int = 0


class Planner:
    """Sorts manifest entries; `seen` ends up holding every id this run handled."""

    __slots__ = (
        "_archived",
        "_entries",
        "_known_missing",
        "_retry_missing",
        "_shard",
        "counts",
        "seen",
    )

    def __init__(
        self,
        entries: Iterator[Entry],
        *,
        archived: DigestSet,
        known_missing: DigestSet,
        retry_failed: bool = False,
        shard: Shard | None = None,
    ) -> None:
        self._entries = entries
        self._archived = archived
        self._known_missing = known_missing
        self._retry_missing = retry_failed
        self._shard = shard
        self.seen = DigestSet()
        self.counts = PlanCounts()

    def next_batch(self, size: int = 1024) -> PlanBatch | None:
        """Plan up to `size` entries; None once the manifest is exhausted."""
        batch = PlanBatch()
        taken = 0
        for entry in self._entries:
            self._plan(entry, batch)
            taken += 1
            if taken >= size:
                break
        return batch if taken else None

    def _plan(self, entry: Entry, batch: PlanBatch) -> None:
        counts = self.counts
        counts.entries += 1
        if entry.problem is not None:
            counts.bad_lines += 1
            batch.failures.append(
                Failure(
                    entry.value,
                    Reason.BAD_MANIFEST_LINE,
                    f"manifest line {entry.line}: {entry.problem}",
                    line=entry.line,
                )
            )
            return
        record_id = entry.value
        digest = id_digest(record_id)
        problem = id_problem(record_id)
        if (
            problem is None
            and self._shard is not None
            and shard_of(digest, self._shard.count) != self._shard.index
        ):
            counts.other_shard += 1
            batch.skipped += 1
            return
        if not self.seen.add(digest):
            counts.duplicates += 1
            batch.skipped += 1
            return
        if problem is not None:
            counts.invalid += 1
            batch.failures.append(
                Failure(record_id, Reason.INVALID_ID, f"not sent: {problem}", line=entry.line)
            )
        elif digest in self._archived:
            counts.already_archived += 1
            batch.skipped += 1
        elif not self._retry_missing and digest in self._known_missing:
            counts.known_missing += 1
            batch.failures.append(
                Failure(
                    record_id,
                    Reason.NOT_FOUND,
                    "not found by an earlier run, not asked again (--retry-failed asks again)",
                )
            )
        else:
            counts.to_fetch += 1
            batch.fetch.append(record_id)
