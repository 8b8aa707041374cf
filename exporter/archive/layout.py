"""The archive's on-disk contract: every file name, and failed.ndjson and summary.json as typed records.

Layout of `--out DIR` (the checkpoint's entries are `checkpoint.py`'s):

    records-00001.ndjson[.gz|.zst]   recordings, one JSON object a line
    checkpoint.ndjson                what each commit made durable
    failed.ndjson                    ids not archived, one `FailedEntry` a line (rewritten per run)
    summary.json                     one `Summary` (rewritten per run)
    superseded/<stamp>/              earlier generations set aside by --refetch
    .superseding                     names the generation a --refetch is moving aside
    .lock                            held while a run writes
    .failed.partial                  this run's failures, merged into failed.ndjson at its end
    NAME.tmp-<random>                a report being replaced (renamed over NAME when whole)
    index-<from>-<to>.idx            one run of the archive index: checkpoint bytes from..to (hex);
                                     derived from the checkpoint, rebuilt when missing or damaged
                                     (its format is `index_format.py`'s)

An archive in object storage (`--out s3://...`, `exporter/remote/`) has the
same records files, but only objects that are created once and never
rewritten, so what a local archive appends to or replaces is kept in pieces:

    checkpoint.d/00000001.ndjson     the checkpoint in consecutive segments: concatenated
                                     in number order, they are a checkpoint.ndjson
    summary.d/run-00003.json         each run's summary.json
    failed.d/run-00003.ndjson        failed.ndjson as each run left it (the last is current)

A directory holding checkpoint.d/ (and no checkpoint.ndjson) is an archive in
this remote form: what `aws s3 cp --recursive` of the prefix gives, which the
read-only commands read as it is (`checkpoint_path`, `summary_path`, `failed_path`).

Every other module asks this one for a name, and reads or writes failed.ndjson
and summary.json through `FailedEntry` and `Summary`: a format change is made
here, and the keys are spelled here only. Nothing here opens a file: the
writer and the reader do, through `safe_fs`.

How long a line of each file may be is decided here too (`CHECKPOINT_LINE_BYTES`,
`FAILED_LINE_BYTES`, `summary_max_bytes`): above what the writer can write, and
low enough that a reader holding one line never holds much. A longer line is
not the writer's: the reader skips it as it streams past and reports it.

Why one module of this size: it is the on-disk contract; every file name, entry kind and
record of the archive is defined here and nowhere else, so a format change is one diff.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from exporter.bounded import capped
from exporter.config import Compression
from exporter.errors import UsageError

CHECKPOINT_NAME = "checkpoint.ndjson"
FAILED_NAME = "failed.ndjson"
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".lock"
JOURNAL_NAME = ".failed.partial"
SUPERSEDED_DIR = "superseded"
SUPERSEDE_MARKER = ".superseding"
RECORDS_PREFIX = "records-"
SEGMENTS_DIR = "checkpoint.d"
RUN_SUMMARIES_DIR = "summary.d"
RUN_FAILED_DIR = "failed.d"
#: Directories of the remote form, each of files created once.
REMOTE_DIRS = (SEGMENTS_DIR, RUN_SUMMARIES_DIR, RUN_FAILED_DIR)
#: Files rewritten whole, through a temporary file renamed over them.
REPLACED = (FAILED_NAME, SUMMARY_NAME, SUPERSEDE_MARKER)
#: Files appended to or truncated in place: they must have no other link.
WRITTEN_IN_PLACE = (LOCK_NAME, JOURNAL_NAME, CHECKPOINT_NAME)
_SUFFIXES: dict[Compression, str] = {"none": ".ndjson", "gzip": ".ndjson.gz", "zstd": ".ndjson.zst"}

# -- how long a line may be ------------------------------------------------------

#: The longest checkpoint entry. The writer splits a commit whose ids would make a longer one
#: (`checkpoint.commit_groups`: some 6,500 ids of 36 characters fit), so only damage is longer.
#: Memory goes with the number of ids, not their bytes: an entry of 65,000 one-character ids,
#: the most that fit, costs some 7 MB to parse and `exporter verify` some 10 MB more.
CHECKPOINT_LINE_BYTES = 256 << 10
#: The longest failed.ndjson line. The writer's are under 16 KiB: an id cut to 1 KiB and an
#: error cut to `bounded.TEXT_BYTES`, each six times as long at most once JSON escapes them.
FAILED_LINE_BYTES = 64 << 10
#: summary.json holds at most this much besides its files (the longest parts, the manifest's name
#: and the base URL, come from the command line, where one argument is at most 128 KiB) ...
_SUMMARY_BASE_BYTES = 1 << 20
#: ... and this much per records file (name, bytes, lines, sha256, closed: under 300 bytes).
_SUMMARY_FILE_BYTES = 512


def summary_max_bytes(files: int) -> int:
    """The longest summary.json of an archive of `files` records files: a longer one is not the writer's."""
    return _SUMMARY_BASE_BYTES + _SUMMARY_FILE_BYTES * files


