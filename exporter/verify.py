"""`exporter verify`: prove, offline, what one or more archives hold.

For each archive the checkpoint is the contract and everything else is checked
against it, reading only what was committed (an uncommitted tail left by a
killed run is a note, not damage: the next export cuts it):

    checkpoint.ndjson   replayed; damage before the last line is a problem, a torn
                        last line a note (a run killed mid-commit)
    records files       listed ones exist and hold at least their committed bytes;
                        closed ones exactly that many, with the sha256 of their
                        close entry; each commit's bytes have its crc32; every line
                        is a JSON object with an `id`, and the ids in file order are
                        exactly the ones the commits list, once each; files on disk
                        that the checkpoint does not list are problems
    summary.json        agrees with the checkpoint (files, lines, hashes, records);
                        when a killed run left it older than the checkpoint, only the
                        files whose sizes agree are compared
    all archives        no id is archived twice, anywhere (both places are named)
    --manifest M        every valid id of M is archived, or listed as `not_found` in
                        some failed.ndjson, and no archived id is missing from M

`verify_archives` is the checking core: it returns a `Report` whose `findings`
are `Problem(path, line, message, severity)` values, and raises `UsageError`
only when it cannot start (a DIR that is not an archive, an unreadable
manifest). `print_report` and the `verify` command are the thin shell around it.

Memory stays bounded for archives of millions of records: ids seen are kept as
128-bit digests (`digests.DigestSet`, 14 bytes each), the checkpoint and the
records are streamed (one commit's bytes at a time, which the exporter itself
once held in memory), and full ids are kept only for the problems reported,
at most `DETAIL_LIMIT` per file. Placing the first copy of a duplicated id
takes a second pass over the records, done only when there are duplicates.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
import re
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import orjson
import zstandard

from . import checkpoint
from .archive import FAILED_NAME, SUMMARY_NAME, SUPERSEDE_MARKER, SUPERSEDED_DIR
from .checkpoint import CheckpointState, FileState
from .codecs import Codec, codec_of_file, decompressed_lines, file_number
from .config import ManifestSource
from .digests import DigestSet, id_digest
from .errors import ArchiveCorrupt, ExitCode, Reason, UsageError
from .manifest import id_problem, open_manifest
from .status import probe_lock

Severity = Literal["problem", "note"]

#: Per-line findings listed for one file (or one manifest) before the rest are only counted.
DETAIL_LIMIT = 100
#: Ids a file's lines may lag behind its commits before the oldest are given up as missing.
_ALIGN_WINDOW = 100_000
#: Missing records and stray lines kept per archive to pair them up; the rest are counted.
_KEEP_MISPLACED = 10 * DETAIL_LIMIT
#: Notes about bad or invalid manifest lines listed before the rest are only counted.
_MANIFEST_NOTES = 20
_DECODE_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)

_Place = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (a file, and a line when it is about one line), what, and how bad.

    `severity` "problem" fails the verification; "note" reports something
    expected (an uncommitted tail after a crash, a summary a killed run did not
    rewrite) that the next export run deals with by itself.
    """

    path: str
    line: int | None
    message: str
    severity: Severity = "problem"

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{'note: ' if self.severity == 'note' else ''}{where}: {self.message}"


@dataclass(slots=True)
class Report:
    """What `verify_archives` found, and how much it read."""

    findings: list[Problem] = field(default_factory=list)
    #: Problems not listed in `findings` (over DETAIL_LIMIT for one file), by path.
    unlisted: dict[str, int] = field(default_factory=dict)
    archives: int = 0
    files: int = 0
    #: Committed lines read whose record has an id.
    records: int = 0
    manifest: str | None = None

    @property
    def problems(self) -> list[Problem]:
        return [p for p in self.findings if p.severity == "problem"]

    @property
    def notes(self) -> list[Problem]:
        return [p for p in self.findings if p.severity == "note"]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unlisted

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.ok else ExitCode.INCOMPLETE)

    def summary_line(self) -> str:
        against = f" against {self.manifest}" if self.manifest is not None else ""
        count = len(self.problems) + sum(self.unlisted.values())
        return (
            f"verified {_plural(self.archives, 'archive')}{against}: {self.records} records in "
            f"{_plural(self.files, 'file')}, {_plural(count, 'problem')}"
        )


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
        checker.check_manifest(manifest)
    return checker.report


