"""Manifests: streaming readers of recording ids, and the rule for what a sane id is.

A manifest is plain text (one id a line, blank lines and `#` comments skipped),
CSV with an `id` column, or NDJSON objects with an `"id"` key; any of them may be
gzip- or zstd-compressed, which is told from the first bytes rather than the
name so that standard input works too. Readers are generators over the open
stream: a manifest of ten million ids never sits in memory whole.

A manifest is untrusted input, and every cost it can cause is bounded:

- a line (or CSV row) is held up to `MAX_LINE_BYTES`; a longer one is skipped
  while it streams past and reported as a bad line, so one 200 MB line costs
  no more memory than a short one;
- decompression hands out bounded chunks, so a small file that expands to
  gigabytes (a "zip bomb") costs time, not memory;
- a compressed manifest is decompressed once in full, its checksums checked,
  before its first id is used (`_check_whole`): flipped bytes would otherwise
  decode to made-up ids that are requested and archived before the checksum
  at the end of the stream fails. Standard input and pipes cannot be read
  twice, so compressed ones are first copied to an unnamed temporary file.

A line that cannot be read (not UTF-8, not JSON, no `id`, too long, a damaged
CSV row) does not stop the run: it is yielded as an `Entry` with a `problem`,
so the run reports it by line number and carries on with the rest. Only a
manifest that cannot be read at all (missing file, damaged compressed data, a
CSV header without `id`) raises `ManifestError`.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import io
import itertools
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple, cast

import orjson
import zstandard

from .config import ManifestFormat, ManifestSource
from .errors import ManifestError

MAX_ID_CHARS = 256
#: A longer line, or CSV row, is skipped as it streams past and reported as a bad line.
MAX_LINE_BYTES = 1 << 20

_READ_BYTES = 1 << 16
#: The most of a bad line a report quotes, in characters, and the bytes kept to render them.
_SNIPPET_CHARS = 80
_HEAD_BYTES = 4 * _SNIPPET_CHARS
#: zstd input fed to the decompressor at a time. A zstd block of 4 bytes can stand for
#: 128 KiB, so 32 bytes in give at most about 1 MiB out, whatever the file holds.
_ZSTD_SLICE_BYTES = 32
_ZSTD_HEADER_MAX_BYTES = 18
#: The largest zstd window a manifest may ask the decompressor to hold: `zstd -19` uses 8 MiB,
#: `--long` and `--ultra` up to 128 MiB, which a hostile frame would make us fill.
_ZSTD_WINDOW_MAX_BYTES = 32 << 20
#: estimate_lines reads this much of a file, and extrapolates beyond it.
_ESTIMATE_BYTES = 64 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"

# Anything that could end or escape a URL path segment once decoded by a sloppy
# server, or that no sane id contains. ASCII ids (nearly all) are checked with
# one regex; others character by character against the Unicode categories for
# controls, format characters (zero-width, bidi, tags), surrogates, private use,
# unassigned code points and separators, which cover every invisible character
# that makes two different ids look the same in a terminal.
_BAD_ASCII = re.compile(r"[\x00-\x20\x7f/\\]")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


# What surrogateescape makes of bytes that are not UTF-8.
_UNDECODED = re.compile(r"[\udc80-\udcff]")


class Entry(NamedTuple):
    """One manifest line: a candidate id, or the raw text and what is wrong with it."""

    line: int
    value: str
    problem: str | None = None


class Overlong(NamedTuple):
    """A line longer than the limit, never held whole: its first bytes and its length."""

    head: bytes
    size: int
    limit: int

    def entry(self, number: int) -> Entry:
        problem = f"line of {self.size} bytes, over the {self.limit}-byte limit: skipped"
        start = _snippet(self.head).removesuffix("...")[: _SNIPPET_CHARS - 3]
        return Entry(number, start + "...", problem)


#: A numbered line of a manifest, without its line end.
Line = tuple[int, bytes | Overlong]

#: What can go wrong while reading (decompressing) a manifest's bytes.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError)


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


@contextlib.contextmanager
def open_manifest(
    source: ManifestSource, stdin: BinaryIO | None = None, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Iterator[Entry]]:
    """Open a manifest and yield an iterator of its entries; closes the file afterwards.

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
                raise ManifestError(f"cannot open manifest {source.display}: {exc.strerror or exc}") from exc
        yield _entries(raw, _format_for(source), source.display, stack, max_line_bytes)


def _entries(
    raw: BinaryIO, fmt: ManifestFormat, display: str, stack: contextlib.ExitStack, max_line_bytes: int
) -> Iterator[Entry]:
    chunks = _decompressed(raw, display, stack)
    yield from read_entries(chunks, fmt, display, max_line_bytes=max_line_bytes)


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


def _decompressed(raw: BinaryIO, display: str, stack: contextlib.ExitStack) -> Iterator[bytes]:
    """The stream's bytes in bounded chunks, decompressed (once proven intact) when gzip or zstd."""
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
    head = buffered.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        kind = "gzip"
    elif head.startswith(_ZSTD_MAGIC):
        kind = "zstd"
    else:
        return _plain_chunks(buffered)
    source: BinaryIO = buffered if _is_regular_file(buffered) else _spooled(buffered, display, stack)
    start = source.tell()
    _check_whole(source, kind, display)
    source.seek(start)
    return _gzip_chunks(source) if kind == "gzip" else _zstd_chunks(source, display)