def too_long(size: int, limit: int) -> str:
    """What is wrong with a line (or file) of `size` bytes, where the writer writes at most `limit`."""
    return f"{size:,} bytes, over the {limit:,}-byte limit"


# -- text the files hold --------------------------------------------------------


def stored_name(name: str) -> str:
    """A file name as the archive's files record it (the manifest's): UTF-8, as every line they hold.

    A name's bytes that are not UTF-8 come to Python as lone surrogates, which
    no UTF-8 writer can write (orjson refuses them: the run would end in a
    traceback); they are recorded as `\\xNN`, as `ls -b` shows them. The name
    is a label for a person, never opened again from here.
    """
    if name.isascii():
        return name
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name's bytes give
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


# -- records files ---------------------------------------------------------------


def records_name(number: int, compression: Compression) -> str:
    """The name of records file number `number` (1-based), written with `compression`."""
    return f"{RECORDS_PREFIX}{number:05d}{_SUFFIXES[compression]}"


def compression_of(name: str) -> Compression:
    """The `--compress` value a records file was written with, from its name."""
    if name.endswith(_SUFFIXES["gzip"]):
        return "gzip"
    if name.endswith(_SUFFIXES["zstd"]):
        return "zstd"
    return "none"


def file_number(file_name: str) -> int | None:
    """The sequence number in a records file name, or None when it is not one."""
    if not file_name.startswith(RECORDS_PREFIX):
        return None
    digits = file_name[len(RECORDS_PREFIX) :].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


def unlisted_records_files(names: Iterable[str], listed: Iterable[str]) -> tuple[list[str], list[str]]:
    """Records files among `names` that the checkpoint does not list, split in two.

    The first list holds the file numbered right after the last listed one:
    the archive creates it just before its first commit to it, so a run killed
    in between leaves it behind, uncommitted (the next export removes it). The
    second holds any other unlisted records file, which is not the archive's.
    """
    known = set(listed)
    next_number = 1 + max((file_number(name) or 0 for name in known), default=0)
    leftover: list[str] = []
    foreign: list[str] = []
    for name in sorted(names):
        number = file_number(name)
        if number is None or name in known:
            continue
        (leftover if number == next_number else foreign).append(name)
    return leftover, foreign


def is_generation_file(name: str) -> bool:
    """Whether --refetch moves `name` aside with the generation (the checkpoint, moved last, apart)."""
    return file_number(name) is not None or name in (FAILED_NAME, SUMMARY_NAME) or is_index_file(name)


# -- the index -----------------------------------------------------------------

INDEX_PREFIX = "index-"
INDEX_SUFFIX = ".idx"
_INDEX_SPAN_DIGITS = 12


def index_run_name(start: int, end: int) -> str:
    """The name of the index run covering checkpoint bytes `start`..`end`."""
    return f"{INDEX_PREFIX}{start:0{_INDEX_SPAN_DIGITS}x}-{end:0{_INDEX_SPAN_DIGITS}x}{INDEX_SUFFIX}"


