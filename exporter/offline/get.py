"""`exporter get`: archived records by id, byte for byte as stored, from one or more archives.

For each id asked, in the order asked: its digest is looked up in each
archive's index (`archive/index.py`, the part of the checkpoint it does not
cover replayed in memory), in the order the archives are given; the first that
holds it gives the commit and the line in it. The commit's bytes are read from
the records file, their crc32 checked against the checkpoint's, the one gzip
member or zstd frame decompressed, and the line taken; it is printed only when
its own id is the one asked. Nothing is written and no lock is taken, so it
works while an export appends to the archive: what the checkpoint had committed
when `get` started is what it finds.

    ids asked --(1,024 at a time)--> lookups --(grouped by commit)--> one read,
      crc32 and decompression per commit --> the lines, printed in the order asked

An id not archived is named on stderr, with what failed.ndjson says about it;
an id whose commit is damaged (crc32, decompression, a cut file, another id on
its line) is reported as damaged and never printed. Exit 0 when every id was
printed, 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

from exporter.archive.framing import codec_of_file, decompressed_lines
from exporter.archive.index import IndexView, open_view
from exporter.archive.index_format import CommitPlace, IndexFormatError
from exporter.archive.layout import ArchiveKind, FailedEntry, archive_kind, file_number, not_an_archive
from exporter.archive.reader import failed_entries, line_id, open_directory, warned
from exporter.archive.safe_fs import SafeDir
from exporter.config import ManifestSource
from exporter.digests import id_digest
from exporter.display import escape
from exporter.errors import ArchiveError, UsageError
from exporter.manifest import Entry, open_manifest
from exporter.remote.location import is_remote
from exporter.remote.location import parse as parse_url

#: Ids resolved together: their commits are each read once.
BATCH_IDS = 1024
_DECODE_ERRORS = (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError)


@dataclass(frozen=True, slots=True)
class Found:
    """The record of `id`, exactly as stored (one NDJSON line, newline included)."""

    id: str
    archive: Path | str
    line: bytes


@dataclass(frozen=True, slots=True)
class Missing:
    """No archive holds `id`; `failed` is what a failed.ndjson says about it, if one does."""

    id: str
    failed: FailedEntry | None = None
    failed_in: Path | str | None = None


@dataclass(frozen=True, slots=True)
class Damaged:
    """An archive lists `id`, but its record cannot be given back as stored: `why`."""

    id: str
    archive: Path | str
    why: str


Result = Found | Missing | Damaged


class Source(Protocol):
    """An archive as `get` reads it: a directory here, or a bucket (`remote/remote_get.py`)."""

    @property
    def root(self) -> Path | str:
        """What messages name: the directory, or the s3:// URL."""

    @property
    def directory(self) -> SafeDir:
        """Where its failed.ndjson is read (for a bucket, a private copy)."""

    @property
    def view(self) -> IndexView: ...

    def where(self, name: str) -> str:
        """The records file `name`, as messages name it."""

    def read(self, places: Sequence[CommitPlace]) -> list[bytes | str]:
        """The bytes of each commit, or why they cannot be read."""

    def close(self) -> None:
        """Release what it holds (files, mapped index, a bucket's client)."""


#: A commit longer than this is not one the exporter wrote (a checkpoint's `end` forged or damaged):
#: reported, never read into memory.
MAX_COMMIT_BYTES = 1 << 30


def span_problem(where: str, place: CommitPlace, file_bytes: int | None) -> str | None:
    """Why the commit at `place` cannot be read from a records file of `file_bytes` (None: absent).

    One rule for a directory and a bucket, checked before any byte is read, so a
    checkpoint naming bytes past the file's end, or a gigantic span, costs nothing.
    """
    if file_bytes is None:
        return f"{where} is missing"
    if place.end > file_bytes:
        return f"{where} is cut short: bytes {place.start}..{place.end} are not all there"
    if place.end - place.start > MAX_COMMIT_BYTES:
        return f"{where} bytes {place.start}..{place.end}: longer than any commit the exporter writes"
    return None


