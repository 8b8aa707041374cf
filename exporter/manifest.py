"""Manifests: streaming readers of recording ids, and the rule for what a sane id is.

A manifest is plain text (one id a line, blank lines and `#` comments skipped),
CSV with an `id` column, or NDJSON objects with an `"id"` key; any of them may be
gzip- or zstd-compressed, which is told from the first bytes rather than the
name so that standard input works too. Readers are generators over the open
stream: a manifest of ten million ids never sits in memory whole.

Bytes become lines in `manifest_stream.py`, which bounds what they can cost
(line length, decompression, integrity of compressed files); this module
turns lines into ids.

A line that cannot be read (not UTF-8, not JSON, no `id`, too long, a damaged
CSV row) does not stop the run: it is yielded as an `Entry` with a `problem`,
so the run reports it by line number and carries on with the rest. Only a
manifest that cannot be read at all (missing file, damaged compressed data, a
CSV header without `id`) raises `ManifestError`.

Why one module of this size: the three manifest formats share one rule for a sane id and
one streaming reader interface; the bytes-to-lines part is already `manifest_stream.py`.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import itertools
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, NamedTuple

import orjson

from .config import ManifestFormat, ManifestSource
from .errors import ManifestError
from .manifest_stream import (
    MAX_LINE_BYTES,
    Line,
    LineBatch,
    Overlong,
    PlainFile,
    line_batches,
    open_stream,
)
from .manifest_stream import estimate_lines as estimate_lines

MAX_ID_CHARS = 256
#: The most of a bad line a report quotes, in characters.
_SNIPPET_CHARS = 80

# Anything that could end or escape a URL path segment once decoded by a sloppy
# server, or that no sane id contains. ASCII ids (nearly all) are checked with
# one regex; others character by character against the Unicode categories for
# controls, format characters (zero-width, bidi, tags), surrogates, private use,
# unassigned code points and separators, which cover every invisible character
# that makes two different ids look the same in a terminal.
_BAD_ASCII = re.compile(r"[\x00-\x20\x7f/\\]")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


# The same for a chunk of ASCII lines joined by newlines (which no line holds).
_BAD_ASCII_JOINED = re.compile(rb"[\x00-\x09\x0b-\x20\x7f/\\]")


# What surrogateescape makes of bytes that are not UTF-8.
_UNDECODED = re.compile(r"[\udc80-\udcff]")


class Entry(NamedTuple):
    """One manifest line: a candidate id, or the raw text and what is wrong with it."""

    line: int
    value: str
    problem: str | None = None


def id_problem(candidate: str) -> str | None:
    """Why `candidate` must never be sent as an id, or None when it is a sane id.

    Kept strict on purpose: an id is spliced into a URL that carries the token,
    so anything that could be read as another path (`../admin`) is refused even
    though the client percent-encodes every id as one segment anyway.
    """
    if not candidate:
        return "empty id"
    if len(candidate) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters ({len(candidate)})"
    if candidate in (".", ".."):
        return f"{candidate!r} is a path segment, not an id"
    if candidate.isascii():
        bad = _BAD_ASCII.search(candidate)
        if bad is not None:
            return f"contains {bad.group()!r} at position {bad.start()}"
        return None
    for position, char in enumerate(candidate):
        if char in "/\\" or unicodedata.category(char) in _BAD_CATEGORIES:
            return f"contains {char!r} at position {position}"
    return None


def sane_ascii_lines(lines: list[bytes]) -> bool:
    """Whether every one of these stripped plain-text lines is an entry holding a sane ASCII id.

    The common case, told for a whole chunk with a few calls in C; then each
    line's entry is its text and `id_problem` has nothing to say about it.
    """
    if not lines or b"" in lines or b"." in lines or b".." in lines:
        return False
    try:
        joined = b"\n".join(lines)
    except TypeError:  # an over-long line
        return False
    return (
        joined.isascii()
        and not joined.startswith(b"#")
        and b"\n#" not in joined
        and max(map(len, lines)) <= MAX_ID_CHARS
        and _BAD_ASCII_JOINED.search(joined) is None
    )


@contextlib.contextmanager
def open_manifest(
    source: ManifestSource,
    stdin: BinaryIO | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    what: str = "manifest",
) -> Iterator[ManifestEntries]:
    """Open a manifest and yield an iterator of its entries; closes the file afterwards.

    `what` names the file in the error when it cannot be opened (`get --ids-file` reads one too).

    Nothing is read until the first entry is asked for, so the integrity pass
    over a compressed manifest runs wherever the entries are consumed (the
    exporter's reader thread), not here.
    """
    with contextlib.ExitStack() as stack:
        if source.path is None:
            raw: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        else:
            try:
                raw = stack.enter_context(open(source.path, "rb"))
            except OSError as exc:
                raise ManifestError(f"cannot open {what} {source.display}: {exc.strerror or exc}") from exc
        yield ManifestEntries(
            lambda: open_stream(raw, source.display, stack),
            _format_for(source),
            source.display,
            max_line_bytes,
            file=raw if source.path is not None else None,
        )


class ManifestEntries:
    """A manifest's entries, read lazily; a plain-text manifest's lines can also be had in raw batches.

    An ordinary iterator of `Entry` for everyone. The planner, which handles
    millions of lines, takes a plain-text manifest's lines a chunk at a time
    instead (`text_batches`) and does most of its work on whole batches in C.
    """

    __slots__ = ("_batches", "_display", "_file", "_format", "_limit", "_make", "_others", "_pending")

    def __init__(
        self,
        make_chunks: Callable[[], Iterable[bytes]],
        fmt: ManifestFormat,
        display: str,
        limit: int,
        *,
        file: BinaryIO | None = None,
    ) -> None:
        self._make: Callable[[], Iterable[bytes]] | None = make_chunks
        self._file = file
        self._format = fmt
        self._display = display
        self._limit = limit
        self._batches: Iterator[LineBatch] | None = None
        self._others: Iterator[Entry] | None = None
        self._pending: collections.deque[Entry] = collections.deque()

    def _start(self) -> None:
        """Open the stream and settle the format (sniffed from the first line that decides it)."""
        if self._make is None:
            return
        make, self._make = self._make, None
        batches = line_batches(make(), self._display, self._limit)
        fmt = self._format
        if fmt == "auto":
            fmt, batches = _sniff(batches)
        self._format = fmt
        if fmt == "text":
            self._batches = batches
        else:
            lines = _numbered(batches)
            self._others = (
                _ndjson_entries(lines) if fmt == "ndjson" else _csv_entries(lines, self._display, self._limit)
            )

    def __iter__(self) -> Iterator[Entry]:
        return self

    def __next__(self) -> Entry:
        while True:
            if self._pending:
                return self._pending.popleft()
            self._start()
            if self._others is not None:
                return next(self._others)
            assert self._batches is not None
            batch = next(self._batches)
            self._pending.extend(_text_entries(zip(itertools.count(batch.first), batch.lines)))

    def push_back(self, entry: Entry) -> None:
        """Put an entry taken with `next` back in front (a run reads the first before opening the archive)."""
        self._pending.appendleft(entry)

    def plain_file(self) -> PlainFile | None:
        """A plain-text manifest read from a regular, uncompressed file: that file, to read at any offset."""
        self._start()
        if self._batches is None or self._file is None:
            return None
        return PlainFile.of(self._file, self._display, self._limit)

    def text_batches(self) -> tuple[list[Entry], Iterator[LineBatch]] | None:
        """For a plain-text manifest: the entries read but not taken yet, then its raw lines, batch by batch.

        A raw line becomes an entry as `text_entries` says. None for CSV and NDJSON.
        """
        self._start()
        if self._batches is None:
            return None
        pending = list(self._pending)
        self._pending.clear()
        return pending, self._batches


def _format_for(source: ManifestSource) -> ManifestFormat:
    """The format named by the option, else by the file name, else `auto` (sniffed)."""
    if source.format != "auto" or source.path is None:
        return source.format
    name = source.path.name.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(suffix)
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    if name.endswith((".txt", ".ids", ".lst")):
        return "text"
    return "auto"


def read_entries(
    stream: Iterable[bytes], fmt: ManifestFormat, display: str, *, max_line_bytes: int = MAX_LINE_BYTES
) -> ManifestEntries:
    """Entries of a binary stream (chunks of any size) in the given format (`auto` sniffs the first line)."""
    return ManifestEntries(lambda: stream, fmt, display, max_line_bytes)


def _numbered(batches: Iterable[LineBatch]) -> Iterator[Line]:
    return itertools.chain.from_iterable(zip(itertools.count(b.first), b.lines) for b in batches)


def _sniff(batches: Iterator[LineBatch]) -> tuple[ManifestFormat, Iterator[LineBatch]]:
    """Guess the format from the first line that is not blank or a comment.

    Only that line's batch is held: blank and comment lines before it mean
    nothing in any format, so a manifest of a million blank lines costs no memory.
    """
    for first, lines, padded in batches:
        for at, raw in enumerate(lines):
            text = (raw.head if isinstance(raw, Overlong) else raw).strip()
            if not text or text.startswith(b"#"):
                continue
            fmt: ManifestFormat = "text"
            if text.startswith(b"{"):
                fmt = "ndjson"
            elif b"," in text or text.lower() in (b"id", b'"id"'):
                fmt = "csv"
            return fmt, itertools.chain([LineBatch(first + at, lines[at:], padded)], batches)
    return "text", iter(())


def text_entries(lines: Iterable[Line]) -> Iterator[Entry]:
    """The entries of numbered plain-text lines (a blank or `#` line has none)."""
    return _text_entries(iter(lines))


def _text_entries(lines: Iterator[Line]) -> Iterator[Entry]:
    for number, raw in lines:
        if isinstance(raw, Overlong):
            if not raw.head.lstrip().startswith(b"#"):
                yield _overlong_entry(number, raw)
            continue
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            yield Entry(number, text.decode("utf-8"))
        except UnicodeDecodeError:
            yield Entry(number, _snippet(text), "not valid UTF-8")


def _ndjson_entries(lines: Iterator[Line]) -> Iterator[Entry]:
    for number, raw in lines:
        if isinstance(raw, Overlong):
            if not raw.head.lstrip().startswith(b"#"):
                yield _overlong_entry(number, raw)
            continue
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            # orjson refuses nesting over 1024 levels and numbers beyond a double: a bad line, not a crash.
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Entry(number, _snippet(raw), f"not a JSON object: {exc}")
            continue
        if not isinstance(obj, dict) or "id" not in obj:
            yield Entry(number, _snippet(raw), 'no "id" key')
            continue
        value = obj["id"]
        if isinstance(value, str):
            yield Entry(number, value)
        elif isinstance(value, int) and not isinstance(value, bool):
            yield Entry(number, str(value))
        else:
            yield Entry(number, _snippet(raw), f'"id" is {type(value).__name__}, not a string')


def _csv_entries(lines: Iterator[Line], display: str, limit: int) -> Iterator[Entry]:
    rows = _CsvRows(lines, limit)
    column = -1
    for item in rows:
        if isinstance(item, Entry):
            if column < 0:
                raise ManifestError(
                    f"manifest {display}: its CSV header (line {item.line}) cannot be read: {item.problem}; "
                    "fix the header, or pass --format text"
                )
            yield item
            continue
        number, row = item
        if not row or all(not cell.strip() for cell in row):
            continue
        if column < 0:
            header = [cell.strip().lower() for cell in row]
            if "id" not in header:
                raise ManifestError(
                    f"manifest {display} looks like CSV but its header has no 'id' column "
                    f"(columns: {', '.join(header)[:200]}); add one, or pass --format text"
                )
            column = header.index("id")
            rows.in_header = False
            continue
        if column >= len(row):
            text = ",".join(row).encode("utf-8", "surrogateescape")
            yield Entry(number, _snippet(text), "row has no id column")
            continue
        value = row[column].strip()
        if _UNDECODED.search(value):
            yield Entry(number, _snippet(value.encode("utf-8", "surrogateescape")), "not valid UTF-8")
            continue
        yield Entry(number, value)


class _CsvRows:
    """CSV rows with the number of their first line, each at most `limit` bytes; damaged rows as Entries.

    The csv module alone stops for good at a field over its size limit, and a
    stray quote silently joins every line after it into one field, ids and
    all. Here csv reads in strict mode, and a row that it finds damaged, that
    is still open after `limit` bytes, or that runs into an over-long line is
    reported as a problem `Entry` at its first line; reading starts again at
    the line after that one, so the ids around the damage are read as if it
    were not there. Only the lines of the row being read are held.
    """

    __slots__ = ("_held", "_held_bytes", "_limit", "_replay", "_source", "_stop", "in_header")

    def __init__(self, lines: Iterator[Line], limit: int) -> None:
        self._source = lines
        self._limit = limit
        #: Lines to read (again) before the source's next.
        self._replay: collections.deque[tuple[int, bytes | Overlong]] = collections.deque()
        #: The lines the current row has taken so far.
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        #: Why the feed ended a row early, and where.
        self._stop: Entry | None = None
        #: Before the header, `#` lines are comments (as the format sniffer allows).
        self.in_header = True
        # csv's own limit (131,072 characters, process-wide) would refuse long notes in
        # other columns; the row limit above bounds memory instead.
        if csv.field_size_limit() < limit:
            csv.field_size_limit(limit)

    def __iter__(self) -> Iterator[tuple[int, list[str]] | Entry]:
        while True:
            self._forget()
            reader = csv.reader(self._feed(), strict=True)
            while True:
                try:
                    row = next(reader, None)
                except csv.Error as exc:
                    # A feed ended early inside a quoted field shows as "unexpected end of data".
                    first, text = self._held[0]
                    problem: Entry = self._stop or Entry(first, _snippet(text), f"damaged CSV row: {exc}")
                    break
                if self._stop is not None:
                    problem = self._stop
                    break
                if row is None:
                    return
                yield self._held[0][0], row
                self._forget()
            # Read again every line of the damaged row but its first.
            self._replay.extendleft(reversed(self._held[1:]))
            yield problem

    def _forget(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._stop = None

    def _feed(self) -> Iterator[str]:
        """Lines for csv.reader; ends early (leaving `_stop`) when the row must be given up."""
        while True:
            if self._replay:
                number, raw = self._replay.popleft()
            else:
                item = next(self._source, None)
                if item is None:
                    return
                number, raw = item
            if isinstance(raw, Overlong):
                if not self._held:
                    if self.in_header and raw.head.lstrip().startswith(b"#"):
                        continue
                    self._stop = _overlong_entry(number, raw)
                    return
                self._replay.appendleft((number, raw))
                first, text = self._held[0]
                self._stop = Entry(first, _snippet(text), f"CSV row runs into the over-long line {number}")
                return
            if not self._held and self.in_header and raw.lstrip().startswith(b"#"):
                continue
            if self._held and self._held_bytes + len(raw) > self._limit:
                self._replay.appendleft((number, raw))
                first, text = self._held[0]
                self._stop = Entry(
                    first,
                    _snippet(text),
                    f"CSV row still open after {self._held_bytes} bytes (a stray quote?): skipped",
                )
                return
            self._held.append((number, raw))
            self._held_bytes += len(raw) + 1
            yield raw.decode("utf-8", "surrogateescape") + "\n"


def _overlong_entry(number: int, line: Overlong) -> Entry:
    problem = f"line of {line.size} bytes, over the {line.limit}-byte limit: skipped"
    start = _snippet(line.head).removesuffix("...")[: _SNIPPET_CHARS - 3]
    return Entry(number, start + "...", problem)


def _snippet(raw: bytes) -> str:
    """A short printable rendering of a bad line, for the error report."""
    text = raw.strip()[: 4 * _SNIPPET_CHARS].decode("utf-8", "backslashreplace")
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."