def print_report(report: Report, out: TextIO, *, quiet: bool = False) -> None:
    """Problems (and unless `quiet` notes, then the summary line), one a line."""
    for finding in report.findings:
        if not quiet or finding.severity == "problem":
            out.write(f"{finding}\n")
    for path, count in report.unlisted.items():
        out.write(f"{path}: {_plural(count, 'more problem')} like the ones above, not listed\n")
    if not quiet:
        out.write(report.summary_line() + "\n")


# -- reading the checkpoint and the records ------------------------------------


@dataclass(frozen=True, slots=True)
class _Commit:
    """One commit entry, with where its bytes and lines start (from the entry before it)."""

    ordinal: int  # the Nth commit entry of checkpoint.ndjson
    file: str
    start: int
    end: int
    first_line: int
    crc32: int | None
    ids: list[str]

    @property
    def last_line(self) -> int:
        return self.first_line + len(self.ids) - 1

    def describe(self) -> str:
        lines = f"lines {self.first_line}..{self.last_line}"
        return f"bytes {self.start}..{self.end} (commit {self.ordinal}, {lines})"


def _commits(path: Path, valid_bytes: int) -> Iterator[_Commit]:
    """The commit entries of a checkpoint that `checkpoint.replay` accepted, in order.

    Only the first `valid_bytes` are read: replay has checked that much (and
    a run still appending cannot add to it).
    """
    ends: dict[str, tuple[int, int]] = {}
    ordinal = 0
    read = 0
    with open(path, "rb") as handle:
        for raw in handle:
            read += len(raw)
            if read > valid_bytes:
                return
            entry = orjson.loads(raw)
            if entry.get("t") != "commit":
                continue
            ordinal += 1
            name = entry["file"]
            start, lines = ends.get(name, (0, 0))
            crc = entry.get("crc32")
            yield _Commit(
                ordinal=ordinal,
                file=name,
                start=start,
                end=entry["end"],
                first_line=lines + 1,
                crc32=crc if isinstance(crc, int) and not isinstance(crc, bool) else None,
                ids=entry["ids"],
            )
            ends[name] = (entry["end"], entry["lines"])


@dataclass(frozen=True, slots=True)
class _Chunk:
    """The bytes one commit appended have been read: whether their crc32 holds, whether they decode."""

    commit: _Commit
    crc_ok: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    raw: bytes


class _FileReader:
    """The committed bytes of one records file, commit by commit, then line by line.

    Yields a `_Chunk` for each commit, followed by the lines it completed. Each
    commit is read and decoded on its own (for compressed files it is one gzip
    member or zstd frame), so damage in one commit does not hide the rest of the
    file. A line that damage split across commits is joined up again.
    """

    __slots__ = ("_codec", "_commits", "_limit", "_path", "_sha", "cut_at", "read_all", "without_crc")

    def __init__(self, path: Path, codec: Codec, commits: Iterable[_Commit], limit: int) -> None:
        self._path = path
        self._codec = codec
        self._commits = commits
        self._limit = limit
        self._sha = hashlib.sha256()
        #: The first commit whose bytes are not all in the file (truncated), if any.
        self.cut_at: _Commit | None = None
        #: Every commit decoded; with `cut_at` None, the line count is the file's.
        self.read_all = True
        #: Commits whose entry has no crc32 (written before it was added).
        self.without_crc = 0

    def sha256(self) -> str:
        """The sha256 of the committed bytes read (all of them when `cut_at` is None)."""
        return self._sha.hexdigest()

    def __iter__(self) -> Iterator[_Chunk | _Line]:
        carry = b""
        number = 0
        with open(self._path, "rb") as handle:
            for commit in self._commits:
                data = handle.read(commit.end - commit.start) if commit.end <= self._limit else b""
                if len(data) != commit.end - commit.start:
                    self.cut_at = commit
                    break
                self._sha.update(data)
                self.without_crc += commit.crc32 is None
                crc_ok = commit.crc32 is None or zlib.crc32(data) == commit.crc32
                try:
                    lines = list(decompressed_lines(io.BytesIO(data), self._codec))
                except _DECODE_ERRORS as exc:
                    self.read_all = False
                    yield _Chunk(commit, crc_ok, f"cannot be decompressed ({exc or type(exc).__name__})")
                    carry, number = b"", commit.last_line
                    continue
                yield _Chunk(commit, crc_ok, None)
                if carry:
                    lines[:1] = [carry + lines[0]] if lines else [carry]
                    carry = b""
                if lines and not lines[-1].endswith(b"\n"):
                    carry = lines.pop()
                for line in lines:
                    number += 1
                    yield _Line(number, line)
        if carry:
            yield _Line(number + 1, carry)


