"""What an archive's prefix holds, and how a work dir stands to it (pure).

Resuming from the bucket is reading what was only ever added: the listing of
the prefix sorted into checkpoint segments, records files, run summaries and
failure lists (`sort_listing`), the segments concatenated into the remote
checkpoint R, and R compared with the work dir's own checkpoint L
(`standing`):

    AHEAD      L starts with R: the same machine, with pieces sealed or
               committed since the last shipped segment (ship them, go on)
    BEHIND     R starts with L (an empty work dir, or one a machine change left
               behind): the work dir is rebuilt from R; nothing of L is lost
    DIVERGED   another run shipped after this work dir's last shipped segment:
               what L holds beyond their common part was never shipped, and is
               set aside (and fetched again); R wins

A records file in the bucket that R does not list is either the piece a run
shipped just before it was killed, before its checkpoint segment
(`orphan`: the next number after R's files, taken in by reading it), or not
this archive's (`foreign`: the run stops, exit 4).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.archive.layout import (
    RUN_FAILED_DIR,
    RUN_SUMMARIES_DIR,
    file_number,
    run_of,
    segment_number,
    unlisted_records_files,
)
from exporter.errors import ArchiveCorrupt

from .location import Location


@dataclass(slots=True)
class Listing:
    """The archive's keys under its prefix, sorted by what they are."""

    #: (segment number, key, size), in number order: 1, 2, ... without a gap.
    segments: list[tuple[int, str, int]] = field(default_factory=list)
    #: records file name -> size
    records: dict[str, int] = field(default_factory=dict)
    #: run -> key
    summaries: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    #: keys under the prefix that are no archive name (reported, never touched)
    other: list[str] = field(default_factory=list)

    @property
    def last_failed(self) -> str | None:
        """The key of failed.ndjson as the last run that wrote one left it."""
        return self.failed[max(self.failed)] if self.failed else None


def sort_listing(location: Location, listed: Iterable[tuple[str, int]]) -> Listing:
    """Sort (key, size) pairs of a listing; ArchiveCorrupt when a checkpoint segment is missing."""
    listing = Listing()
    for key, size in listed:
        name = location.name_of(key)
        if name is None:
            continue
        number = segment_number(name)
        if number is not None:
            listing.segments.append((number, key, size))
        elif "/" not in name and file_number(name) is not None:
            listing.records[name] = size
        elif (run := run_of(name, RUN_SUMMARIES_DIR)) is not None:
            listing.summaries[run] = key
        elif (run := run_of(name, RUN_FAILED_DIR)) is not None:
            listing.failed[run] = key
        else:
            listing.other.append(key)
    listing.segments.sort()
    for expected, (number, key, _) in enumerate(listing.segments, 1):
        if number != expected:
            raise ArchiveCorrupt(
                f"s3://{location.bucket}/{key}: checkpoint segment {expected} is missing from "
                f"{location.url}, so what the archive holds cannot be known; restore it (the bucket's "
                "versioning keeps every version), or export into a new prefix"
            )
    return listing


class Standing(enum.Enum):
    """How the work dir's checkpoint L stands to the remote one R."""

    AHEAD = "ahead"
    BEHIND = "behind"
    DIVERGED = "diverged"


def standing(local: bytes, remote: bytes) -> Standing:
    """AHEAD when L starts with R (equal included), BEHIND when R starts with L, else DIVERGED."""
    if local.startswith(remote):
        return Standing.AHEAD
    if remote.startswith(local):
        return Standing.BEHIND
    return Standing.DIVERGED


def strays(location: Location, listing: Listing, listed_files: Iterable[str]) -> tuple[str | None, list[str]]:
    """Records files in the bucket that R does not list: the orphan (or None), and the foreign ones.

    The orphan is the file numbered right after R's last: a run shipped it and
    was killed before its checkpoint segment. Any other is not this archive's.
    """
    leftover, foreign = unlisted_records_files(listing.records, listed_files)
    return (leftover[0] if leftover else None), [location.key(name) for name in foreign]
