"""`exporter index DIR`: bring an archive's index up to date now, or build it again from the checkpoint.

The index (`archive/index.py`) is a cache of the checkpoint that every export
run catches up by itself; this command does it ahead of time, for instance
after an upgrade from an exporter without an index, so that the next run (or
`exporter get`) starts fast. It writes, so it takes the archive's lock, as a
run does: while an export holds the archive it exits 4.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

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
from .display import escape
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


INDEX_EPILOG = """\
examples:
  exporter index archive/             # catch the index up now rather than at the next run
  exporter index archive/ --rebuild   # throw it away and build it again from the checkpoint
  exporter index shard-*/ --json

The index is derived from the checkpoint alone (the records are not read) and
every export run keeps it up to date by itself; it is never trusted where the
checkpoint says otherwise.

exit codes:
  0    the index is up to date
  2    DIR is not an archive
  4    the archive is locked by a running export, damaged, or unsafe
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter index`."""
    parser = commands.add_parser(
        "index",
        help="bring an archive's index up to date, or rebuild it from the checkpoint",
        description=(
            "Bring the index of each archive up to date with its checkpoint (what every export run\n"
            "does by itself at its start), or with --rebuild build it again from the checkpoint.\n"
            "Takes the archive's lock: not while an export runs on it."
        ),
        epilog=INDEX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="archive directories (the --out of export runs)"
    )
    parser.add_argument("--rebuild", action="store_true", help="remove the index and build it again")
    parser.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    parser.set_defaults(handler=_index_command)


def _index_command(args: argparse.Namespace) -> int:
    roots: list[Path] = args.dirs
    if len({root.resolve() for root in roots}) != len(roots):
        raise UsageError("an archive is given twice; name each once")
    for root in roots:
        outcome = update_index(root, rebuild=args.rebuild)
        if args.json:
            sys.stdout.write(orjson.dumps(outcome.to_json()).decode() + "\n")
        else:
            sys.stdout.write(outcome.text())
        sys.stdout.flush()
    return 0