def _record_id(raw: bytes) -> tuple[str | None, str]:
    """The record's id, or None and what is wrong with the line.

    orjson first; the standard library when orjson refuses valid JSON (`1e400`,
    integers wider than 64 bits) or turns a very wide integer id into a float.
    """
    try:
        record = orjson.loads(raw)
        if isinstance(record, dict) and isinstance(record.get("id"), float):
            raise ValueError("a wide integer id")
    except ValueError:
        try:
            record = json.loads(raw, parse_int=_json_int)
        except (ValueError, RecursionError) as exc:
            return None, f"is not JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"is a JSON {type(record).__name__}, not an object"
    value = record.get("id")
    if isinstance(value, str):
        return value, ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), ""
    if "id" not in record:
        return None, 'has no "id"'
    return None, f'has an "id" that is a {type(value).__name__}, not a string'


class _Alignment:
    """Matches a file's line ids against the ids its commits list, in order, resyncing after damage.

    An expected id that is skipped over (a later expected id turned up first),
    or that never turns up, goes to `on_missing`; a line id that is not pending
    here does not match, and the caller tells a duplicate from a stranger.
    """

    __slots__ = ("_expected", "_on_missing", "_pending")

    def __init__(self, on_missing: Callable[[str, int, _Commit], None]) -> None:
        self._expected: deque[tuple[str, int, _Commit]] = deque()
        self._pending: dict[str, int] = {}
        self._on_missing = on_missing

    def expect(self, commit: _Commit) -> None:
        for offset, record_id in enumerate(commit.ids):
            self._expected.append((record_id, commit.first_line + offset, commit))
            self._pending[record_id] = self._pending.get(record_id, 0) + 1
        while len(self._expected) > _ALIGN_WINDOW:
            self._on_missing(*self._pop())

    def match(self, record_id: str) -> bool:
        if record_id not in self._pending:
            return False
        while True:
            entry = self._pop()
            if entry[0] == record_id:
                return True
            self._on_missing(*entry)

    def finish(self) -> None:
        while self._expected:
            self._on_missing(*self._pop())

    def _pop(self) -> tuple[str, int, _Commit]:
        entry = self._expected.popleft()
        left = self._pending[entry[0]] - 1
        if left:
            self._pending[entry[0]] = left
        else:
            del self._pending[entry[0]]
        return entry


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
        #: id -> (file, line the checkpoint gives it, its commit)
        self.missing: dict[str, tuple[Path, int, _Commit]] = {}
        #: id -> where (file, line) it was found although the checkpoint does not put it there
        self.extras: dict[str, tuple[Path, int]] = {}
        #: Findings not kept, by file.
        self.overflow: dict[Path, int] = {}

    def add_missing(self, path: Path, record_id: str, line: int, commit: _Commit) -> None:
        if len(self.missing) < _KEEP_MISPLACED:
            self.missing[record_id] = (path, line, commit)
        else:
            self.overflow[path] = self.overflow.get(path, 0) + 1

    def add_extra(self, path: Path, record_id: str, line: int) -> None:
        if len(self.extras) < _KEEP_MISPLACED:
            self.extras[record_id] = (path, line)
        else:
            self.overflow[path] = self.overflow.get(path, 0) + 1


# -- the checks ----------------------------------------------------------------


@dataclass(slots=True)
class _Archive:
    """An archive whose checkpoint replayed, kept for the passes after the first."""

    root: Path
    state: CheckpointState

    @property
    def checkpoint(self) -> Path:
        return self.root / checkpoint.CHECKPOINT_NAME

    def files(self) -> Iterator[tuple[FileState, Iterator[_Commit]]]:
        """Each listed file with its commits, in checkpoint order (commits are grouped by file)."""
        for name, commits in itertools.groupby(
            _commits(self.checkpoint, self.state.valid_bytes), key=lambda c: c.file
        ):
            yield self.state.files[name], commits