def index_run_span(name: str) -> tuple[int, int] | None:
    """The checkpoint bytes (start, end) an index run's name says it covers; None when it is not one."""
    if not (name.startswith(INDEX_PREFIX) and name.endswith(INDEX_SUFFIX)):
        return None
    span = name[len(INDEX_PREFIX) : -len(INDEX_SUFFIX)]
    start, dash, end = span.partition("-")
    digits = "0123456789abcdef"
    if not dash or any(len(part) != _INDEX_SPAN_DIGITS or part.strip(digits) for part in (start, end)):
        return None
    first, last = int(start, 16), int(end, 16)
    return (first, last) if first < last else None


def is_index_temp(name: str) -> bool:
    """Whether `name` is an index run being written (a killed run's leftover once it is not)."""
    run, tmp, _ = name.partition(INDEX_SUFFIX + ".tmp")
    return bool(tmp) and index_run_span(run + INDEX_SUFFIX) is not None


def is_index_file(name: str) -> bool:
    """Whether `name` belongs to the index: a run, or a run being written."""
    return index_run_span(name) is not None or is_index_temp(name)


# -- temporary files and entry kinds ---------------------------------------------


def temp_name(name: str) -> str:
    """An unpredictable name for a temporary file that will become `name`."""
    return f"{name}.tmp-{secrets.token_hex(8)}"


def is_temp_of(candidate: str, name: str) -> bool:
    """Whether `candidate` is (or looks like) a temporary file of `name`, made by any version."""
    return candidate.startswith(name + ".tmp")


def is_report_temp(name: str) -> bool:
    """Whether `name` is a temporary file of a replaced report: a killed run's leftover."""
    return any(is_temp_of(name, report) for report in REPLACED)


class EntryKind(enum.Enum):
    """What the archive keeps under a name, which decides what may stand there."""

    DIRECTORY = "directory"
    #: Appended to or cut in place: must be a regular file with one link.
    WRITTEN_IN_PLACE = "written in place"
    #: Any other file: must be a regular file.
    FILE = "file"


def entry_kind(name: str) -> EntryKind | None:
    """What the archive keeps under `name`, or None when the name is not the archive's."""
    if name == SUPERSEDED_DIR or name in REMOTE_DIRS:
        return EntryKind.DIRECTORY
    if name in WRITTEN_IN_PLACE:
        return EntryKind.WRITTEN_IN_PLACE
    if name in REPLACED or file_number(name) is not None or is_report_temp(name) or is_index_file(name):
        return EntryKind.FILE
    return None


def marker_text(generation: str) -> bytes:
    """What .superseding holds while --refetch moves the generation into superseded/`generation`."""
    return f"{SUPERSEDED_DIR}/{generation}\n".encode()


def marker_target(text: str) -> str:
    """The generation named by .superseding's `text` (stripped); "" when it names none."""
    prefix = SUPERSEDED_DIR + "/"
    return text[len(prefix) :] if text.startswith(prefix) else ""


# -- is this an archive ------------------------------------------------------------


class ArchiveKind(enum.Enum):
    """What a directory given to a read-only command is."""

    NOT_A_DIRECTORY = "not a directory"
    NOT_AN_ARCHIVE = "not an archive"
    #: Records files but no checkpoint: an archive whose checkpoint is lost (damage).
    RECORDS_ONLY = "records without a checkpoint"
    ARCHIVE = "archive"


def archive_kind(root: Path) -> ArchiveKind:
    """Whether `root` is an archive: it has a checkpoint (even a link, which is then refused)."""
    if not root.is_dir():
        return ArchiveKind.NOT_A_DIRECTORY
    if os.path.lexists(root / CHECKPOINT_NAME) or os.path.isdir(root / SEGMENTS_DIR):
        return ArchiveKind.ARCHIVE
    if any(file_number(name) is not None for name in os.listdir(root)):
        return ArchiveKind.RECORDS_ONLY
    return ArchiveKind.NOT_AN_ARCHIVE


# -- the remote form ---------------------------------------------------------------


def segment_name(number: int) -> str:
    """The name (relative to the archive) of checkpoint segment `number` (from 1)."""
    return f"{SEGMENTS_DIR}/{number:08d}.ndjson"


