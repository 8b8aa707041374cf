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
from typing import NamedTuple

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


class LineCutter:
    """Cuts a stream of byte chunks into numbered lines, none held beyond `limit` bytes.

    `cut` yields each line without its newline; a line with none is the
    stream's last. `lines` counts the lines yielded before the chunk being
    read, so a reader whose chunks fail part-way can say after which line.
    """

    __slots__ = ("limit", "lines", "strip_bom")

    def __init__(self, limit: int, *, strip_bom: bool = False) -> None:
        self.limit = limit
        #: Drop a UTF-8 byte order mark before the first line (manifests saved by some editors have one).
        self.strip_bom = strip_bom
        self.lines = 0

    def cut(self, chunks: Iterable[bytes]) -> Iterator[Line]:
        """The numbered lines of `chunks`; a longer one than `limit` as an `Overlong`."""
        limit = self.limit
        bom = _BOM if self.strip_bom else b""
        number = 0
        held: list[bytes] = []  # the start of a line that spans chunks
        held_bytes = 0
        over: Overlong | None = None  # the line being skipped, once it is known to be too long
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
                    yield number, _bounded(first.removeprefix(bom) if number == 1 and bom else first, limit)
                rest = pieces[1:]
                if rest and max(map(len, rest)) <= limit:
                    # The common case, kept out of Python bytecode: millions of short lines.
                    yield from zip(itertools.count(number + 1), rest)
                    number += len(rest)
                else:
                    for piece in rest:
                        number += 1
                        yield number, _bounded(piece, limit)
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
            yield number + 1, over
        elif held:
            last = b"".join(held)
            if number == 0 and bom:
                last = last.removeprefix(bom)
            yield number + 1, _bounded(last, limit)


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