def _is_regular_file(stream: BinaryIO) -> bool:
    """Whether the stream is a file that can be read twice (not a pipe, socket or terminal)."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.seekable()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False


def _spooled(stream: BinaryIO, display: str, stack: contextlib.ExitStack) -> BinaryIO:
    """A copy of a compressed stream that cannot be read twice, in an unnamed temporary file.

    Costs the compressed size on disk (in $TMPDIR) and delays the first
    request until the stream has ended; in exchange a damaged stream is
    refused before any id of it is used, as a damaged file is.
    """
    spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - the stack closes it
    try:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.flush()
        spool.seek(0)
    except OSError as exc:
        raise ManifestError(
            f"cannot copy the compressed manifest {display} to a temporary file to check it "
            f"before use: {exc.strerror or exc}; set TMPDIR to a directory with room, or pass the file's path"
        ) from exc
    return cast(BinaryIO, spool)


def _check_whole(source: BinaryIO, kind: str, display: str) -> None:
    """Decompress all of `source`, discarding the output, so damage is found before any id is used.

    gzip ends each member with a CRC-32 and the length; a zstd frame's XXH64
    is checked as it ends (frames without one are refused). No line
    is split or parsed here: the pass costs one decompression.
    """
    try:
        for _ in _gzip_chunks(source) if kind == "gzip" else _zstd_chunks(source, display):
            pass
    except _READ_ERRORS as exc:
        raise ManifestError(
            f"manifest {display} is damaged ({kind}: {exc}); none of its ids were used: "
            "fix or re-create the file and run again"
        ) from exc


def _plain_chunks(stream: io.BufferedReader) -> Iterator[bytes]:
    # read1: whatever is there, so ids piped in one by one are handled as they come.
    while chunk := stream.read1(_READ_BYTES):
        yield chunk


def _gzip_chunks(source: BinaryIO) -> Iterator[bytes]:
    """Decompressed chunks of concatenated gzip members; GzipFile bounds each read's output."""
    with gzip.GzipFile(fileobj=source, mode="rb") as unzipped:
        while chunk := unzipped.read1(_READ_BYTES):
            yield chunk


def _zstd_chunks(source: BinaryIO, display: str) -> Iterator[bytes]:
    """Decompressed chunks of concatenated zstd frames, each at most about 1 MiB.

    zstandard's one-shot and object decompressors return everything an input
    chunk expands to, and its stream reader takes a frame cut short for a
    complete one; so the input is fed in small slices, and a frame still open
    at the end of the input is an error.
    """
    decompressor = zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW_MAX_BYTES)
    frame: Any = None
    data = b""
    at = 0
    while True:
        if len(data) - at < _ZSTD_HEADER_MAX_BYTES:
            data = data[at:] + source.read(_READ_BYTES)
            at = 0
        if at == len(data):
            if frame is not None:
                raise ValueError("the zstd data ends in the middle of a frame (the file is truncated)")
            return
        if frame is None:
            _check_frame_header(data[at : at + _ZSTD_HEADER_MAX_BYTES], display)
            frame = decompressor.decompressobj()
        piece = data[at : at + _ZSTD_SLICE_BYTES]
        at += len(piece)
        out = frame.decompress(piece)
        if frame.eof:
            at -= len(frame.unused_data)
            frame = None
        if out:
            yield out


def _check_frame_header(header: bytes, display: str) -> None:
    """Refuse a zstd frame without a content checksum (damage inside it could not be detected)
    or one that needs a window over `_ZSTD_WINDOW_MAX_BYTES` of memory."""
    if header[1:4] == b"\x2a\x4d\x18" and header[:1] and header[0] & 0xF0 == 0x50:
        return  # a skippable frame (magic 0x184D2A5?): it holds no ids
    try:
        frame = zstandard.get_frame_parameters(header)
    except zstandard.ZstdError:
        return  # not a frame header: decompressing it fails with the reason
    if frame.window_size > _ZSTD_WINDOW_MAX_BYTES:
        raise ManifestError(
            f"manifest {display} is zstd-compressed with a {frame.window_size >> 20} MiB window, over the "
            f"{_ZSTD_WINDOW_MAX_BYTES >> 20} MiB allowed; compress it again without --long or --ultra"
        )
    if not frame.has_checksum:
        raise ManifestError(
            f"manifest {display} is zstd-compressed without checksums, so damage in it could not be "
            "detected before its ids are used; compress it with the zstd command (it adds them by "
            "default) or with gzip"
        )


def read_entries(
    stream: Iterable[bytes], fmt: ManifestFormat, display: str, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Entry]:
    """Entries of a binary stream (chunks of any size) in the given format (`auto` sniffs the first line)."""
    lines: Iterator[Line] = _lines(stream, display, max_line_bytes)
    if fmt == "auto":
        fmt, lines = _sniff(lines)
    if fmt == "text":
        return _text_entries(lines)
    if fmt == "ndjson":
        return _ndjson_entries(lines)
    return _csv_entries(lines, display, max_line_bytes)