def segment_number(name: str) -> int | None:
    """The number of a checkpoint segment's name (relative to the archive); None when it is not one."""
    head, _, tail = name.partition("/")
    digits = tail.removesuffix(".ndjson")
    if head != SEGMENTS_DIR or not tail.endswith(".ndjson") or not digits.isdigit() or len(digits) != 8:
        return None
    return int(digits)


def run_summary_name(run: int) -> str:
    """Where the remote form keeps run `run`'s summary.json."""
    return f"{RUN_SUMMARIES_DIR}/run-{run:05d}.json"


def run_failed_name(run: int) -> str:
    """Where the remote form keeps failed.ndjson as run `run` left it."""
    return f"{RUN_FAILED_DIR}/run-{run:05d}.ndjson"


def run_of(name: str, directory: str) -> int | None:
    """The run number of a `summary.d` / `failed.d` name (relative to the archive), or None."""
    head, _, tail = name.partition("/")
    stem = tail.rsplit(".", 1)[0]
    if head != directory or not stem.startswith("run-") or not stem[4:].isdigit():
        return None
    return int(stem[4:])


def checkpoint_path(root: Path) -> Path:
    """The checkpoint of the archive in `root`: checkpoint.ndjson, or in the remote form checkpoint.d/."""
    local = root / CHECKPOINT_NAME
    if not os.path.lexists(local) and os.path.isdir(root / SEGMENTS_DIR):
        return root / SEGMENTS_DIR
    return local


def _latest(root: Path, directory: str) -> Path | None:
    try:
        names = os.listdir(root / directory)
    except OSError:
        return None
    runs = {run_of(f"{directory}/{name}", directory): name for name in names}
    runs.pop(None, None)
    return root / directory / runs[max(r for r in runs if r is not None)] if runs else None


def summary_path(root: Path) -> Path:
    """summary.json of the archive in `root`; in the remote form, the last run's in summary.d/."""
    local = root / SUMMARY_NAME
    if os.path.lexists(local) or not os.path.isdir(root / SEGMENTS_DIR):
        return local
    return _latest(root, RUN_SUMMARIES_DIR) or local


def failed_path(root: Path) -> Path:
    """failed.ndjson of the archive in `root`; in the remote form, the last run's in failed.d/."""
    local = root / FAILED_NAME
    if os.path.lexists(local) or not os.path.isdir(root / SEGMENTS_DIR):
        return local
    return _latest(root, RUN_FAILED_DIR) or local


def not_an_archive(root: Path) -> UsageError:
    """The error for a directory that is not an archive."""
    return UsageError(
        f"{root} is not an archive (it has no {CHECKPOINT_NAME}); give the --out directory of an export"
    )


# -- failed.ndjson -----------------------------------------------------------------

#: failed.ndjson holds at most this many bytes of an id (a manifest line may hold a MiB).
REPORTED_ID_BYTES = 1024


def reported_id(record_id: str) -> dict[str, object]:
    """How failed.ndjson names an id: `{"id": ...}`, or, for one over 1 KiB, its start and who it is.

    A longer id (never a valid one: ids have at most 256 characters) is cut to
    its first 1 KiB, at a character boundary, with `id_bytes` (its length in
    UTF-8) and `id_sha256` (of those bytes) to tell it apart; that `id_bytes`
    is present says the `id` is cut.
    """
    raw = record_id.encode("utf-8", "surrogatepass")
    if len(raw) <= REPORTED_ID_BYTES:
        return {"id": record_id}
    return {
        "id": raw[:REPORTED_ID_BYTES].decode("utf-8", "ignore"),
        "id_bytes": len(raw),
        "id_sha256": hashlib.sha256(raw).hexdigest(),
    }


#: The keys of every failed.ndjson line after the id (and the cut id's length and hash), in order.
_FAILED_ALWAYS = ("reason", "status", "attempts", "error", "run", "at")


