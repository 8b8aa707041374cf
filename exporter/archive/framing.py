"""How a records file frames its lines: each group commit's lines as they are, or compressed, and back.

Each commit is compressed on its own, as one gzip member or one zstd frame.
Concatenated members and frames are themselves a valid `.gz` / `.zst` file
(`zcat`, `zstdcat`, DuckDB's `read_ndjson` read them), and every commit ends on
a frame boundary, so cutting a file back to its last committed length after a
crash leaves a complete, readable file.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from exporter.config import Compression

from . import layout

_NEWLINE = b"\n"


@dataclass(frozen=True, slots=True)
class Codec:
    """A framing of committed bytes, named by the `--compress` value it stands for."""

    name: Compression
    level: int | None = None

    def frame(self, records: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """The buffers to append for one commit: the records, each ending in a newline.

        One joined buffer per commit rather than two small ones per record: the
        writer thread then hashes, checksums and writes it in a few calls that
        release the GIL, instead of many short ones that keep taking it back
        from the event loop (measured: about 15% more records a second).
        """
        if self.name == "none":
            return [_NEWLINE.join(records), _NEWLINE]
        data = _NEWLINE.join(records) + _NEWLINE
        if self.name == "gzip":
            return [gzip.compress(data, compresslevel=6 if self.level is None else self.level, mtime=0)]
        level = 3 if self.level is None else self.level
        return [zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)]

    def file_name(self, number: int) -> str:
        """The name of records file number `number` (1-based)."""
        return layout.records_name(number, self.name)


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
