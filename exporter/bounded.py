"""Untrusted bytes and text, bounded: streams cut into lines no longer than a limit, texts cut short.

Whatever a file or a server sends, what the exporter holds of it is capped
here, so its memory does not grow with the input:

- `LineCutter` cuts a stream of byte chunks into numbered lines and holds at
  most `limit` bytes of one; a longer line becomes an `Overlong` (its start
  and its length) as the rest of it streams past, so a 200 MB line costs no
  more memory than a short one. Manifests (`manifest_stream.py`) and the
  archive's own files (`archive/reader.py`) are read through it.
- `capped` cuts a text (an error a server's bytes went into) to a few hundred
  bytes and notes its full length, so one answer cannot put 50 MB into
  failed.ndjson or a log line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple, cast

#: The start of an over-long line kept to quote in its report.
HEAD_BYTES = 320
#: Error texts are stored and logged up to this many bytes (UTF-8), then cut with their length noted.
TEXT_BYTES = 512

_BOM = b"\xef\xbb\xbf"


class Overlong(NamedTuple):
    """A line longer than the limit, never held whole: its first bytes, its length (without the newline)."""

    head: bytes
    size: int
    limit: int


#: A numbered line (from 1), without its line end.
Line = tuple[int, bytes | Overlong]


class LineBatch(NamedTuple):
    """Consecutive lines of a stream: the number of the first, the lines, and whether any may hold
    white space that `bytes.strip` would take off (False only when none does)."""

    first: int
    lines: list[bytes | Overlong]
    padded: bool = True


#: What `bytes.strip` takes off a line, but the newline (no line holds one).
_SPACES = (b" ", b"\t", b"\r", b"\x0b", b"\x0c")


class LineCutter:
    """Cuts a stream of byte chunks into numbered lines, none held beyond `limit` bytes.

    `cut` yields each line without its newline; a line with none is the
    stream's last. `batches` yields the same lines a chunk's worth at a time,
    for readers that handle millions of lines with a few calls in C per batch
    (the planner's fast path) rather than a few in Python per line. `lines`
    counts the lines yielded before the chunk being read, so a reader whose
    chunks fail part-way can say after which line.
    """

    __slots__ = ("limit", "lines", "strip_bom")

    def __init__(self, limit: int, *, strip_bom: bool = False, first_line: int = 1) -> None:
        self.limit = limit
        #: Drop a UTF-8 byte order mark before the first line (manifests saved by some editors have one).
        self.strip_bom = strip_bom
        #: `first_line` is the number of the stream's first line when it starts further on in a file
        #: (`manifest_stream.PlainFile.batches_from`); only a file's first line can start with a BOM.
        self.lines = first_line - 1

    def cut(self, chunks: Iterable[bytes]) -> Iterator[Line]:
        """The numbered lines of `chunks`; a longer one than `limit` as an `Overlong`."""
        for batch in self.batches(chunks):
            # The common case, kept out of Python bytecode: millions of short lines.
            yield from zip(itertools.count(batch.first), batch.lines)

    def batches(self, chunks: Iterable[bytes]) -> Iterator[LineBatch]:
        """The lines `cut` gives, a chunk's worth at a time."""
        limit = self.limit
        bom = _BOM if self.strip_bom else b""
        number = self.lines
        held: list[bytes] = []  # the start of a line that spans chunks
        held_bytes = 0
        over: Overlong | None = None  # the line being skipped, once it is known to be too long
        for chunk in chunks:
            pieces = chunk.split(b"\n")
            tail = pieces.pop()
            if pieces:
                lines = cast(list[bytes | Overlong], pieces)  # the same list: no copy
                # The first piece ends the line that was held or is being skipped (in place: no copy).
                first = b""
                if over is not None:
                    lines[0] = over._replace(size=over.size + len(lines[0]))
                    over = None
                else:
                    held.append(pieces[0])
                    first = b"".join(held)
                    held.clear()
                    held_bytes = 0
                    lines[0] = _bounded(first.removeprefix(bom) if number == 0 and bom else first, limit)
                padded = any(space in chunk or space in first for space in _SPACES)
                if (
                    len(pieces) > 1
                    and len(chunk) > limit
                    and max(map(len, itertools.islice(pieces, 1, None))) > limit
                ):
                    lines[1:] = [_bounded(piece, limit) for piece in itertools.islice(pieces, 1, None)]
                yield LineBatch(number + 1, lines, padded)
                number += len(lines)
                del lines, pieces
            self.lines = number
            if not tail:
                continue
            if over is not None:
                over = over._replace(size=over.size + len(tail))
                continue
            held.append(tail)
            held_bytes += len(tail)
            if held_bytes > limit:
                first = held[0] if len(held[0]) >= HEAD_BYTES else b"".join(held)
                over = Overlong(first[: min(HEAD_BYTES, limit)], held_bytes, limit)
                held.clear()
                held_bytes = 0
        if over is not None:
            yield LineBatch(number + 1, [over])
        elif held:
            last = b"".join(held)
            if number == 0 and bom:
                last = last.removeprefix(bom)
            yield LineBatch(number + 1, [_bounded(last, limit)])


def _bounded(line: bytes, limit: int) -> bytes | Overlong:
    return line if len(line) <= limit else Overlong(line[: min(HEAD_BYTES, limit)], len(line), limit)


def capped(text: str, limit: int = TEXT_BYTES) -> str:
    """`text` if it is at most `limit` bytes in UTF-8; else its first `limit` bytes and its length.

    `capped("x" * 10**6)` is 512 `x`s then `… (1,000,000 bytes)`. Cut at a
    character boundary; lone surrogates (from undecodable input) count as
    their three bytes, as `layout.reported_id` counts them.
    """
    if len(text) <= limit // 4:
        return text
    if text.isascii():  # one byte a character: no need to encode what may be megabytes
        return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} bytes)"
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    cut = limit
    while cut > 0 and raw[cut] & 0xC0 == 0x80:  # a continuation byte: the character straddles the cut
        cut -= 1
    return f"{raw[:cut].decode('utf-8', 'surrogatepass')}… ({len(raw):,} bytes)"
