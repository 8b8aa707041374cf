"""`exporter index DIR`: bring an archive's index up to date now, or build it again from the checkpoint.

The index (`archive/index.py`) is a cache of the checkpoint that every export
run catches up by itself; this command does it ahead of time, for instance
after an upgrade from an exporter without an index, so that the next run (or
`exporter get`) starts fast. It writes, so it takes the archive's lock, as a
run does: while an export holds the archive it exits 4.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import index
from .archive.layout import (
    SUPERSEDE_MARKER,
    ArchiveKind,
    archive_kind,
    not_an_archive,
)
from .archive.lock import take_lock
from .archive.reader import refuse_unsafe, unsafe_entries
from .archive.safe_fs import SafeDir
from .display import escape, json_text
from .errors import ArchiveError, UsageError


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexOutcome:
    """What `exporter index` did."""

    archive: Path
    rebuilt: bool
    report: index.IndexReport
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "archive": str(self.archive),
            "rebuilt": self.rebuilt,
            "runs": report.runs,
            "ids": report.ids,
            "checkpoint_bytes": report.checkpoint_bytes,
            "index_bytes": report.index_bytes,
            "bytes_per_id": round(report.index_bytes / report.ids, 1) if report.ids else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def text(self) -> str:
        report = self.report
        what = "rebuilt" if self.rebuilt else "up to date"
        per_id = f", {report.index_bytes / report.ids:.1f} bytes an id" if report.ids else ""
        line = (
            f"{self.archive}: index {what} in {self.elapsed_s:.2f} s: {report.ids:,} ids, "
            f"{len(report.runs)} run file(s), {report.index_bytes:,} bytes{per_id}"
        )
        return escape(line) + "\n"  # the archive's path is anyone's text


def update_index(root: Path, *, rebuild: bool = False) -> IndexOutcome:
    """Catch the index of the archive in `root` up (or rebuild it), holding the archive's lock."""
    if archive_kind(root) is not ArchiveKind.ARCHIVE:
        raise not_an_archive(root)
    started = time.monotonic()
    directory = SafeDir.open_archive(root)
    try:
        lock_fd = take_lock(directory)
        try:
            refuse_unsafe(root, unsafe_entries(directory))
            if directory.lstat(SUPERSEDE_MARKER) is not None:
                raise ArchiveError(
                    f"{root} is in the middle of an interrupted --refetch (it has {SUPERSEDE_MARKER}); "
                    "run the export again to finish it, then index"
                )
            if rebuild:
                report = index.rebuild(directory)
            else:
                keeper = index.IndexKeeper.open(directory)
                report = keeper.view.report
                keeper.close()
        finally:
            os.close(lock_fd)
    finally:
        directory.close()
    return IndexOutcome(archive=root, rebuilt=rebuild, report=report, elapsed_s=time.monotonic() - started)


def index_command(roots: Sequence[Path], *, rebuild: bool, as_json: bool) -> int:
    """`exporter index`: bring each archive's index up to date (or rebuild it), one line each."""
    if len({root.resolve() for root in roots}) != len(roots):
        raise UsageError("an archive is given twice; name each once")
    for root in roots:
        outcome = update_index(root, rebuild=rebuild)
        if as_json:
            sys.stdout.write(json_text(outcome.to_json()) + "\n")
        else:
            sys.stdout.write(outcome.text())
        sys.stdout.flush()
    return 0
