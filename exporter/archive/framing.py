"""How a records file frames its lines: each group commit's lines as they are, or compressed, and back.

Each commit is compressed on its own, as one gzip member or one zstd frame.
Concatenated members and frames are themselves a valid `.gz` / `.zst` file
(`zcat`, `zstdcat`, DuckDB's `read_ndjson` read them), and every commit ends on
a frame boundary, so cutting a file back to its last committed length after a
crash leaves a complete, readable file.

Deflate is the one codec whose CPU can set the pace (30-47 ms per MB at level
6, 7 at level 1, against about 1 for zstd-3), so a gzip commit of at least
twice `GZIP_MIN_PIECE_BYTES` is deflated as pigz does it, by several threads at
once (a `DeflatePool`): cut into equal pieces, one a thread, the writer thread
deflating the first itself; each piece primed with the 32 KiB before it, so it
loses nothing to the cut, and all but the last ending in a sync flush at a byte
boundary; joined under the header `gzip.compress` writes and the CRC-32 and
length of the whole. A commit's bytes are still exactly one gzip member,
whatever its size.

Pieces are few and large (the default 1 MiB batch is cut in two on two CPUs)
because every piece costs a few trips through the GIL, each of which can wait
out the interpreter's 5 ms switch interval while the event loop is busy: pigz's
128 KiB pieces made 2 KB and 20 KB records 0.84x as fast at --rate 0, where the
event loop sets the pace, while two 512 KiB pieces made 20 KB records 1.16x as
fast and left 300 B and 2 KB ones within the noise. A commit of one piece is
byte for byte what `gzip.compress` writes.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from exporter.config import Compression

from . import layout

_NEWLINE = b"\n"

#: A gzip commit is cut into pieces of at least this many bytes, one a thread; a commit
#: under twice this is one piece, deflated in the writer thread alone. Primed pieces this
#: large lose nothing in ratio (measured on the fake API's records: 6.20x at level 6 for
#: 20 KB records, 4.16x for 3 MB ones, as in one piece), where independent members of
#: 128 KiB lost 10% (5.56x).
GZIP_MIN_PIECE_BYTES = 512 << 10
#: Deflate looks back at most 32 KiB: all a piece needs of the bytes before it.
_DEFLATE_WINDOW = 32 << 10
_GZIP_LEVEL = 6
_GZIP_HEADER_BYTES = 10


@dataclass(frozen=True, slots=True)
class Codec:
    """A framing of committed bytes, named by the `--compress` value it stands for."""

    name: Compression
    level: int | None = None

    def frame(
        self, records: Sequence[bytes | memoryview], deflaters: DeflatePool | None = None
    ) -> list[bytes | memoryview]:
        """The buffers to append for one commit: the records, each ending in a newline.

        One joined buffer per commit rather than two small ones per record: the
        writer thread then hashes, checksums and writes it in a few calls that
        release the GIL, instead of many short ones that keep taking it back
        from the event loop (measured: about 15% more records a second).
        With `deflaters`, a large gzip commit is deflated in pieces by several
        threads at once (see the module's docstring).
        """
        if self.name == "none":
            return [_NEWLINE.join(records), _NEWLINE]
        data = _NEWLINE.join(records) + _NEWLINE
        if self.name == "gzip":
            level = _GZIP_LEVEL if self.level is None else self.level
            if deflaters is not None and (pieces := deflaters.pieces(len(data))) > 1:
                return deflaters.member(data, level, pieces)
            return [gzip.compress(data, compresslevel=level, mtime=0)]
        level = 3 if self.level is None else self.level
        return [zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)]

    def file_name(self, number: int) -> str:
        """The name of records file number `number` (1-based)."""
        return layout.records_name(number, self.name)


class DeflatePool:
    """`threads` threads that deflate a large gzip commit at once: the caller's own and helpers.

    The caller deflates the first piece itself while the helpers deflate the
    others, so two threads need one helper, and the writer thread, which waits
    for the member anyway, is never idle meanwhile.
    """

    __slots__ = ("_helpers", "threads")

    def __init__(self, threads: int) -> None:
        if threads < 2:
            raise ValueError("a DeflatePool needs at least 2 threads: 1 is the caller alone")
        self.threads = threads
        self._helpers = ThreadPoolExecutor(threads - 1, thread_name_prefix="archive-deflate")

    def pieces(self, size: int) -> int:
        """How many pieces a commit of `size` bytes is deflated in: one a thread, none under the minimum."""
        return max(1, min(self.threads, size // GZIP_MIN_PIECE_BYTES))

    def member(self, data: bytes, level: int, pieces: int) -> list[bytes | memoryview]:
        """One gzip member holding `data`, deflated in `pieces` equal pieces at once."""
        view = memoryview(data)
        size = len(data)
        step = -(-size // pieces)
        later = [
            self._helpers.submit(_deflate_piece, view, start, min(start + step, size), level)
            for start in range(step, size, step)
        ]
        first = _deflate_piece(view, 0, min(step, size), level)
        trailer = struct.pack("<LL", zlib.crc32(view), size & 0xFFFFFFFF)
        return [_gzip_header(level), first, *(piece.result() for piece in later), trailer]

    def close(self) -> None:
        """Let the helpers go once they are done (safe to call twice)."""
        self._helpers.shutdown()

    def __repr__(self) -> str:
        return f"<DeflatePool threads={self.threads} min_piece={GZIP_MIN_PIECE_BYTES}>"


def _deflate_piece(data: memoryview, start: int, stop: int, level: int) -> bytes:
    """Raw deflate of data[start:stop], primed with the window before it; a sync flush unless last."""
    if start:
        window = data[max(0, start - _DEFLATE_WINDOW) : start]
        deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=window)
    else:
        deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    last = stop == len(data)
    return deflate.compress(data[start:stop]) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


@functools.cache
def _gzip_header(level: int) -> bytes:
    """The 10-byte header `gzip.compress(..., mtime=0)` writes at `level` (zlib's own: no name, no time)."""
    return zlib.compress(b"", level=level, wbits=16 + zlib.MAX_WBITS)[:_GZIP_HEADER_BYTES]


def codec_for(name: Compression, level: int | None = None) -> Codec:
    """The codec for a `--compress` value."""
    return Codec(name, level)


def codec_of_file(file_name: str) -> Codec:
    """The codec a records file was written with, from its name."""
    return codec_for(layout.compression_of(file_name))


def decompressed_lines(handle: BinaryIO, codec: Codec) -> Iterator[bytes]:
    """The NDJSON lines of an open records file, decompressed as needed (for verify)."""
    if codec.name == "gzip":
        with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
            yield from unzipped
    elif codec.name == "zstd":
        yield from zstd_lines(handle)
    else:
        yield from handle


def zstd_lines(handle: BinaryIO, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a stream of concatenated zstd frames; ValueError if the last frame is cut short.

    zstandard's stream reader simply stops at a truncated frame, which would
    pass a damaged file off as a shorter, complete one.
    """
    decompressor = zstandard.ZstdDecompressor()
    frame = decompressor.decompressobj()
    in_frame = False
    rest = b""
    while chunk := handle.read(chunk_bytes):
        out = []
        while chunk:
            in_frame = True
            out.append(frame.decompress(chunk))
            if not frame.eof:
                break
            chunk = frame.unused_data
            frame = decompressor.decompressobj()
            in_frame = False
        parts = (rest + b"".join(out)).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if in_frame:
        raise ValueError("the zstd data ends in the middle of a frame (the file is truncated)")
    if rest:
        yield rest