@dataclass(frozen=True, kw_only=True, slots=True)
class FailedEntry:
    """One line of failed.ndjson: an id not archived, and why.

    Read back, only `id` and `reason` are required (a string each); the other
    fields take their defaults when a line lacks them or has another type.
    `error` is capped (`bounded.capped`) however the entry is made: a server's
    answer can be megabytes, and the line it goes into must stay short.
    """

    id: str
    reason: str
    error: str | None = None
    status: int | None = None
    attempts: int = 0
    run: int = 0
    #: When it failed (RFC 3339, UTC).
    at: str | None = None
    #: The manifest line, for problems found in the manifest itself.
    line: int | None = None
    #: Set when `id` is only the first 1 KiB of a longer one: its length in UTF-8, and its sha256.
    id_bytes: int | None = None
    id_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None:
            object.__setattr__(self, "error", capped(self.error))

    @classmethod
    def about(
        cls,
        record_id: str,
        *,
        reason: str,
        error: str,
        status: int | None,
        attempts: int,
        run: int,
        at: str,
        line: int | None = None,
    ) -> FailedEntry:
        """The entry for `record_id`, cut as `reported_id` says when it is over 1 KiB."""
        named = reported_id(record_id)
        cut_bytes, cut_sha = named.get("id_bytes"), named.get("id_sha256")
        return cls(
            id=str(named["id"]),
            reason=reason,
            error=error,
            status=status,
            attempts=attempts,
            run=run,
            at=at,
            line=line,
            id_bytes=cut_bytes if isinstance(cut_bytes, int) else None,
            id_sha256=cut_sha if isinstance(cut_sha, str) else None,
        )

    @property
    def cut(self) -> bool:
        """Whether `id` is only the start of a longer id (it then names no id of a manifest)."""
        return self.id_bytes is not None

    def to_json_line(self) -> bytes:
        """The entry as one line of failed.ndjson, newline included."""
        entry: dict[str, object] = {"id": self.id}
        if self.id_bytes is not None:
            entry["id_bytes"] = self.id_bytes
            entry["id_sha256"] = self.id_sha256
        entry.update((key, getattr(self, key)) for key in _FAILED_ALWAYS)
        if self.line is not None:
            entry["line"] = self.line
        return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json_line(cls, raw: bytes) -> FailedEntry:
        """The entry on line `raw`; ValueError when it is not one (not JSON, no string id or reason)."""
        entry = orjson.loads(raw)
        if not isinstance(entry, dict):
            raise ValueError(f"a JSON {type(entry).__name__}, not an object")
        record_id, reason = entry.get("id"), entry.get("reason")
        if not isinstance(record_id, str) or not isinstance(reason, str):
            raise ValueError('no string "id" and "reason"')
        cut_sha = entry.get("id_sha256")
        return cls(
            id=record_id,
            reason=reason,
            error=_typed(entry, "error", str, None),
            status=_typed(entry, "status", int, None),
            attempts=_typed(entry, "attempts", int, 0),
            run=_typed(entry, "run", int, 0),
            at=_typed(entry, "at", str, None),
            line=_typed(entry, "line", int, None),
            # Present at all (whatever its value) means the id is cut, as the format says.
            id_bytes=_typed(entry, "id_bytes", int, -1) if "id_bytes" in entry else None,
            id_sha256=cut_sha if isinstance(cut_sha, str) else None,
        )


# -- summary.json ------------------------------------------------------------------