class _Archive:
    """One archive directory given to `get`: its index view, and its records files as opened."""

    __slots__ = ("_files", "directory", "root", "view")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = open_directory(root)
        try:
            self.view: IndexView = open_view(self.directory)
        except BaseException:
            self.directory.close()
            raise
        self._files: dict[str, int] = {}

    def where(self, name: str) -> str:
        return str(self.root / name)

    def read(self, places: Sequence[CommitPlace]) -> list[bytes | str]:
        return [self._read(place) for place in places]

    def _read(self, place: CommitPlace) -> bytes | str:
        name = place.file
        fd = self._files.get(name)
        if fd is None:
            if self.directory.lstat(name) is None:
                return f"{self.root / name} is missing"
            try:
                fd = self._files[name] = self.directory.open(name, os.O_RDONLY)
            except ArchiveError as exc:
                return str(exc)
        size = place.end - place.start
        try:
            problem = span_problem(self.where(name), place, os.fstat(fd).st_size)
            if problem is not None:
                return problem
            data = os.pread(fd, size, place.start)
        except OSError as exc:
            return f"cannot read {self.root / name}: {exc.strerror or exc}"
        if len(data) != size:
            return f"{self.root / name} is cut short: bytes {place.start}..{place.end} are not all there"
        return data

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self.view.close()
        self.directory.close()


class Getter:
    """Archives opened once (their index mapped) for any number of `get` calls; a context manager."""

    __slots__ = ("_archives", "_stack")

    def __init__(self, roots: Sequence[Path | str]) -> None:
        """Open the archives in `roots` (directories, or s3:// URLs as str).

        UsageError for one that is not an archive, ArchiveError for one that
        cannot be read (StoreError for a bucket).
        """
        for root in roots:
            if _remote(root):
                parse_url(str(root))  # a mistyped URL is said before any request
                continue
            kind = archive_kind(Path(root))
            if kind is ArchiveKind.NOT_A_DIRECTORY:
                raise UsageError(f"{root} is not a directory; give the --out directory of an export")
            if kind is not ArchiveKind.ARCHIVE:
                raise not_an_archive(Path(root))
        self._archives: list[Source] = []
        self._stack = contextlib.ExitStack()
        try:
            remote = None
            for root in roots:
                if not _remote(root):
                    self._archives.append(_Archive(Path(root)))
                    continue
                if remote is None:
                    from exporter.remote.remote_get import RemoteArchives  # the S3 client only for s3://

                    remote = RemoteArchives()
                    self._stack.callback(remote.close)
                self._archives.append(remote.open(str(root)))
        except BaseException:
            self.close()
            raise

    def get(self, ids: Iterable[str]) -> Iterator[Result]:
        """A `Found`, `Missing` or `Damaged` for each of `ids`, in order."""
        source = iter(ids)
        while batch := list(itertools.islice(source, BATCH_IDS)):
            yield from _resolve(self._archives, batch)

    def close(self) -> None:
        try:
            for archive in self._archives:
                archive.close()
            self._archives = []
        finally:
            self._stack.close()

    def __enter__(self) -> Getter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remote(root: Path | str) -> bool:
    return isinstance(root, str) and is_remote(root)


def get_records(roots: Sequence[Path | str], ids: Iterable[str]) -> Iterator[Result]:
    """A `Found`, `Missing` or `Damaged` for each id of `ids`, in order (raises UsageError, ArchiveError)."""
    with Getter(roots) as getter:
        yield from getter.get(ids)


def _resolve(archives: list[Source], batch: list[str]) -> list[Result]:
    """The results for one batch of ids, in order: each commit needed is read and decoded once."""
    results: list[Result | None] = [None] * len(batch)
    wanted: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (archive, commit start) -> (slot, line)
    places: dict[tuple[int, int], CommitPlace] = {}
    for slot, record_id in enumerate(batch):
        digest = id_digest(record_id)
        for number, archive in enumerate(archives):
            ordinal = archive.view.lookup(digest)
            if ordinal is None:
                continue
            try:
                place = archive.view.place(ordinal)
            except IndexFormatError as exc:
                results[slot] = Damaged(record_id, archive.root, f"the index cannot place it ({exc})")
                break
            key = (number, place.ckpt_offset)
            places[key] = place
            wanted.setdefault(key, []).append((slot, ordinal - place.first_ordinal))
            break
    for key, lines in _decoded(archives, places).items():
        archive = archives[key[0]]
        place = places[key]
        for slot, line in wanted[key]:
            record_id = batch[slot]
            if isinstance(lines, str):
                results[slot] = Damaged(record_id, archive.root, lines)
                continue
            raw = lines[line]
            found = line_id(raw)[0]
            if found != record_id:
                why = f"line {line + 1} of {_where(archive, place)} holds id {found!r} instead"
                results[slot] = Damaged(record_id, archive.root, why)
            else:
                results[slot] = Found(record_id, archive.root, raw)
    missing = {batch[slot] for slot, result in enumerate(results) if result is None}
    reasons = _failed_reasons(archives, missing) if missing else {}
    return [
        result if result is not None else Missing(batch[slot], *reasons.get(batch[slot], (None, None)))
        for slot, result in enumerate(results)
    ]


