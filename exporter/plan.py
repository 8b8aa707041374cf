"""Which manifest ids this run fetches: the manifest minus what needs no request.

A `Planner` reads manifest entries in batches and sorts each one into exactly
one bucket: fetch it, or skip it (already archived, seen earlier in this
manifest, in another shard, found missing by an earlier run), or report it
(a malformed line, an id that must never be sent). It runs in the manifest
reader's thread, so neither reading nor hashing millions of ids ever blocks the
event loop; it touches no state the loop uses while it runs.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from . import distinct
from .config import Shard
from .digests import DIGEST_BYTES, ArchivedLookup, DigestSet, id_digest, shard_of
from .errors import Reason
from .manifest import Entry, ManifestEntries, id_problem, sane_ascii_lines, text_entries
from .manifest_stream import LineBatch
from .outcomes import Failure
from .resume_point import resume_offset


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


class _Claims(Protocol):
    """An archived set that answers a chunk of lines at once (`archive.archived.ArchivedIds.claim`)."""

    def claim(self, lines: Sequence[bytes], /) -> list[int]: ...


class Planner:
    """Sorts manifest entries.

    `seen` ends up holding every id this run handled that the archive did not
    already hold; archived ids are told from their repeats by the archived
    set's own marks (`DigestSet.visit`), so an id listed twice counts once,
    and its later lines as duplicates, archived or not.

    A plain-text manifest is planned a chunk of lines at a time: an archive
    with an index answers the lines it knows to be archived in a few calls in C
    (`claim`: a resume's archived lines go by at about 0.3 us each), and a chunk
    whose other lines all hold sane ASCII ids (told in C too) is planned by
    `plan_ids` without an `Entry` a line; anything else line by line, as any
    entry is. A resume's manifest file is planned from where its archived part
    ends (`resume_point`), so the first request waits for none of that part.

    `counts_only` is for a caller that wants the counts and not the ids (a dry
    run): when nothing but repeats is left to decide (an archive that holds
    nothing, no shard, no earlier 404s to look up), the valid ids' repeats are
    counted for the whole manifest at its end (`distinct.DistinctCount`)
    instead of decided one by one; batches then carry no ids to fetch, and the
    counts are whole once `next_batch` has returned None. Invalid ids, which
    never equal a valid one, are still decided one by one.
    """

    __slots__ = (
        "_archived",
        "_check_missing",
        "_distinct",
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
        counts_only: bool = False,
    ) -> None:
        self._entries: Iterator[Entry] | _TextPlan = entries
        if isinstance(entries, ManifestEntries):
            claims = cast(_Claims, archived) if hasattr(archived, "claim") else None
            self._entries = _TextPlan(entries, claims)
        self._archived = archived
        self._known_missing = known_missing
        # Only look ids up in the earlier 404s when there are any and they are to be skipped.
        self._check_missing = not retry_failed and len(known_missing) > 0
        self._shard = shard
        self.seen = DigestSet()
        self.counts = PlanCounts()
        self._distinct: distinct.DistinctCount | None = None
        only_repeats = not len(archived) and shard is None and not self._check_missing
        if counts_only and only_repeats and distinct.usable():
            self._distinct = distinct.DistinctCount()

    def next_batch(self, size: int = 1024) -> PlanBatch | None:
        """Plan up to `size` entries (a chunk of a plain-text manifest's lines); None once it is done."""
        entries = self._entries
        if isinstance(entries, _TextPlan):
            planned = entries.next_batch(self)
        else:
            batch = PlanBatch()
            planned = batch if self.plan_entries(itertools.islice(entries, size), batch) else None
        if planned is None and self._distinct is not None:
            self._settle_counts(self._distinct)
        return planned

    def _settle_counts(self, counter: distinct.DistinctCount) -> None:
        """The manifest's end, its valid ids counted: the first of each is to fetch, the rest repeats."""
        self._distinct = None
        unique = counter.distinct()
        self.counts.to_fetch += unique
        self.counts.duplicates += counter.added - unique

    def plan_entries(self, entries: Iterable[Entry], batch: PlanBatch) -> int:
        """Plan `entries` into `batch`; the number taken.

        The loop runs for every manifest line that is not answered in bulk
        (millions, on a fresh run), so its names are bound locally.
        """
        counts = self.counts
        seen_add = self.seen.add
        archived_visit = self._archived.visit
        shard = self._shard
        skipped = taken = 0
        fetched = len(batch.fetch)
        # Valid ids to count rather than decide (`counts_only`), as the bytes a plain-text line holds.
        counted: list[bytes] | None = [] if self._distinct is not None else None
        for entry in entries:
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
            if counted is not None and id_problem(record_id) is None:
                counted.append(record_id.encode("utf-8", "surrogatepass"))
                continue
            digest = id_digest(record_id)
            visits = archived_visit(digest, record_id)
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
                batch.failures.append(_known_missing(record_id))
            else:
                batch.fetch.append(record_id)
        if counted and self._distinct is not None:
            self._distinct.add(counted)
        counts.entries += taken
        counts.to_fetch += len(batch.fetch) - fetched
        batch.skipped += skipped
        return taken

    def plan_sane_lines(self, lines: list[bytes], batch: PlanBatch) -> None:
        """Plan stripped plain-text lines that each hold a sane ASCII id (`manifest.sane_ascii_lines`)."""
        if self._distinct is not None:
            self.counts.entries += len(lines)
            self._distinct.add(lines)
            return
        # An ASCII id's bytes are what id_digest hashes.
        digests = list(map(_DIGEST_DONE, map(_DIGEST, lines)))
        self.plan_ids(list(map(bytes.decode, lines)), digests, batch)

    def plan_ids(self, values: list[str], digests: list[bytes], batch: PlanBatch) -> None:
        """Plan ids known to be sane (`manifest.sane_ascii_lines`), with their digests: as `plan_entries`.

        One loop for a chunk's worth, and the duplicate check in one call.
        """
        counts = self.counts
        counts.entries += len(values)
        archived = self._archived
        shard = self._shard
        known_missing = self._known_missing if self._check_missing else None
        if len(archived) or shard is not None:
            kept_values, kept_digests = [], []
            visit = archived.visit if len(archived) else None
            for record_id, digest in zip(values, digests, strict=True):
                if visit is not None:
                    visits = visit(digest, record_id)
                    if visits:
                        if visits == 1:
                            counts.already_archived += 1
                        else:
                            counts.duplicates += 1
                        batch.skipped += 1
                        continue
                if shard is not None and shard_of(digest, shard.count) != shard.index:
                    counts.other_shard += 1
                    batch.skipped += 1
                    continue
                kept_values.append(record_id)
                kept_digests.append(digest)
            values, digests = kept_values, kept_digests
        new = self.seen.add_all(digests)
        repeated = len(new) - sum(new)
        counts.duplicates += repeated
        batch.skipped += repeated
        pairs = zip(values, digests, strict=True)
        fetched = itertools.compress(pairs, new) if repeated else pairs
        if known_missing is None or not len(known_missing):
            before = len(batch.fetch)
            batch.fetch += (record_id for record_id, _ in fetched)
            counts.to_fetch += len(batch.fetch) - before
        else:
            for record_id, digest in fetched:
                if digest in known_missing:
                    counts.known_missing += 1
                    batch.failures.append(_known_missing(record_id))
                else:
                    batch.fetch.append(record_id)
                    counts.to_fetch += 1


class _TextPlan:
    """A plain-text manifest planned a chunk of lines at a time (see `Planner`).

    Over an archive with an index, from its resume point (`resume_point`):
    the lines from there until the first ids to fetch, of which `_LEAD_IDS` go
    out at once; then the lines before it, in order; then the rest.
    """

    __slots__ = ("_archived", "_entries", "_plans")

    def __init__(self, entries: ManifestEntries, archived: _Claims | None) -> None:
        self._entries: ManifestEntries | None = entries
        self._archived = archived
        self._plans: Iterator[tuple[PlanBatch, int]] | None = None

    def next_batch(self, planner: Planner) -> PlanBatch | None:
        """The plan of the next chunk of lines that holds an entry; None at the end of the manifest."""
        if self._entries is not None:
            # Opens the stream; a manifest sniffed as CSV or NDJSON has no raw lines to give.
            entries, self._entries = self._entries, None
            got = entries.text_batches()
            if got is None:
                planner._entries = entries
                return planner.next_batch()
            self._plans = self._ordered(planner, entries, *got)
        assert self._plans is not None
        for batch, taken in self._plans:
            if taken:
                return batch
        return None

    def _ordered(
        self, planner: Planner, entries: ManifestEntries, pending: list[Entry], batches: Iterator[LineBatch]
    ) -> Iterator[tuple[PlanBatch, int]]:
        """(batch, entries taken) in the order the ids should go out."""
        tail = self._from_resume_point(planner, entries, pending)
        if tail is None:
            yield from self._in_order(planner, pending, batches)
            return
        first_line, after = tail
        held: PlanBatch | None = None
        for chunk in after:
            batch = PlanBatch()
            taken = self._plan_chunk(planner, chunk, batch)
            if len(batch.fetch) > _LEAD_IDS:
                held = PlanBatch(fetch=batch.fetch[_LEAD_IDS:])
                del batch.fetch[_LEAD_IDS:]
            yield batch, taken
            if batch.fetch:
                break
        yield from self._in_order(planner, pending, _lines_before(batches, first_line))
        if held is not None:
            yield held, len(held.fetch)
        for chunk in after:
            batch = PlanBatch()
            yield batch, self._plan_chunk(planner, chunk, batch)

    def _in_order(
        self, planner: Planner, pending: list[Entry], batches: Iterator[LineBatch]
    ) -> Iterator[tuple[PlanBatch, int]]:
        batch = PlanBatch()
        yield batch, planner.plan_entries(pending, batch)
        for chunk in batches:
            batch = PlanBatch()
            yield batch, self._plan_chunk(planner, chunk, batch)

    def _from_resume_point(
        self, planner: Planner, entries: ManifestEntries, pending: list[Entry]
    ) -> tuple[int, Iterator[LineBatch]] | None:
        """(its first line's number, the lines) from the resume point; None to plan in order."""
        if self._archived is None or not len(planner._archived):
            return None
        manifest = entries.plain_file()
        if manifest is None:
            return None
        offset = resume_offset(manifest, planner._archived.__contains__)
        if not offset:
            return None
        try:
            first_line = manifest.count_lines(offset) + 1
        except OSError:
            return None
        if any(entry.line >= first_line for entry in pending):
            return None
        return first_line, manifest.batches_from(offset, first_line)

    def _plan_chunk(self, planner: Planner, chunk: LineBatch, batch: PlanBatch) -> int:
        first, lines = chunk.first, chunk.lines
        try:
            # A line's id is stripped, but most lines hold no white space: the chunk says.
            stripped = cast(list[bytes], list(map(bytes.strip, lines)) if chunk.padded else lines)  # type: ignore[arg-type]
        except TypeError:  # an over-long line in the chunk: plan it line by line
            return planner.plan_entries(text_entries(zip(itertools.count(first), lines)), batch)
        if self._archived is None:
            misses: list[int] | range = range(len(lines))
        else:
            misses = self._archived.claim(stripped)
        hits = len(lines) - len(misses)
        counts = planner.counts
        counts.entries += hits
        counts.already_archived += hits
        batch.skipped += hits
        if not misses:
            return hits
        rest = stripped if hits == 0 else list(map(stripped.__getitem__, misses))
        if sane_ascii_lines(rest):
            planner.plan_sane_lines(rest, batch)
            return hits + len(rest)
        numbered = zip(map(first.__add__, misses), map(lines.__getitem__, misses), strict=True)
        return hits + planner.plan_entries(text_entries(numbered), batch)


def _lines_before(batches: Iterator[LineBatch], end: int) -> Iterator[LineBatch]:
    """The batches' lines numbered below `end`."""
    for chunk in batches:
        if chunk.first >= end:
            return
        if chunk.first + len(chunk.lines) > end:
            yield chunk._replace(lines=chunk.lines[: end - chunk.first])
            return
        yield chunk


#: Ids to fetch handed out from the resume point before the lines ahead of it are planned: enough for
#: the first requests, few enough not to wait in the job queue (twice the requests in flight).
_LEAD_IDS = 16

_DIGEST = functools.partial(hashlib.blake2b, digest_size=DIGEST_BYTES)
_DIGEST_DONE = operator.methodcaller("digest")


def _known_missing(record_id: str) -> Failure:
    """An id an earlier run found missing (404): noted, not asked again unless --retry-failed."""
    return Failure(
        record_id,
        Reason.NOT_FOUND,
        "not found by an earlier run, not asked again (--retry-failed asks again)",
    )
