"""`exporter verify`'s check of the index: it says what the checkpoint says, so what the records hold.

Verify proves the records against the checkpoint; this proves the index
against the same checkpoint, which together prove the index against the
records (`exporter get` reads a record where the index says, and checks it).
For the part of the checkpoint the index files cover (what is past them a
reader replays itself, so there is nothing to check):

    every commit that holds ids   is in the index, in order, with its file, byte range,
                                  crc32, first ordinal, id count and checkpoint offset
    every id                      is found by its digest at its place (its first place)
    the ids section               holds each id at its ordinal (what `--dry-run` and runs
                                  compare manifest lines with)

Index files that cannot be used (damaged, another version, from another history,
behind the checkpoint) are notes: the next export run, or `exporter index DIR`,
replaces them, and nothing trusts them meanwhile. An index that opens cleanly
and matches the checkpoint's bytes but says something else is a problem: that
is a fault of the exporter, or a hand at work; `exporter index DIR --rebuild`
writes it again.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from exporter.archive import checkpoint
from exporter.archive.checkpoint import CheckpointState, Commit
from exporter.archive.index import IndexView, open_view, remote_form
from exporter.archive.index_format import IndexFormatError
from exporter.archive.layout import CHECKPOINT_NAME
from exporter.archive.reader import checkpoint_lines, open_directory
from exporter.archive.safe_fs import open_regular
from exporter.bounded import Overlong
from exporter.digests import id_digest
from exporter.errors import ArchiveError

from .verify_report import Findings

#: Disagreements listed per archive; the rest are counted.
_LIMIT = 20


def check_index(findings: Findings, root: Path, state: CheckpointState) -> None:
    """Check the index of the archive in `root` against its checkpoint, replayed by verify into `state`."""
    try:
        with open_directory(root) as directory:
            if remote_form(directory):
                return  # a copy of an s3:// archive: its index stays in the run's work dir
            with open_view(directory) as view:
                _check(findings, root, state, view)
    except (ArchiveError, IndexFormatError, OSError) as exc:
        findings.note(root, None, f"the index cannot be read ({exc}); the next export run rebuilds it")


def _check(findings: Findings, root: Path, state: CheckpointState, view: IndexView) -> None:
    report = view.report
    fix = f"the next export run (or `exporter index {root}`) replaces it"
    for name, why in report.ignored:
        findings.note(root / name, None, f"index run not used: {why}; {fix}")
    if report.disagreed_at is not None:
        findings.note(
            root,
            None,
            f"the index does not match the checkpoint from byte {report.disagreed_at} on (made for another "
            f"generation, or before the checkpoint was restored?): not used from there; {fix}",
        )
    covered = min(report.covered_ids, state.ids)
    if covered < state.ids:
        findings.note(
            root,
            None,
            f"the index covers {covered:,} of the {state.ids:,} ids the checkpoint lists (a run was killed, "
            "or is running): readers replay the rest; the next export run catches it up",
        )
    wrong = _disagreements(root, view, covered, report.covered_bytes)
    listed = 0
    for message in wrong:
        listed += 1
        if listed > _LIMIT:
            findings.unlisted(root)
            continue
        findings.problem(
            root,
            None,
            f"the index disagrees with the checkpoint: {message}; `exporter index {root} --rebuild` writes "
            "it again",
        )
    if not listed:
        runs = len(report.runs)
        findings.report.confirmed.append(
            f"{root}: the index ({runs} run{'' if runs == 1 else 's'}) agrees with the checkpoint for "
            f"{covered:,} of {state.ids:,} ids"
        )


def _disagreements(root: Path, view: IndexView, covered: int, covered_bytes: int) -> Iterator[str]:
    """What the index says differently from the checkpoint, for its first `covered` ids."""
    if not covered:
        return
    runs = [run for run in view.runs() if run.header.first_ordinal < covered][: len(view.report.runs)]
    files = list(view.state.files)
    places = itertools.chain.from_iterable(run.commit_places(files) for run in runs)
    stored_ids = itertools.chain.from_iterable(chunk for _, chunk in view.ids_from(0))
    ordinal = 0
    for offset, commit in _commits(root / CHECKPOINT_NAME, covered_bytes):
        if not commit.ids:
            continue
        place = next(places, None)
        expected = (commit.file, commit.start, commit.end, commit.crc32, ordinal, len(commit.ids), offset)
        if place is None:
            yield f"the commit at checkpoint byte {offset} is missing"
            return
        got = (
            place.file,
            place.start,
            place.end,
            place.crc32,
            place.first_ordinal,
            place.count,
            place.ckpt_offset,
        )
        if got != expected:
            yield f"the commit at checkpoint byte {offset} is {got}, not {expected}"
        for record_id in commit.ids:
            found = view.lookup(id_digest(record_id))
            if found is None or found > ordinal:
                yield f"id {record_id!r} (checkpoint order {ordinal}) is found at {found}"
            stored = next(stored_ids, None)
            if stored is not None and stored not in (_text_bytes(record_id), b""):
                yield f"the ids section holds {stored!r} where the checkpoint lists {record_id!r}"
            ordinal += 1
        if ordinal >= covered:
            break
    if next(places, None) is not None:
        yield "it lists commits the checkpoint does not"


def _text_bytes(record_id: str) -> bytes:
    try:
        return record_id.encode()
    except UnicodeEncodeError:
        return b""


def _commits(path: Path, limit: int) -> Iterator[tuple[int, Commit]]:
    """The checkpoint's commits within its first `limit` bytes, each with where its line starts."""
    at = 0
    offsets: list[int] = []

    def lines() -> Iterator[bytes | Overlong]:
        nonlocal at
        for raw in checkpoint_lines(handle):  # none held whole over the cap
            size = raw.size + 1 if isinstance(raw, Overlong) else len(raw)
            if at + size > limit:
                return
            offsets.append(at)
            at += size
            yield raw

    with open_regular(path) as handle:
        for commit in checkpoint.commits(lines()):
            yield offsets[-1], commit
