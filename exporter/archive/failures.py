"""failed.ndjson across runs: this run's journal of failures, and the merge that rewrites the file.

A run appends its failures to `.failed.partial` as they come (in the commits'
writer thread, so a long run does not hold them in memory) and, at its end,
rewrites failed.ndjson whole: the failures of earlier runs it did not touch,
then its own. A run that dies first leaves failed.ndjson as it was; its
journal is removed, and the ids it names are tried again next time anyway.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from exporter.digests import ArchivedLookup, DigestSet, id_digest
from exporter.errors import ArchiveError, Reason

from .layout import FAILED_NAME, JOURNAL_NAME
from .reader import Unreadable, failed_entries, warned
from .safe_fs import SafeDir, os_error, write_all

_COPY_BYTES = 1 << 20


def known_missing(directory: SafeDir, into: DigestSet) -> None:
    """Add to `into` the ids an earlier run found missing (404): not asked again by default.

    Lines that are not entries are logged as warnings here, and left out by `merge`.
    """
    for entry in warned(failed_entries(directory)):
        if entry.reason == Reason.NOT_FOUND:
            into.add(id_digest(entry.id))


class FailureJournal:
    """This run's failed.ndjson lines, kept in `.failed.partial` until `merge` writes failed.ndjson."""

    __slots__ = ("_dir", "_fd")

    def __init__(self, directory: SafeDir) -> None:
        self._dir = directory
        self._fd = -1

    def start(self) -> None:
        """Begin an empty journal (a killed run's is dropped)."""
        self._dir.unlink(JOURNAL_NAME)
        self._fd = self._dir.open(JOURNAL_NAME, os.O_WRONLY | os.O_APPEND, create=True, exclusive=True)

    def append(self, lines: Sequence[bytes]) -> None:
        """Note failed.ndjson lines (each ending in a newline) of ids that did not export in this run."""
        if lines:
            try:
                write_all(self._fd, b"".join(lines))
            except OSError as exc:
                raise os_error(self._dir.path / JOURNAL_NAME, exc, "write") from exc

    def merge(self, handled: DigestSet, archived: ArchivedLookup) -> int:
        """Rewrite failed.ndjson: this run's failures, plus earlier ones this run did not touch.

        An earlier failure is dropped when this run handled its id (`handled`)
        or the archive holds it (`archived`); earlier bad-manifest-line reports
        are dropped too, since they name a line of an earlier manifest, not an
        id, and so are reports of an id cut to its first KiB (`id_bytes`), which
        cannot be matched to this run's ids: a manifest that lists it reports it
        again. Returns the number of lines written.
        """
        count = 0
        directory = self._dir

        def lines() -> Iterator[bytes]:
            nonlocal count
            for entry in failed_entries(directory):
                if isinstance(entry, Unreadable) or entry.reason == Reason.BAD_MANIFEST_LINE or entry.cut:
                    continue
                digest = id_digest(entry.id)
                if digest in handled or digest in archived:
                    continue
                count += 1
                yield entry.to_json_line()
            journal = directory.reader(JOURNAL_NAME)
            if journal is None:
                raise ArchiveError(f"{directory.path / JOURNAL_NAME} was removed while the run wrote it")
            try:
                with journal:
                    # This run's own lines, copied as they are: in chunks, so no line is ever held whole.
                    while chunk := journal.read(_COPY_BYTES):
                        count += chunk.count(b"\n")
                        yield chunk
            except OSError as exc:
                raise os_error(directory.path / JOURNAL_NAME, exc, "read") from exc

        directory.write_whole(FAILED_NAME, lines())
        return count

    def close(self) -> None:
        """Close and remove the journal (any run's: it only matters until `merge`); safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._dir.fd >= 0:
            with contextlib.suppress(ArchiveError):
                self._dir.unlink(JOURNAL_NAME)
