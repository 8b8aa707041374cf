"""`exporter verify --manifest`: the archives, together, hold exactly the manifest's ids.

An export sharded over several machines splits one manifest over several
archives, so no one archive can tell whether the export is complete. Given all
of them, once `verify` has read their records:

    manifest -> archives   every valid id is archived somewhere, or some failed.ndjson
                           lists it as `not_found`; if not, a problem at its manifest
                           line, naming any other failure recorded for it
    archives -> manifest   every archived id is in the manifest; if not, a problem at
                           its records line
    the rest               the manifest's bad lines and invalid ids were never
                           exported: notes, the first `_MANIFEST_NOTES` of each kind;
                           a failed.ndjson line longer than the writer writes is a
                           problem (never read whole), one that does not parse a note

That no id is archived twice is verify's own check, across all archives.
Memory stays bounded: the manifest's ids are kept as digests, and the archived
ids are streamed from each checkpoint again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from exporter.archive.layout import FAILED_NAME, checkpoint_path, failed_path
from exporter.archive.reader import CheckpointState, Unreadable, read_failed, replay_commits
from exporter.config import ManifestSource
from exporter.digests import DigestSet, id_digest
from exporter.errors import ArchiveError, Reason
from exporter.manifest import id_problem, open_manifest

from .verify_report import Findings

#: Notes about bad or invalid manifest lines listed before the rest are only counted.
_MANIFEST_NOTES = 20


def check_manifest(
    findings: Findings,
    source: ManifestSource,
    archives: Sequence[tuple[Path, CheckpointState, frozenset[str]]],
    archived: DigestSet,
) -> None:
    """Every valid id of `source` archived or not_found; nothing archived outside it.

    `archives` are the (root, replayed checkpoint, names not to be read) of every
    archive checked, and `archived` the digests of the ids their records lines hold.
    """
    not_found, other_reasons = _failures(
        findings, [root for root, _, unsafe in archives if FAILED_NAME not in unsafe]
    )
    listed = DigestSet()
    display = source.display
    skipped = {"bad": 0, "invalid": 0}
    with open_manifest(source) as entries:
        for entry in entries:
            if entry.problem is not None:
                text = f"{entry.problem}: {entry.value!r}"
                _manifest_note(findings, skipped, "bad", display, entry.line, text)
                continue
            why = id_problem(entry.value)
            if why is not None:
                _manifest_note(
                    findings,
                    skipped,
                    "invalid",
                    display,
                    entry.line,
                    f"invalid id {_shown(entry.value)} ({why})",
                )
                continue
            digest = id_digest(entry.value)
            if not listed.add(digest) or digest in archived or digest in not_found:
                continue
            reason = next((r for r, ids in other_reasons.items() if digest in ids), None)
            told = f"{FAILED_NAME} lists it as {reason}" if reason else f"nor listed in any {FAILED_NAME}"
            findings.detail(display, entry.line, f"id {entry.value!r} is in no archive, {told}")
    for kind, count in skipped.items():
        if count > _MANIFEST_NOTES:
            what = "bad lines" if kind == "bad" else "invalid ids"
            findings.note(display, None, f"{count - _MANIFEST_NOTES} more {what} are not listed")
    for root, state, _ in archives:
        _check_listed(findings, root, state, listed)


def _check_listed(findings: Findings, root: Path, state: CheckpointState, listed: DigestSet) -> None:
    """Every id the archive in `root` holds is one of `listed`, the manifest's."""
    for _, commit in replay_commits(checkpoint_path(root), state.valid_bytes):
        for offset, record_id in enumerate(commit.ids):
            if id_digest(record_id) not in listed:
                findings.detail(
                    root / commit.file,
                    commit.first_line + offset,
                    f"id {record_id!r} is archived but not in the manifest",
                )


def _manifest_note(
    findings: Findings, skipped: dict[str, int], kind: str, display: str, line: int, text: str
) -> None:
    skipped[kind] += 1
    if skipped[kind] <= _MANIFEST_NOTES:
        findings.note(display, line, f"{text}: never exported")


def _failures(findings: Findings, roots: Sequence[Path]) -> tuple[DigestSet, dict[str, DigestSet]]:
    """Ids the archives' failed.ndjson list: found missing, and by every other reason."""
    not_found = DigestSet()
    others: dict[str, DigestSet] = {}
    for root in roots:
        path = failed_path(root)
        if not os.path.lexists(path):
            continue
        try:
            entries = read_failed(path)
        except ArchiveError as exc:  # verify reports links and FIFOs itself; this is a race or an I/O error
            findings.problem(path, None, f"cannot be read: {exc}")
            continue
        for entry in entries:
            if isinstance(entry, Unreadable):
                # Longer than any line the writer writes: damage. A short line that does not parse stays
                # a note: the manifest's check reports any id it named as not accounted for.
                text = f"{entry.why}: skipped" if entry.overlong else "unreadable line"
                add = findings.detail if entry.overlong else findings.note
                add(path, entry.line, f"{text}: an id it names counts as not accounted for")
            elif entry.reason == Reason.NOT_FOUND:
                not_found.add(id_digest(entry.id))
            else:
                others.setdefault(entry.reason, DigestSet()).add(id_digest(entry.id))
    return not_found, others


def _shown(value: str) -> str:
    """An id as a report quotes it: whole, or its start when a manifest line held a very long one."""
    return repr(value) if len(value) <= 80 else f"{value[:77]!r}... ({len(value)} characters)"
