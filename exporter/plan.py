"""Which manifest ids this run fetches: the manifest minus what needs no request.

A `Planner` reads manifest entries in batches and sorts each one into exactly
one bucket: fetch it, or skip it (already archived, seen earlier in this
manifest, in another shard, found missing by an earlier run), or report it
(a malformed line, an id that must never be sent). It runs in the manifest
reader's thread, so neither reading nor hashing millions of ids ever blocks the
event loop; it touches no state the loop uses while it runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from .config import Shard
from .digests import ArchivedLookup, DigestSet, id_digest, shard_of
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


@dataclass(slots=True)
class PlanBatch:
    """One batch of planning: ids to fetch, and failures to record without a request."""

    fetch: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: int = 0


class Planner:
    """Sorts manifest entries.

    `seen` ends up holding every id this run handled that the archive did not
    already hold; archived ids are told from their repeats by the archived
    set's own marks (`DigestSet.visit`), so an id listed twice counts once,
    and its later lines as duplicates, archived or not.
    """

    __slots__ = (
        "_archived",
        "_check_missing",
        "_entries",
        "_known_missing",
        "_shard",
        "counts",
        "seen",
    )

    def __init__(
        self,
        entries: Iterator[Entry],
        *,
        archived: ArchivedLookup,
        known_missing: DigestSet,
        retry_failed: bool = False,
        shard: Shard | None = None,
    ) -> None:
        self._entries = entries
        self._archived = archived
        self._known_missing = known_missing
        # Only look ids up in the earlier 404s when there are any and they are to be skipped.
        self._check_missing = not retry_failed and len(known_missing) > 0
        self._shard = shard
        self.seen = DigestSet()
        self.counts = PlanCounts()

    def next_batch(self, size: int = 1024) -> PlanBatch | None:
        """Plan up to `size` entries; None once the manifest is exhausted.

        The loop runs for every manifest line (millions, and all of them on a
        resume before the first request), so its names are bound locally.
        """
        batch = PlanBatch()
        counts = self.counts
        seen_add = self.seen.add
        archived_visit = self._archived.visit
        shard = self._shard
        skipped = taken = 0
        for entry in itertools.islice(self._entries, size):
            taken += 1
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
                continue
            record_id = entry.value
            digest = id_digest(record_id)
            visits = archived_visit(digest)
            if visits:
                # First, because on a resume most lines are archived: an archived id was
                # valid and in this shard when it was archived, so nothing else needs checking.
                if visits == 1:
                    counts.already_archived += 1
                else:
                    counts.duplicates += 1
                skipped += 1
                continue
            problem = id_problem(record_id)
            if problem is None and shard is not None and shard_of(digest, shard.count) != shard.index:
                counts.other_shard += 1
                skipped += 1
            elif not seen_add(digest):
                counts.duplicates += 1
                skipped += 1
            elif problem is not None:
                counts.invalid += 1
                batch.failures.append(
                    Failure(record_id, Reason.INVALID_ID, f"not sent: {problem}", line=entry.line)
                )
            elif self._check_missing and digest in self._known_missing:
                counts.known_missing += 1
                batch.failures.append(
                    Failure(
                        record_id,
                        Reason.NOT_FOUND,
                        "not found by an earlier run, not asked again (--retry-failed asks again)",
                    )
                )
            else:
                batch.fetch.append(record_id)
        counts.entries += taken
        counts.to_fetch += len(batch.fetch)
        batch.skipped = skipped
        return batch if taken else None
