"""`exporter verify`: prove, offline, what one or more archives hold.

For each archive the checkpoint is the contract and everything else is checked
against it, reading only what was committed (an uncommitted tail left by a
killed run is a note, not damage: the next export cuts it):

    checkpoint.ndjson   replayed; damage before the last line is a problem (a line
                        longer than the writer writes among it), a torn last line
                        a note (a run killed mid-commit)
    records files       listed ones exist and hold at least their committed bytes;
                        closed ones exactly that many, with the sha256 of their
                        close entry; each commit's bytes have its crc32; every line
                        is a JSON object with an `id`, and the ids in file order are
                        exactly the ones the commits list, once each; files on disk
                        that the checkpoint does not list are problems
    index-*.idx         says what the checkpoint says (`verify_index.py`)
    summary.json        agrees with the checkpoint (files, lines, hashes, records);
                        when a killed run left it older than the checkpoint, only the
                        files whose sizes agree are compared; one longer than a
                        summary of its files can be is a problem, and is not read
    every entry         where the archive keeps a file (or superseded/), a symbolic
                        link, FIFO, device or hard-linked file written in place is
                        a problem, and is never opened
    all archives        no id is archived twice, anywhere (both places are named)
    --manifest M        every valid id of M is archived, or listed as `not_found` in
                        some failed.ndjson, and no archived id is missing from M

How, for each DIR in turn, then across all of them:

    checkpoint.ndjson --replay--> state (files, runs, the bytes that replayed)
                      --replay again, commit by commit--> records file: that commit's
                        bytes (crc32, decoding) -> its lines (JSON, id) -> the ids the
                        commit lists, in order: one `for` loop over `read_records`'
                        events, each handed to `_RecordsCheck`
    state + sha256s   --> summary.json
    all DIRs          --> duplicates placed: the records read again, only if there are any,
                          and only until every duplicated id's first place is found
                      --> the manifest, both ways (`completeness.py`)

This module holds the checks and the command; reading the archive is
`archive/reader.py`'s, the findings and their printing `verify_report.py`'s.
`verify_archives` is the checking core: it returns a `Report` whose `findings`
are `Problem(path, line, message, severity)` values, and raises `UsageError`
only when it cannot start (a DIR that is not an archive, an unreadable
manifest). `print_report` and the `verify` command are the thin shell around it.

Memory stays bounded for archives of millions of records: ids seen are kept as
128-bit digests (`digests.DigestSet`, 14 bytes each), the checkpoint and the
records are streamed (one commit's ids and bytes at a time, which the exporter
itself once held in memory), and full ids are kept only for the problems
reported, at most `DETAIL_LIMIT` per file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from exporter.archive.layout import (
    CHECKPOINT_NAME,
    SUMMARY_NAME,
    SUPERSEDE_MARKER,
    SUPERSEDED_DIR,
    ArchiveKind,
    archive_kind,
    checkpoint_path,
    file_number,
    not_an_archive,
    summary_path,
    unlisted_records_files,
)
from exporter.archive.reader import (
    Alignment,
    CheckpointState,
    Chunk,
    FileEnd,
    FileStart,
    Line,
    Missing,
    line_at,
    line_id,
    probe_lock,
    read_records,
    read_summary,
    replay_checkpoint,
    unsafe_entries_at,
)
from exporter.config import ManifestSource
from exporter.digests import DigestSet, id_digest
from exporter.errors import ArchiveCorrupt, ArchiveError, UsageError

from .completeness import check_manifest
from .verify_index import check_index
from .verify_report import DETAIL_LIMIT, Findings, Report, print_report

#: Missing records and stray lines kept per archive to pair them up; the rest are counted.
_KEEP_MISPLACED = 10 * DETAIL_LIMIT

_Place = tuple[str, int]


def verify_archives(roots: Sequence[Path], *, manifest: ManifestSource | None = None) -> Report:
    """Check every archive in `roots`, together, and against `manifest` when given."""
    seen_roots: set[Path] = set()
    for root in roots:
        _require_archive(root)
        resolved = root.resolve()
        if resolved in seen_roots:
            raise UsageError(f"{root} is given twice; name each archive once")
        seen_roots.add(resolved)
    checker = _Checker(manifest)
    for root in roots:
        checker.check_archive(root)
    checker.place_duplicates()
    if manifest is not None:
        check_manifest(checker, manifest, checker.archives, checker.seen)
    return checker.report


# -- the checks ----------------------------------------------------------------


class _Archive(NamedTuple):
    """An archive whose checkpoint replayed, kept for the passes after the first."""

    root: Path
    state: CheckpointState
    #: Names of entries that are links, FIFOs, ...: reported once, never read.
    unsafe: frozenset[str]


class _Checker(Findings):
    """The state shared by every archive of one verification: findings, seen ids, duplicates."""

    def __init__(self, manifest: ManifestSource | None) -> None:
        super().__init__(Report(manifest=None if manifest is None else manifest.display))
        self.seen = DigestSet()
        self.archives: list[_Archive] = []
        #: Ids found again: every later place. The first is found by `place_duplicates`.
        self.duplicates: dict[str, list[_Place]] = {}

    # -- one archive

    def check_archive(self, root: Path) -> None:
        self.report.archives += 1
        lock = probe_lock(root)
        if lock.held:
            self.note(
                root,
                None,
                f"a run is in progress (pid {lock.pid or 'unknown'}): what it commits while verify "
                "reads is not checked, and its open file has an uncommitted tail",
            )
        unsafe = self._check_entries(root)
        self._note_generations(root, unsafe)
        state = None if CHECKPOINT_NAME in unsafe else self._replay(root)
        if state is None:
            return
        archive = _Archive(root, state, unsafe)
        self.archives.append(archive)
        self._check_unlisted(archive)
        records = _RecordsCheck(self)
        for event in read_records(root, state):
            if isinstance(event, Line):
                records.line(event)
            elif isinstance(event, Chunk):
                records.chunk(event)
            elif isinstance(event, FileStart):
                records.start(event)
            elif isinstance(event, FileEnd):
                records.finish(event)
            # FileRefused: reported with every other such entry by `_check_entries`
        self._report_misplaced(records.misplaced)
        self._check_summary(archive, records.hashes)
        check_index(self, root, state)

    def _check_entries(self, root: Path) -> frozenset[str]:
        """Report every link, FIFO, ... where the archive keeps a file; their names, not to be read."""
        unsafe = unsafe_entries_at(root)
        for name, why in unsafe:
            self.problem(
                root / name,
                None,
                f"{why}: not read (the exporter refuses to run until it is removed); a link in an "
                "archive could make a run write anywhere",
            )
        return frozenset(name for name, _ in unsafe)

    def _note_generations(self, root: Path, unsafe: frozenset[str]) -> None:
        if os.path.lexists(root / SUPERSEDE_MARKER):
            self.note(
                root,
                None,
                "a --refetch run was stopped while it set the old generation aside; "
                "the next export run finishes moving it (files may be missing until then)",
            )
        superseded = root / SUPERSEDED_DIR
        if SUPERSEDED_DIR not in unsafe and superseded.is_dir():
            for generation in sorted(p for p in superseded.iterdir() if p.is_dir() and not p.is_symlink()):
                self.note(
                    generation,
                    None,
                    f"an earlier generation set aside by --refetch, not verified here "
                    f"(run `exporter verify {generation}`)",
                )

    def _replay(self, root: Path) -> CheckpointState | None:
        path = checkpoint_path(root)
        if not path.exists():
            listed = sorted(n for n in os.listdir(root) if file_number(n) is not None)
            self.problem(
                root,
                None,
                f"holds {listed[0]} but no {CHECKPOINT_NAME}: nothing says what was "
                "committed, so none of it can be verified; restore the checkpoint from a backup",
            )
            return None
        try:
            state = replay_checkpoint(path)
        except ArchiveCorrupt as exc:
            if exc.line is None:  # no one entry: a segment of checkpoint.d/ is missing
                self.problem(path, None, str(exc))
                return None
            self.problem(
                path,
                exc.line,
                f"damaged entry ({exc.damage or exc}) before the last line: the records cannot be checked "
                "against it; restore the checkpoint from a backup",
            )
            return None
        except OSError as exc:
            self.problem(path, None, f"cannot be read: {exc.strerror or exc}")
            return None
        except ArchiveError as exc:  # replaced by a link or a FIFO since it was looked at
            self.problem(path, None, str(exc))
            return None
        if state.torn_tail:
            self.note(
                path,
                line_at(path, state.valid_bytes),
                "the last line is torn: the last run was killed mid-commit; the next export run discards it",
            )
        return state

    def _check_unlisted(self, archive: _Archive) -> None:
        leftover, foreign = unlisted_records_files(os.listdir(archive.root), archive.state.files)
        for name in leftover:
            self.note(
                archive.root / name,
                None,
                "not in the checkpoint: created by a run killed before its first commit "
                "to it; the next export run removes it",
            )
        for name in foreign:
            self.problem(
                archive.root / name,
                None,
                "records file not listed in the checkpoint: it is not part of this archive "
                "(the next export run refuses to start); move it away",
            )

    def _report_misplaced(self, misplaced: _Misplaced) -> None:
        """Missing records and stray lines, paired up when one is the other out of place."""
        for record_id, (path, line, ordinal) in misplaced.missing.items():
            if record_id not in misplaced.extras:
                self.detail(
                    path,
                    line,
                    f"record {record_id!r} is missing: the checkpoint lists it as this line "
                    f"(commit {ordinal})",
                )
        for record_id, (path, line) in misplaced.extras.items():
            expected = misplaced.missing.get(record_id)
            if expected is None:
                message = f"id {record_id!r} is not in the checkpoint"
            else:
                where = f"line {expected[1]}" + ("" if expected[0] == path else f" of {expected[0].name}")
                message = f"id {record_id!r} is out of place: the checkpoint lists it as {where}"
            self.detail(path, line, message)
        for path, count in misplaced.overflow.items():
            self.unlisted(path, count)

    def found_again(self, record_id: str, place: _Place) -> None:
        """Note a later place of an id seen before (the first is placed by `place_duplicates`)."""
        places = self.duplicates.get(record_id)
        if places is None:
            if len(self.duplicates) >= DETAIL_LIMIT:
                self.unlisted(place[0])
                return
            places = self.duplicates[record_id] = []
        elif len(places) >= DETAIL_LIMIT:
            self.unlisted(place[0])
            return
        places.append(place)

    def place_duplicates(self) -> None:
        """Report each duplicated id at every later place, naming the first (a second pass)."""
        if not self.duplicates:
            return
        first = self._first_places(set(self.duplicates))
        for record_id, places in self.duplicates.items():
            origin = first.get(record_id)
            for path, line in places:
                if origin is None:
                    where = "elsewhere"
                elif origin[0] == path:
                    where = f"line {origin[1]}"
                else:
                    where = f"{origin[0]}:{origin[1]}"
                self.problem(path, line, f"duplicate of {where} (id {record_id!r})")

    def _first_places(self, wanted: set[str]) -> dict[str, _Place]:
        """Where each of `wanted` is first found, reading the records again until all are."""
        places: dict[str, _Place] = {}
        for archive in self.archives:
            path = archive.root
            for event in read_records(archive.root, archive.state):
                if isinstance(event, FileStart):
                    path = event.path
                elif isinstance(event, Line):
                    record_id = line_id(event.raw)[0]
                    if record_id in wanted and record_id not in places:
                        places[record_id] = (str(path), event.number)
                        if len(places) == len(wanted):
                            return places
        return places

    def _check_summary(self, archive: _Archive, hashes: dict[str, str]) -> None:
        path = summary_path(archive.root)
        state = archive.state
        if SUMMARY_NAME in archive.unsafe:
            return
        try:
            summary = read_summary(path, files=len(state.files))
        except ValueError as exc:
            self.problem(
                path, None, f"is not a summary this exporter writes ({exc}); the next run rewrites it"
            )
            return
        except (OSError, ArchiveError) as exc:
            self.problem(path, None, f"cannot be read: {exc}")
            return
        if summary is None:
            if state.runs:
                self.note(path, None, "missing: no run has finished yet (the first one was killed?)")
            return
        files = {f.name: f for f in summary.files}
        last_run = state.runs[-1].run if state.runs else None
        current = summary.run == last_run
        if not current:
            self.note(
                path,
                None,
                f"is from run {summary.run} but the checkpoint's last run is {last_run}, which "
                "did not write one (killed?): only the files whose sizes agree are compared",
            )
        elif summary.records != state.ids:
            self.problem(
                path, None, f"says {summary.records} records but the checkpoint lists {state.ids} ids"
            )
        for name, file_state in state.files.items():
            entry = files.pop(name, None)
            if entry is None:
                if current:
                    self.problem(path, None, f"does not list {name}, which the checkpoint does")
                continue
            if entry.bytes != file_state.size:
                if current or entry.bytes > file_state.size:
                    self.problem(
                        path,
                        None,
                        f"says {name} is {entry.bytes} bytes but {file_state.size} were committed",
                    )
                continue
            if entry.lines != file_state.lines:
                self.problem(
                    path,
                    None,
                    f"says {name} has {entry.lines} lines but the checkpoint lists {file_state.lines}",
                )
            digest = hashes.get(name)
            if digest is not None and entry.sha256 != digest:
                self.problem(
                    path, None, f"says {name} has sha256 {entry.sha256} but its bytes hash to {digest}"
                )
        for name in files:
            self.problem(path, None, f"lists {name}, which the checkpoint does not")


class _RecordsCheck:
    """Checks one archive's records files against their commits, one `read_records` event at a time.

    Findings go to the checker; missing records and stray lines are kept in
    `misplaced` until the whole archive is read, since a record out of place
    shows up in both.
    """

    __slots__ = ("_align", "_checker", "_path", "hashes", "misplaced")

    def __init__(self, checker: _Checker) -> None:
        self._checker = checker
        self.misplaced = _Misplaced()
        #: The sha256 of the committed bytes of each file read whole.
        self.hashes: dict[str, str] = {}
        #: The current file and its alignment; `start` makes a new one for each file.
        self._path = Path()
        self._align = Alignment()

    def start(self, event: FileStart) -> None:
        checker = self._checker
        path, state, size = event.path, event.state, event.size
        if size is None:
            checker.problem(
                path,
                None,
                f"missing: the checkpoint lists {state.lines} records in it (lines 1..{state.lines}); "
                "restore it from a backup",
            )
            return
        checker.report.files += 1
        if size > state.size:
            extra = size - state.size
            if state.closed:
                checker.problem(
                    path,
                    None,
                    f"is {size} bytes but was closed at {state.size}: {extra} bytes were added "
                    "after it was sealed; restore it from a backup",
                )
            else:
                checker.note(
                    path,
                    None,
                    f"{extra} bytes after the last commit ({state.size}): an uncommitted tail left "
                    "by a killed run; the next export run cuts it",
                )
        self._path = path
        self._align = Alignment()

    def chunk(self, chunk: Chunk) -> None:
        if chunk.error is None:
            self._missing(self._align.expect(chunk.ordinal, chunk.commit))
        if chunk.crc_ok and chunk.error is None:
            return
        found = [] if chunk.crc_ok else ["crc mismatch"]
        if chunk.error is not None:
            found.append(chunk.error)
        self._checker.problem(self._path, None, f"{chunk.describe()}: {'; '.join(found)}")

    def line(self, line: Line) -> None:
        checker, path = self._checker, self._path
        if not line.raw.endswith(b"\n"):
            checker.detail(path, line.number, "is cut off: no newline at the end of the committed bytes")
        record_id, why = line_id(line.raw)
        if record_id is None:
            checker.detail(path, line.number, why)
            return
        checker.report.records += 1
        skipped = self._align.match(record_id)
        if skipped:
            self._missing(skipped)
        if not checker.seen.add(id_digest(record_id)):
            checker.found_again(record_id, (str(path), line.number))
        elif skipped is None:
            self.misplaced.add_extra(path, record_id, line.number)

    def finish(self, event: FileEnd) -> None:
        checker, path, state, reader = self._checker, event.path, event.state, event.reader
        self._missing(self._align.finish())
        if reader.cut_at is not None:
            ordinal, cut = reader.cut_at
            checker.problem(
                path,
                None,
                f"truncated: {reader.size} bytes on disk but {state.size} were committed: lines "
                f"{cut.first_line}..{state.lines} (commit {ordinal} on) are lost; "
                "restore it from a backup",
            )
            return
        if reader.read_all and reader.lines != state.lines:
            checker.problem(path, None, f"holds {reader.lines} lines but the checkpoint lists {state.lines}")
        digest = reader.sha256()
        if state.closed and state.sha256 is not None and digest != state.sha256:
            checker.problem(
                path,
                None,
                f"sha256 is {digest} but its close entry says {state.sha256}: the file changed after "
                "it was sealed; restore it from a backup",
            )
        self.hashes[state.name] = digest

    def _missing(self, missing: tuple[Missing, ...]) -> None:
        for record_id, line, ordinal in missing:
            self.misplaced.add_missing(self._path, record_id, line, ordinal)


class _Misplaced:
    """One archive's missing records and stray lines, kept (up to a limit) until they can be paired.

    Every id the checkpoint lists is either matched by a line or reported
    missing by the alignment (but for the ids of commits that could not be
    read, reported as such), so a stray line whose id is not among the missing
    is not in the checkpoint at all; one whose id is, is out of place. A stray
    id is never seen twice: the second time it is a duplicate.
    """

    __slots__ = ("extras", "missing", "overflow")

    def __init__(self) -> None:
        #: id -> (file, line the checkpoint gives it, the ordinal of its commit)
        self.missing: dict[str, tuple[Path, int, int]] = {}
        #: id -> where (file, line) it was found although the checkpoint does not put it there
        self.extras: dict[str, tuple[Path, int]] = {}
        #: Findings not kept, by file.
        self.overflow: dict[Path, int] = {}

    def add_missing(self, path: Path, record_id: str, line: int, ordinal: int) -> None:
        if len(self.missing) < _KEEP_MISPLACED:
            self.missing[record_id] = (path, line, ordinal)
        else:
            self.overflow[path] = self.overflow.get(path, 0) + 1

    def add_extra(self, path: Path, record_id: str, line: int) -> None:
        if len(self.extras) < _KEEP_MISPLACED:
            self.extras[record_id] = (path, line)
        else:
            self.overflow[path] = self.overflow.get(path, 0) + 1


def _require_archive(root: Path) -> None:
    kind = archive_kind(root)
    if kind is ArchiveKind.NOT_A_DIRECTORY:
        raise UsageError(f"{root} is not a directory; give the --out directory of an export")
    if kind is ArchiveKind.NOT_AN_ARCHIVE:
        raise not_an_archive(root)
    # ARCHIVE, and RECORDS_ONLY: records without a checkpoint, damage reported as a problem


# -- the command ---------------------------------------------------------------


def verify_command(dirs: Sequence[str], *, manifest: ManifestSource | None, deep: bool, quiet: bool) -> int:
    """`exporter verify`: check the DIRs (s3:// ones too), print the report, return its exit code."""
    remote = [d for d in dirs if d.startswith("s3://")]
    if remote:
        from exporter.remote.verify import verify_remote  # the S3 client only for s3:// archives

        local = [Path(d) for d in dirs if not d.startswith("s3://")]
        report = verify_remote(remote, local, manifest=manifest, deep=deep)
    else:
        report = verify_archives([Path(d) for d in dirs], manifest=manifest)
    print_report(report, sys.stdout, quiet=quiet)
    return report.exit_code