SUMMARY_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class FileReport:
    """One records file in summary.json: name, bytes, lines, sha256 and whether it is closed."""

    name: str
    bytes: int
    lines: int
    sha256: str | None
    closed: bool

    def to_json(self) -> dict[str, Any]:
        """The file's entry in summary.json's `archive.files`: its fields, by their names."""
        return {f.name: getattr(self, f.name) for f in fields(FileReport)}

    @classmethod
    def from_json(cls, entry: object) -> FileReport:
        """The file listed as `entry`; ValueError when it is not one."""
        if not isinstance(entry, dict):
            raise ValueError(f"a file entry that is a JSON {type(entry).__name__}")
        sha = entry.get("sha256")
        return cls(
            name=_required(entry, "name", str),
            bytes=_required(entry, "bytes", int),
            lines=_required(entry, "lines", int),
            sha256=sha if isinstance(sha, str) else None,
            closed=entry.get("closed") is True,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """summary.json: what a run did (written by the archive at the end of every run).

    Read back, `run`, the record count and the files are required; the rest
    take their defaults when missing (a summary of an older version lacks some).
    """

    run: int
    status: str = ""
    exit_code: int = 0
    started_at: str = ""
    finished_at: str = ""
    elapsed_s: float = 0.0
    records_per_s: float = 0.0
    manifest: str = ""
    base_url: str = ""
    proxy: str | None = None
    shard: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    failed_by_reason: Mapping[str, int] = field(default_factory=dict)
    pacing: Mapping[str, Any] = field(default_factory=dict)
    #: Records in every file.
    records: int = 0
    bytes: int = 0
    files: tuple[FileReport, ...] = ()
    #: Lines of failed.ndjson as this run left it.
    failed_listed: int = 0
    superseded_to: str | None = None
    version: int = SUMMARY_VERSION

    def to_json(self) -> dict[str, Any]:
        """The summary.json document."""
        return {
            "summary_version": self.version,
            "run": self.run,
            "status": self.status,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": self.elapsed_s,
            "records_per_s": self.records_per_s,
            "manifest": stored_name(self.manifest),
            "base_url": self.base_url,
            "proxy": self.proxy,
            "shard": self.shard,
            "counts": dict(self.counts),
            "failed_by_reason": dict(self.failed_by_reason),
            "pacing": dict(self.pacing),
            "archive": {
                "records": self.records,
                "bytes": self.bytes,
                "files": [f.to_json() for f in self.files],
                "failed_listed": self.failed_listed,
                "superseded_to": self.superseded_to,
            },
        }

    def to_bytes(self) -> builtins.bytes:
        """The file's bytes: indented JSON and a newline."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_bytes(cls, data: builtins.bytes) -> Summary:
        """The summary in `data`; ValueError when it is not one this exporter writes."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        archive = doc.get("archive")
        if not isinstance(archive, dict):
            raise ValueError('no "archive" object')
        files = archive.get("files")
        if not isinstance(files, list):
            raise ValueError('no "archive.files" list')

        def mapping(key: str) -> dict[str, Any]:
            value = doc.get(key)
            return value if isinstance(value, dict) else {}

        return cls(
            run=_required(doc, "run", int),
            status=_typed(doc, "status", str, ""),
            exit_code=_typed(doc, "exit_code", int, 0),
            started_at=_typed(doc, "started_at", str, ""),
            finished_at=_typed(doc, "finished_at", str, ""),
            elapsed_s=float(_typed(doc, "elapsed_s", (int, float), 0.0)),
            records_per_s=float(_typed(doc, "records_per_s", (int, float), 0.0)),
            manifest=_typed(doc, "manifest", str, ""),
            base_url=_typed(doc, "base_url", str, ""),
            proxy=_typed(doc, "proxy", str, None),
            shard=_typed(doc, "shard", str, None),
            counts=mapping("counts"),
            failed_by_reason=mapping("failed_by_reason"),
            pacing=mapping("pacing"),
            records=_required(archive, "records", int),
            bytes=_typed(archive, "bytes", int, 0),
            files=tuple(FileReport.from_json(f) for f in files),
            failed_listed=_typed(archive, "failed_listed", int, 0),
            superseded_to=_typed(archive, "superseded_to", str, None),
            version=_typed(doc, "summary_version", int, SUMMARY_VERSION),
        )


def _typed(entry: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """`entry[key]` when it is a `kind` (a bool is no int), else `default`."""
    value = entry.get(key)
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    return default


def _required(entry: Mapping[str, Any], key: str, kind: type) -> Any:
    """`entry[key]`, which must be a `kind` (a bool is no int); ValueError naming the key if not."""
    value = entry.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f'"{key}" is {"missing" if key not in entry else type(value).__name__}')
    return value