def _where(archive: Source, place: CommitPlace) -> str:
    return f"{archive.where(place.file)} bytes {place.start}..{place.end}"


def _decoded(
    archives: list[Source], places: dict[tuple[int, int], CommitPlace]
) -> dict[tuple[int, int], list[bytes] | str]:
    """The lines of each commit (keyed by archive and commit), or why they cannot be trusted.

    An archive's commits are read together (a bucket's in parallel); a name in
    the checkpoint that is no records file is never opened.
    """
    decoded: dict[tuple[int, int], list[bytes] | str] = {}
    for number, archive in enumerate(archives):
        keys = []
        for key, place in places.items():
            if key[0] != number:
                continue
            if file_number(place.file) is None or "/" in place.file:
                decoded[key] = f"the checkpoint names {place.file!r}, which is not a records file"
            else:
                keys.append(key)
        if keys:
            read = archive.read([places[key] for key in keys])
            for key, data in zip(keys, read, strict=True):
                decoded[key] = data if isinstance(data, str) else _commit_lines(archive, places[key], data)
    return decoded


def _commit_lines(archive: Source, place: CommitPlace, data: bytes) -> list[bytes] | str:
    """The lines of one commit's bytes, or why they cannot be trusted (then none of them is printed)."""
    if zlib.crc32(data) != place.crc32:
        return f"{_where(archive, place)} fail their crc32: the commit is damaged (run `exporter verify`)"
    try:
        lines = list(decompressed_lines(io.BytesIO(data), codec_of_file(place.file)))
    except _DECODE_ERRORS as exc:
        return f"{_where(archive, place)} cannot be decompressed ({exc or type(exc).__name__})"
    if len(lines) != place.count or not all(line.endswith(b"\n") for line in lines):
        return f"{_where(archive, place)} hold {len(lines)} lines where the checkpoint lists {place.count}"
    return lines


def _failed_reasons(archives: list[Source], missing: set[str]) -> dict[str, tuple[FailedEntry, Path | str]]:
    """What each archive's failed.ndjson says about the missing ids (the last entry in the first archive)."""
    found: dict[str, tuple[FailedEntry, Path | str]] = {}
    for archive in archives:
        try:
            for entry in warned(failed_entries(archive.directory)):
                if entry.id in missing and not entry.cut and entry.id not in found:
                    found[entry.id] = (entry, archive.root)
        except ArchiveError:
            continue  # an unreadable failed.ndjson only costs the reason
    return found


# -- the command ---------------------------------------------------------------------------------


def get_command(
    dirs: Sequence[Path | str], *, ids: Sequence[str] | None, ids_file: ManifestSource | None
) -> int:
    """`exporter get`: print the records of `ids` (or of the ids in `ids_file`); 0 when each was printed."""
    out = sys.stdout.buffer
    with contextlib.ExitStack() as stack:
        if ids_file is not None:
            opened = stack.enter_context(open_manifest(ids_file, what="--ids-file"))
            asked = _IdsFile(opened, ids_file.display)
        else:
            asked = _IdsFile(Entry(number, value) for number, value in enumerate(ids or (), 1))
        missing = 0
        try:
            for result in get_records(dirs, asked):
                if isinstance(result, Found):
                    out.write(result.line)
                else:
                    missing += 1
                    out.flush()
                    sys.stderr.write(f"exporter: {escape(_explain(result))}\n")
            out.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): the rest is not wanted.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return 1
    return 1 if missing or asked.bad_lines else 0


class _IdsFile:
    """The ids asked; a line of --ids-file that holds no id is named on stderr and counted."""

    __slots__ = ("_entries", "bad_lines", "display")

    def __init__(self, entries: Iterable[Entry], display: str = "--id") -> None:
        self._entries = entries
        self.display = display
        self.bad_lines = 0

    def __iter__(self) -> Iterator[str]:
        for entry in self._entries:
            if entry.problem is not None:
                self.bad_lines += 1
                told = f"exporter: {self.display} line {entry.line}: {entry.problem}"
                sys.stderr.write(escape(told) + "\n")
                continue
            yield entry.value


def _explain(result: Missing | Damaged) -> str:
    if isinstance(result, Damaged):
        return f"{result.id!r} is in {result.archive} but damaged there, not printed: {result.why}"
    if result.failed is None:
        return f"{result.id!r} is not archived"
    entry = result.failed
    detail = f" ({entry.error})" if entry.error else ""
    return (
        f"{result.id!r} is not archived: failed.ndjson in {result.failed_in} says {entry.reason}{detail}"
        f" (run {entry.run})"
    )
