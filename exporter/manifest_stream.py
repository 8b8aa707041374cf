"""A manifest's bytes: decompressed, proven intact, and cut into numbered lines of bounded size.

The layer under the format readers (`manifest.py`). A manifest is untrusted
input, and every cost its bytes can cause is bounded here:

- `line_batches` holds a line up to `MAX_LINE_BYTES`; a longer one streams
  past and becomes an `Overlong` (its start and its length), so one 200 MB
  line costs no more memory than a short one (`bounded.LineCutter`, which
  cuts the archive's own files too);
- decompression hands out bounded chunks, so a small file that expands to
  gigabytes (a "zip bomb") costs time, not memory, and a zstd frame may not
  ask for a window over 32 MiB;
- `open_stream` decompresses a gzip or zstd manifest once in full, checking
  its CRC-32 / XXH64, before the first line is cut: flipped bytes would
  otherwise decode to made-up ids that are requested and archived before the
  checksum at the end of the stream fails. Standard input and pipes cannot be
  read twice, so compressed ones are first copied to an unnamed temporary file.

    raw file or stdin -> open_stream (chunks) -> line_batches -> format readers
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import stat
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast

import zstandard

from .bounded import Line as Line
from .bounded import LineBatch as LineBatch
from .bounded import LineCutter
from .bounded import Overlong as Overlong
from .config import ManifestSource
from .errors import ManifestError

#: A longer line, or CSV row, is skipped as it streams past and reported as a bad line.
MAX_LINE_BYTES = 1 << 20

_READ_BYTES = 1 << 16
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


#: What can go wrong while reading (decompressing) a manifest's bytes.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError)


def open_stream(raw: BinaryIO, display: str, stack: contextlib.ExitStack) -> Iterator[bytes]:
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


def line_batches(
    chunks: Iterable[bytes], display: str, limit: int, *, first_line: int = 1
) -> Iterator[LineBatch]:
    """Numbered lines of a chunked stream, a chunk's worth at a time (`LineCutter.batches`); the BOM dropped.

    `chunks` may start at a line further on (`PlainFile.batches_from`):
    `first_line` is its number. Read errors become ManifestError.
    """
    cutter = LineCutter(limit, strip_bom=True, first_line=first_line)
    try:
        yield from cutter.batches(chunks)
    except _READ_ERRORS as exc:
        raise ManifestError(
            f"manifest {display} is damaged after line {cutter.lines}: {exc}; "
            "the ids before it were processed, fix or re-create the file and run again"
        ) from exc


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


class PlainFile:
    """A manifest that is a regular, uncompressed file: its lines can be read from any offset.

    Read with `os.pread`, so the stream reading it from the start (`open_stream`)
    is not moved. A resume uses it to start planning where the archived part of
    the manifest ends (`exporter.resume_point`). Only reads; a read error is
    raised as OSError, and the manifest's reader reports it in its turn.
    """

    __slots__ = ("_display", "_fd", "_limit", "size")

    def __init__(self, fd: int, size: int, display: str, limit: int) -> None:
        self._fd = fd
        self.size = size
        self._display = display
        self._limit = limit

    @classmethod
    def of(cls, raw: BinaryIO, display: str, limit: int) -> PlainFile | None:
        """The file under `raw` when it is regular and not compressed; else None."""
        try:
            fd = raw.fileno()
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            head = os.pread(fd, 4, 0)
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            return None
        if head.startswith((_GZIP_MAGIC, _ZSTD_MAGIC)):
            return None
        return cls(fd, info.st_size, display, limit)

    def line_start(self, offset: int) -> int | None:
        """Where the first line starting at or after `offset` starts; None past the end or in a long line."""
        if offset <= 0:
            return 0
        data = os.pread(self._fd, min(self._limit, _READ_BYTES) + 1, offset - 1)
        end = data.find(b"\n")
        return None if end < 0 or offset + end >= self.size else offset + end

    def lines_at(self, offset: int, span: int) -> list[bytes]:
        """The whole lines that start in `offset..offset+span` (from the first line start there)."""
        start = self.line_start(offset)
        if start is None:
            return []
        data = os.pread(self._fd, span, start)
        end = data.rfind(b"\n")
        return data[:end].split(b"\n") if end >= 0 else []

    def count_lines(self, end: int) -> int:
        """Lines that end before `end` (newlines in the first `end` bytes)."""
        count = at = 0
        while at < end and (data := os.pread(self._fd, min(1 << 20, end - at), at)):
            count += data.count(b"\n")
            at += len(data)
        return count

    def batches_from(self, offset: int, first_line: int) -> Iterator[LineBatch]:
        """`line_batches` of the lines from `offset` (a line start) to the end; `first_line` is its number."""
        return line_batches(self._chunks_from(offset), self._display, self._limit, first_line=first_line)

    def _chunks_from(self, offset: int) -> Iterator[bytes]:
        while data := os.pread(self._fd, _READ_BYTES, offset):
            yield data
            offset += len(data)
