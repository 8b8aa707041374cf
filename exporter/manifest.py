"""Manifests: streaming readers of recording ids, and the rule for what a sane id is.

A manifest is plain text (one id a line, blank lines and `#` comments skipped),
CSV with an `id` column, or NDJSON objects with an `"id"` key; any of them may be
gzip- or zstd-compressed, which is told from the first bytes rather than the
name so that standard input works too. Readers are generators over the open
stream: a manifest of ten million ids never sits in memory whole.

A line that cannot be read (not UTF-8, not JSON, no `id`) does not stop the
run: it is yielded as an `Entry` with a `problem`, so the run reports it by line
number and carries on with the rest. Only a manifest that cannot be read at all
(missing file, CSV header without `id`) raises `ManifestError`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple, cast

import orjson
import zstandard

from .codecs import zstd_lines
from .config import ManifestFormat, ManifestSource
from .errors import ManifestError

MAX_ID_CHARS = 256

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
def open_manifest(source: ManifestSource, stdin: BinaryIO | None = None) -> Iterator[Iterator[Entry]]:
    """Open a manifest and yield an iterator of its entries; closes the file afterwards."""
    with contextlib.ExitStack() as stack:
        if source.path is None:
            raw: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        else:
            try:
                raw = stack.enter_context(open(source.path, "rb"))
            except OSError as exc:
                raise ManifestError(f"cannot open manifest {source.display}: {exc.strerror or exc}") from exc
        stream = stack.enter_context(_decompressed(raw))
        yield read_entries(stream, _format_for(source), source.display)


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


@contextlib.contextmanager
def _decompressed(raw: BinaryIO) -> Iterator[Iterable[bytes]]:
    """The stream's lines, decompressed when its first bytes say gzip or zstd."""
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
    head = buffered.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        with gzip.GzipFile(fileobj=buffered, mode="rb") as unzipped:
            yield cast(BinaryIO, unzipped)
    elif head.startswith(_ZSTD_MAGIC):
        yield zstd_lines(buffered)
    else:
        yield buffered


def read_entries(stream: Iterable[bytes], fmt: ManifestFormat, display: str) -> Iterator[Entry]:
    """Entries of a binary line stream in the given format (`auto` sniffs the first line)."""
    lines: Iterator[tuple[int, bytes]] = _numbered(stream, display)
    if fmt == "auto":
        fmt, lines = _sniff(lines)
    if fmt == "text":
        return _text_entries(lines)
    if fmt == "ndjson":
        return _ndjson_entries(lines)
    return _csv_entries(lines, display)


def _numbered(stream: Iterable[bytes], display: str) -> Iterator[tuple[int, bytes]]:
    """Lines with 1-based numbers, the BOM dropped, and read errors turned into ManifestError."""
    number = 0
    try:
        for number, line in enumerate(stream, 1):
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            yield number, line
    except (OSError, EOFError, ValueError, zstandard.ZstdError) as exc:
        raise ManifestError(
            f"manifest {display} is damaged after line {number}: {exc}; "
            "the ids before it were processed, fix or re-create the file and run again"
        ) from exc


def _sniff(
    lines: Iterator[tuple[int, bytes]],
) -> tuple[ManifestFormat, Iterator[tuple[int, bytes]]]:
    """Guess the format from the first line that is not blank or a comment."""
    held: list[tuple[int, bytes]] = []
    fmt: ManifestFormat = "text"
    for item in lines:
        held.append(item)
        text = item[1].strip()
        if not text or text.startswith(b"#"):
            continue
        if text.startswith(b"{"):
            fmt = "ndjson"
        elif b"," in text or text.lower() in (b"id", b'"id"'):
            fmt = "csv"
        break
    return fmt, itertools.chain(held, lines)


def _text_entries(lines: Iterator[tuple[int, bytes]]) -> Iterator[Entry]:
    for number, raw in lines:
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            yield Entry(number, text.decode("utf-8"))
        except UnicodeDecodeError:
            yield Entry(number, _snippet(text), "not valid UTF-8")


def _ndjson_entries(lines: Iterator[tuple[int, bytes]]) -> Iterator[Entry]:
    for number, raw in lines:
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
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


def _csv_entries(lines: Iterator[tuple[int, bytes]], display: str) -> Iterator[Entry]:
    numbers: list[int] = [0]

    def text_lines() -> Iterator[str]:
        for number, raw in lines:
            numbers[0] = number
            if column < 0 and raw.lstrip().startswith(b"#"):
                continue  # comments before the header, as the format sniffer allows
            yield raw.decode("utf-8", "surrogateescape")

    column = -1
    reader = csv.reader(text_lines())
    for row in reader:
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
            continue
        if column >= len(row):
            yield Entry(
                numbers[0], _snippet(",".join(row).encode("utf-8", "surrogateescape")), "row has no id column"
            )
            continue
        value = row[column].strip()
        if _UNDECODED.search(value):
            yield Entry(numbers[0], _snippet(value.encode("utf-8", "surrogateescape")), "not valid UTF-8")
            continue
        yield Entry(numbers[0], value)


def _snippet(raw: bytes) -> str:
    """A short printable rendering of a bad line, for the error report."""
    text = raw.strip().decode("utf-8", "backslashreplace")
    return text if len(text) <= 80 else text[:77] + "..."


def estimate_lines(source: ManifestSource) -> int | None:
    """Line count of an uncompressed manifest file, for the progress bar; None when unknown.

    Counting newlines runs at disk speed and is only an estimate (headers,
    comments and blank lines count too), so it is never used for anything but
    the bar's total.
    """
    if source.path is None:
        return None
    try:
        with open(source.path, "rb") as handle:
            if handle.read(4).startswith((_GZIP_MAGIC, _ZSTD_MAGIC)):
                return None
            handle.seek(0)
            count = 0
            last = b""
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk
            return count + (1 if last and not last.endswith(b"\n") else 0)
    except OSError:
        return None