def _lines(chunks: Iterable[bytes], display: str, limit: int) -> Iterator[Line]:
    """Numbered lines of a chunked stream, none held beyond `limit` bytes; the BOM dropped.

    A longer line becomes an `Overlong` (its first bytes and its length) as
    its remainder streams past. Read errors become ManifestError.
    """
    number = 0
    held: list[bytes] = []  # the start of a line that spans chunks
    held_bytes = 0
    over: Overlong | None = None  # the line being skipped, once it is known to be too long
    try:
        for chunk in chunks:
            pieces = chunk.split(b"\n")
            tail = pieces.pop()
            if pieces:
                # The first piece ends the line that was held or is being skipped.
                number += 1
                if over is not None:
                    yield number, over._replace(size=over.size + len(pieces[0]))
                    over = None
                else:
                    held.append(pieces[0])
                    first = b"".join(held)
                    held.clear()
                    held_bytes = 0
                    yield number, _bounded(first.removeprefix(_BOM) if number == 1 else first, limit)
                rest = pieces[1:]
                if rest and max(map(len, rest)) <= limit:
                    # The common case, kept out of Python bytecode: millions of short lines.
                    yield from zip(itertools.count(number + 1), rest)
                    number += len(rest)
                else:
                    for piece in rest:
                        number += 1
                        yield number, _bounded(piece, limit)
            if not tail:
                continue
            if over is not None:
                over = over._replace(size=over.size + len(tail))
                continue
            held.append(tail)
            held_bytes += len(tail)
            if held_bytes > limit:
                first = held[0] if len(held[0]) >= _HEAD_BYTES else b"".join(held)
                over = Overlong(first[: min(_HEAD_BYTES, limit)], held_bytes, limit)
                held.clear()
                held_bytes = 0
    except _READ_ERRORS as exc:
        raise ManifestError(
            f"manifest {display} is damaged after line {number}: {exc}; "
            "the ids before it were processed, fix or re-create the file and run again"
        ) from exc
    if over is not None:
        yield number + 1, over
    elif held:
        last = b"".join(held)
        if number == 0:
            last = last.removeprefix(_BOM)
        yield number + 1, _bounded(last, limit)


def _bounded(line: bytes, limit: int) -> bytes | Overlong:
    return line if len(line) <= limit else Overlong(line[: min(_HEAD_BYTES, limit)], len(line), limit)


def _sniff(lines: Iterator[Line]) -> tuple[ManifestFormat, Iterator[Line]]:
    """Guess the format from the first line that is not blank or a comment.

    Only that line is held: blank and comment lines before it mean nothing in
    any format, so a manifest of a million blank lines costs no memory.
    """
    for number, raw in lines:
        text = (raw.head if isinstance(raw, Overlong) else raw).strip()
        if not text or text.startswith(b"#"):
            continue
        fmt: ManifestFormat = "text"
        if text.startswith(b"{"):
            fmt = "ndjson"
        elif b"," in text or text.lower() in (b"id", b'"id"'):
            fmt = "csv"
        return fmt, _chain_one((number, raw), lines)
    return "text", iter(())


def _chain_one(first: Line, rest: Iterator[Line]) -> Iterator[Line]:
    yield first
    yield from rest


def _text_entries(lines: Iterator[Line]) -> Iterator[Entry]:
    for number, raw in lines:
        if isinstance(raw, Overlong):
            if not raw.head.lstrip().startswith(b"#"):
                yield raw.entry(number)
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
                yield raw.entry(number)
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
                    self._stop = raw.entry(number)
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


def _snippet(raw: bytes) -> str:
    """A short printable rendering of a bad line, for the error report."""
    text = raw.strip()[:_HEAD_BYTES].decode("utf-8", "backslashreplace")
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."


def estimate_lines(source: ManifestSource, *, sample_bytes: int = _ESTIMATE_BYTES) -> int | None:
    """Line count of an uncompressed manifest file, for the progress bar; None when unknown.

    Only an estimate (headers, comments and blank lines count too), never used
    for anything but the bar's total, so it costs little: it reads at most the
    first `sample_bytes` (64 MiB) and extrapolates by size, and it reads nothing but a regular
    file, since a pipe (`<(zcat ids.gz)`) read here would lose its lines to
    the real reader.
    """
    if source.path is None:
        return None
    try:
        fd = os.open(source.path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with open(fd, "rb", closefd=True) as handle:
        try:
            info = os.fstat(fd)
            size = info.st_size
            if not stat.S_ISREG(info.st_mode) or handle.read(4).startswith((_GZIP_MAGIC, _ZSTD_MAGIC)):
                return None
            handle.seek(0)
            count = read = 0
            last = b""
            while read < sample_bytes and (chunk := handle.read(min(1 << 20, sample_bytes - read))):
                count += chunk.count(b"\n")
                read += len(chunk)
                last = chunk
        except OSError:
            return None
    if read < size:
        return round(count * size / read) if read else None
    return count + (1 if last and not last.endswith(b"\n") else 0)