class _Checker:
    """The state shared by every archive of one verification: seen ids, findings, duplicates."""

    def __init__(self, manifest: ManifestSource | None) -> None:
        self.report = Report(manifest=None if manifest is None else manifest.display)
        self.seen = DigestSet()
        self.archives: list[_Archive] = []
        #: Ids found again: every later place. The first is found by `place_duplicates`.
        self.duplicates: dict[str, list[_Place]] = {}
        self._details: dict[str, int] = {}

    # -- findings

    def problem(self, path: Path | str, line: int | None, message: str) -> None:
        self.report.findings.append(Problem(str(path), line, message))

    def note(self, path: Path | str, line: int | None, message: str) -> None:
        self.report.findings.append(Problem(str(path), line, message, "note"))

    def detail(self, path: Path | str, line: int | None, message: str) -> None:
        """A per-line problem: listed up to DETAIL_LIMIT per file, counted after that."""
        key = str(path)
        listed = self._details.get(key, 0)
        if listed < DETAIL_LIMIT:
            self._details[key] = listed + 1
            self.problem(key, line, message)
        else:
            self.unlisted(key)

    def unlisted(self, path: Path | str, count: int = 1) -> None:
        unlisted = self.report.unlisted
        unlisted[str(path)] = unlisted.get(str(path), 0) + count

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
        self._note_generations(root)
        state = self._replay(root)
        if state is None:
            return
        archive = _Archive(root, state)
        self.archives.append(archive)
        self._check_unlisted(archive)
        hashes: dict[str, str] = {}
        misplaced = _Misplaced()
        for file_state, commits in archive.files():
            digest = self._check_file(archive, file_state, commits, misplaced)
            if digest is not None:
                hashes[file_state.name] = digest
        self._report_misplaced(misplaced)
        self._check_summary(archive, hashes)

    def _note_generations(self, root: Path) -> None:
        if (root / SUPERSEDE_MARKER).exists():
            self.note(
                root,
                None,
                "a --refetch run was stopped while it set the old generation aside; "
                "the next export run finishes moving it (files may be missing until then)",
            )
        superseded = root / SUPERSEDED_DIR
        if superseded.is_dir():
            for generation in sorted(p for p in superseded.iterdir() if p.is_dir()):
                self.note(
                    generation,
                    None,
                    f"an earlier generation set aside by --refetch, not verified here "
                    f"(run `exporter verify {generation}`)",
                )

    def _replay(self, root: Path) -> CheckpointState | None:
        path = root / checkpoint.CHECKPOINT_NAME
        if not path.exists():
            listed = sorted(n for n in os.listdir(root) if file_number(n) is not None)
            self.problem(
                root,
                None,
                f"holds {listed[0]} but no {checkpoint.CHECKPOINT_NAME}: nothing says what was "
                "committed, so none of it can be verified; restore the checkpoint from a backup",
            )
            return None
        try:
            with open(path, "rb") as handle:
                state = checkpoint.replay(handle, lambda ids: None)
        except ArchiveCorrupt as exc:
            found = re.search(r" line (\d+) is damaged \((.*)\) and is not the last line", str(exc))
            line, why = (int(found.group(1)), found.group(2)) if found else (None, str(exc))
            self.problem(
                path,
                line,
                f"damaged entry ({why}) before the last line: the records cannot be checked "
                "against it; restore the checkpoint from a backup",
            )
            return None
        except OSError as exc:
            self.problem(path, None, f"cannot be read: {exc.strerror or exc}")
            return None
        if state.torn_tail:
            self.note(
                path,
                _line_after(path, state.valid_bytes),
                "the last line is torn: the last run was killed mid-commit; the next export run discards it",
            )
        return state

    def _check_unlisted(self, archive: _Archive) -> None:
        known = archive.state.files
        next_number = 1 + max((file_number(n) or 0 for n in known), default=0)
        for name in sorted(os.listdir(archive.root)):
            number = file_number(name)
            if number is None or name in known:
                continue
            if number == next_number:
                # archive.py creates the next file just before its first commit and
                # deletes it on open when that commit never made it to the checkpoint.
                self.note(
                    archive.root / name,
                    None,
                    "not in the checkpoint: created by a run killed before its first commit "
                    "to it; the next export run removes it",
                )
            else:
                self.problem(
                    archive.root / name,
                    None,
                    "records file not listed in the checkpoint: it is not part of this archive "
                    "(the next export run refuses to start); move it away",
                )

    def _check_file(
        self, archive: _Archive, state: FileState, commits: Iterator[_Commit], misplaced: _Misplaced
    ) -> str | None:
        """Check one listed records file; the sha256 of its committed bytes when all were read."""
        path = archive.root / state.name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            self.problem(
                path,
                None,
                f"missing: the checkpoint lists {state.lines} records in it (lines 1..{state.lines}); "
                "restore it from a backup",
            )
            return None
        self.report.files += 1
        if size > state.size:
            extra = size - state.size
            if state.closed:
                self.problem(
                    path,
                    None,
                    f"is {size} bytes but was closed at {state.size}: {extra} bytes were added "
                    "after it was sealed; restore it from a backup",
                )
            else:
                self.note(
                    path,
                    None,
                    f"{extra} bytes after the last commit ({state.size}): an uncommitted tail left "
                    "by a killed run; the next export run cuts it",
                )
        reader = _FileReader(path, codec_of_file(state.name), commits, size)
        align = _Alignment(lambda rid, line, commit: misplaced.add_missing(path, rid, line, commit))
        lines = 0
        for event in reader:
            if isinstance(event, _Chunk):
                self._check_chunk(path, event, align)
                continue
            lines += 1
            if not event.raw.endswith(b"\n"):
                self.detail(path, event.number, "is cut off: no newline at the end of the committed bytes")
            record_id, why = _record_id(event.raw)
            if record_id is None:
                self.detail(path, event.number, why)
                continue
            self.report.records += 1
            matched = align.match(record_id)
            if not self.seen.add(id_digest(record_id)):
                self._found_again(record_id, (str(path), event.number))
            elif not matched:
                misplaced.add_extra(path, record_id, event.number)
        align.finish()
        if reader.cut_at is not None:
            cut = reader.cut_at
            self.problem(
                path,
                None,
                f"truncated: {size} bytes on disk but {state.size} were committed: lines "
                f"{cut.first_line}..{state.lines} (commit {cut.ordinal} on) are lost; "
                "restore it from a backup",
            )
            return None
        if reader.without_crc:
            self.note(
                path,
                None,
                f"{reader.without_crc} commits carry no crc32 (written by an older exporter): their bytes "
                "are checked only as a whole, by the close entry's or summary.json's sha256",
            )
        if reader.read_all and lines != state.lines:
            self.problem(path, None, f"holds {lines} lines but the checkpoint lists {state.lines}")
        digest = reader.sha256()
        if state.closed and state.sha256 is not None and digest != state.sha256:
            self.problem(
                path,
                None,
                f"sha256 is {digest} but its close entry says {state.sha256}: the file changed after "
                "it was sealed; restore it from a backup",
            )
        return digest

    def _check_chunk(self, path: Path, chunk: _Chunk, align: _Alignment) -> None:
        commit = chunk.commit
        if chunk.error is None:
            align.expect(commit)
        if chunk.crc_ok and chunk.error is None:
            return
        found = [] if chunk.crc_ok else ["crc mismatch"]
        if chunk.error is not None:
            found.append(chunk.error)
        self.problem(path, None, f"{commit.describe()}: {'; '.join(found)}")

    def _report_misplaced(self, misplaced: _Misplaced) -> None:
        """Missing records and stray lines, paired up when one is the other out of place."""
        for record_id, (path, line, commit) in misplaced.missing.items():
            if record_id not in misplaced.extras:
                self.detail(
                    path,
                    line,
                    f"record {record_id!r} is missing: the checkpoint lists it as this line "
                    f"(commit {commit.ordinal})",
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

    def _found_again(self, record_id: str, place: _Place) -> None:
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
        first: dict[str, _Place] = {}
        for archive in self.archives:
            for state, commits in archive.files():
                path = archive.root / state.name
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                for event in _FileReader(path, codec_of_file(state.name), commits, size):
                    if isinstance(event, _Chunk):
                        continue
                    record_id = _record_id(event.raw)[0]
                    if record_id in wanted and record_id not in first:
                        first[record_id] = (str(path), event.number)
                        if len(first) == len(wanted):
                            return first
        return first

    def _check_summary(self, archive: _Archive, hashes: dict[str, str]) -> None:
        path = archive.root / SUMMARY_NAME
        state = archive.state
        try:
            summary = orjson.loads(path.read_bytes())
            files = {f["name"]: f for f in summary["archive"]["files"]}
            records = summary["archive"]["records"]
        except FileNotFoundError:
            if state.runs:
                self.note(path, None, "missing: no run has finished yet (the first one was killed?)")
            return
        except (ValueError, KeyError, TypeError) as exc:
            self.problem(
                path, None, f"is not a summary this exporter writes ({exc}); the next run rewrites it"
            )
            return
        last_run = state.runs[-1].run if state.runs else None
        current = summary.get("run") == last_run
        if not current:
            self.note(
                path,
                None,
                f"is from run {summary.get('run')} but the checkpoint's last run is {last_run}, which "
                "did not write one (killed?): only the files whose sizes agree are compared",
            )
        elif records != state.ids:
            self.problem(path, None, f"says {records} records but the checkpoint lists {state.ids} ids")
        for name, file_state in state.files.items():
            entry = files.pop(name, None)
            if entry is None:
                if current:
                    self.problem(path, None, f"does not list {name}, which the checkpoint does")
                continue
            if entry.get("bytes") != file_state.size:
                if current or not isinstance(entry.get("bytes"), int) or entry["bytes"] > file_state.size:
                    self.problem(
                        path,
                        None,
                        f"says {name} is {entry.get('bytes')} bytes but {file_state.size} were committed",
                    )
                continue
            if entry.get("lines") != file_state.lines:
                self.problem(
                    path,
                    None,
                    f"says {name} has {entry.get('lines')} lines but the checkpoint lists {file_state.lines}",
                )
            digest = hashes.get(name)
            if digest is not None and entry.get("sha256") != digest:
                self.problem(
                    path, None, f"says {name} has sha256 {entry.get('sha256')} but its bytes hash to {digest}"
                )
        for name in files:
            self.problem(path, None, f"lists {name}, which the checkpoint does not")

    # -- all archives against a manifest

    def check_manifest(self, source: ManifestSource) -> None:
        """Every valid manifest id archived or not_found; nothing archived outside the manifest."""
        not_found, other_reasons = self._failures()
        listed = DigestSet()
        display = source.display
        skipped = {"bad": 0, "invalid": 0}
        with open_manifest(source) as entries:
            for entry in entries:
                if entry.problem is not None:
                    text = f"{entry.problem}: {entry.value!r}"
                    self._manifest_note(skipped, "bad", display, entry.line, text)
                    continue
                why = id_problem(entry.value)
                if why is not None:
                    self._manifest_note(
                        skipped, "invalid", display, entry.line, f"invalid id {entry.value!r} ({why})"
                    )
                    continue
                digest = id_digest(entry.value)
                if not listed.add(digest) or digest in self.seen or digest in not_found:
                    continue
                reason = next((r for r, ids in other_reasons.items() if digest in ids), None)
                told = f"failed.ndjson lists it as {reason}" if reason else "nor listed in any failed.ndjson"
                self.detail(display, entry.line, f"id {entry.value!r} is in no archive, {told}")
        for kind, count in skipped.items():
            if count > _MANIFEST_NOTES:
                what = "bad lines" if kind == "bad" else "invalid ids"
                self.note(display, None, f"{count - _MANIFEST_NOTES} more {what} are not listed")
        for archive in self.archives:
            for commit in _commits(archive.checkpoint, archive.state.valid_bytes):
                for offset, record_id in enumerate(commit.ids):
                    if id_digest(record_id) not in listed:
                        self.detail(
                            archive.root / commit.file,
                            commit.first_line + offset,
                            f"id {record_id!r} is archived but not in the manifest",
                        )

    def _manifest_note(self, skipped: dict[str, int], kind: str, display: str, line: int, text: str) -> None:
        skipped[kind] += 1
        if skipped[kind] <= _MANIFEST_NOTES:
            self.note(display, line, f"{text}: never exported")

    def _failures(self) -> tuple[DigestSet, dict[str, DigestSet]]:
        """Ids the archives' failed.ndjson list: found missing, and by every other reason."""
        not_found = DigestSet()
        others: dict[str, DigestSet] = {}
        for archive in self.archives:
            path = archive.root / FAILED_NAME
            try:
                handle = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with handle:
                for number, raw in enumerate(handle, 1):
                    try:
                        entry = orjson.loads(raw)
                        record_id, reason = entry["id"], entry["reason"]
                    except (ValueError, KeyError, TypeError):
                        self.note(path, number, "unreadable line: an id it names counts as not accounted for")
                        continue
                    if not isinstance(record_id, str) or not isinstance(reason, str):
                        continue
                    if reason == Reason.NOT_FOUND:
                        not_found.add(id_digest(record_id))
                    else:
                        others.setdefault(reason, DigestSet()).add(id_digest(record_id))
        return not_found, others


def _require_archive(root: Path) -> None:
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory; give the --out directory of an export")
    if (root / checkpoint.CHECKPOINT_NAME).exists():
        return
    if any(file_number(name) is not None for name in os.listdir(root)):
        return  # records without a checkpoint: damage, reported as a problem
    raise UsageError(
        f"{root} is not an archive (it has no {checkpoint.CHECKPOINT_NAME}); "
        "give the --out directory of an export"
    )


def _json_int(text: str) -> int | str:
    """An integer of the records, which the exporter keeps at any width; Python refuses over 4300 digits."""
    try:
        return int(text)
    except ValueError:
        return text


def _line_after(path: Path, valid_bytes: int) -> int:
    """The number of the line that starts at byte `valid_bytes` of `path`."""
    newlines = 0
    with open(path, "rb") as handle:
        while valid_bytes > 0 and (chunk := handle.read(min(valid_bytes, 1 << 20))):
            newlines += chunk.count(b"\n")
            valid_bytes -= len(chunk)
    return newlines + 1


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- the command ---------------------------------------------------------------

VERIFY_EPILOG = """\
examples:
  exporter verify archive/
  exporter verify shard-0/ shard-1/ shard-2/ --manifest ids.txt.gz

  Each problem is one line, `DIR/FILE:LINE: what is wrong`; notes (`note: ...`) are
  expected leftovers of a killed run that the next export run cleans up by itself.

exit codes:
  0    every check holds
  1    at least one problem (listed)
  2    usage error: a DIR that is not an archive, an unreadable manifest
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter verify`."""
    parser = commands.add_parser(
        "verify",
        help="prove offline what archives hold, byte by byte and id by id",
        description=(
            "Check one or more archives without the API: the checkpoint replays, every committed\n"
            "byte has its crc32 (and every closed file its sha256), every committed line is a JSON\n"
            "object whose id the checkpoint lists at that place, no id is archived twice across\n"
            "the DIRs, and summary.json agrees. With --manifest, also prove that the DIRs together\n"
            "hold every valid id of the manifest (or list it as not_found in a failed.ndjson) and\n"
            "nothing else: the check for an export sharded over several archives."
        ),
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="archive directories (the --out of export runs)"
    )
    parser.add_argument(
        "--manifest",
        action="append",
        metavar="M",
        help="the manifest the archives were exported from (once; - for standard input; .gz/.zst is fine)",
    )
    parser.add_argument(
        "--format",
        choices=["auto", "text", "csv", "ndjson"],
        default="auto",
        help="the manifest's format (default: from its name, else guessed from the first line)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    parser.set_defaults(handler=_verify_command)


def _verify_command(args: argparse.Namespace) -> int:
    manifests: list[str] = args.manifest or []
    if len(manifests) > 1:
        raise UsageError("--manifest may be given once; to check several manifests, concatenate them")
    if not manifests and args.format != "auto":
        raise UsageError("--format describes the manifest: give it with --manifest M")
    source: ManifestSource | None = None
    if manifests:
        source = ManifestSource(path=None if manifests[0] == "-" else Path(manifests[0]), format=args.format)
    report = verify_archives(args.dirs, manifest=source)
    print_report(report, sys.stdout, quiet=args.quiet)
    return report.exit_code
