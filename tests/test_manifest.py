"""Unit tests for `exporter.manifest`: id validation and the streaming manifest readers."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import re
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.archive.layout import REPORTED_ID_BYTES, reported_id
from exporter.config import ManifestFormat, ManifestSource
from exporter.errors import ManifestError, Reason
from exporter.manifest import (
    MAX_ID_CHARS,
    Entry,
    estimate_lines,
    id_problem,
    open_manifest,
    read_entries,
)
from exporter.manifest_stream import MAX_LINE_BYTES
from exporter.outcomes import Failure
from exporter.run.committer import failed_entry


def read_stdin(data: bytes, fmt: ManifestFormat = "auto") -> list[Entry]:
    """All entries of `data` read as standard input in the given format."""
    with open_manifest(ManifestSource(path=None, format=fmt), stdin=io.BytesIO(data)) as entries:
        return list(entries)


def read_file(path: Path, fmt: ManifestFormat = "auto") -> list[Entry]:
    with open_manifest(ManifestSource(path=path, format=fmt)) as entries:
        return list(entries)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def plain(data: bytes) -> bytes:
    return data


# --- id_problem ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [
        "550e8400-e29b-41d4-a716-446655440000",
        "rec_123",
        "café",
        "日本語-録音",
        "a.b",
        "...",
        ".hidden",
        "a-b_c~d:e@f+g=h",
        "x" * MAX_ID_CHARS,
        "é" * MAX_ID_CHARS,
    ],
)
def test_sane_ids_have_no_problem(candidate: str) -> None:
    """Ordinary ids, UUIDs, non-ASCII letters and ids of exactly 256 characters are accepted."""
    assert id_problem(candidate) is None


@pytest.mark.parametrize(
    ("candidate", "problem"),
    [
        ("", "empty id"),
        (" a", "contains ' ' at position 0"),
        ("a ", "contains ' ' at position 1"),
        ("a b", "contains ' ' at position 1"),
        ("a\tb", "contains '\\t' at position 1"),
        ("a\nb", "contains '\\n' at position 1"),
        ("a\rb", "contains '\\r' at position 1"),
        ("../admin", "contains '/' at position 2"),
        (".", "'.' is a path segment, not an id"),
        ("..", "'..' is a path segment, not an id"),
        ("a/b", "contains '/' at position 1"),
        ("a\\b", "contains '\\\\' at position 1"),
        ("a\x00b", "contains '\\x00' at position 1"),
        ("a\x01b", "contains '\\x01' at position 1"),
        ("a\x1bb", "contains '\\x1b' at position 1"),
        ("a\x7fb", "contains '\\x7f' at position 1"),
        ("a\x85b", "contains '\\x85' at position 1"),
        ("a\x9fb", "contains '\\x9f' at position 1"),
        ("a\xa0b", "contains '\\xa0' at position 1"),
        ("a\u2028b", "contains '\\u2028' at position 1"),
        ("a\u2029b", "contains '\\u2029' at position 1"),
        ("a\u200bb", "contains '\\u200b' at position 1"),
        ("a\u200db", "contains '\\u200d' at position 1"),
        ("a\u202eb", "contains '\\u202e' at position 1"),
        ("a\u2060b", "contains '\\u2060' at position 1"),
        ("a\u3000b", "contains '\\u3000' at position 1"),
        ("\ufeffa", "contains '\\ufeff' at position 0"),
        ("a\ud800", "contains '\\ud800' at position 1"),
        ("a\udcff", "contains '\\udcff' at position 1"),
        ("x" * (MAX_ID_CHARS + 1), "longer than 256 characters (257)"),
        ("/" * 300, "longer than 256 characters (300)"),
    ],
)
def test_insane_ids_are_refused_with_a_reason(candidate: str, problem: str) -> None:
    """Empty, over-long, path-like, blank, control, invisible and surrogate ids are refused, saying why."""
    assert id_problem(candidate) == problem


@pytest.mark.parametrize("char", ["\u2066", "\u2067", "\u2068", "\u2069"])
def test_bidi_isolates_are_refused(char: str) -> None:
    """Bidi isolate controls, invisible and able to make two ids look alike, are refused like U+202E."""
    assert id_problem(f"a{char}b") == f"contains {char!r} at position 1"


# --- text ----------------------------------------------------------------------------------------


def test_text_skips_blanks_and_comments_and_strips_whitespace() -> None:
    """Text skips blank and `#` lines, strips surrounding whitespace and CRLF, and keeps line numbers."""
    data = b"# exported 2024-05-01\n\n  a  \r\nb\r\n\t c\t\n   # indented comment\n   \n\r\nd"
    assert read_stdin(data, "text") == [Entry(3, "a"), Entry(4, "b"), Entry(5, "c"), Entry(9, "d")]


def test_text_keeps_inner_whitespace_for_validation_to_refuse() -> None:
    """The reader does not split a line: `a b` is one candidate id, for id_problem to reject."""
    assert read_stdin(b"a b\n", "text") == [Entry(1, "a b")]


@pytest.mark.parametrize("fmt", ["text", "auto"])
def test_utf8_bom_is_dropped(fmt: ManifestFormat) -> None:
    """A UTF-8 byte-order mark at the start is not part of the first id."""
    assert read_stdin(b"\xef\xbb\xbfa\nb\n", fmt) == [Entry(1, "a"), Entry(2, "b")]


def test_bom_only_at_the_start_is_dropped() -> None:
    """A BOM later in the file is content (id_problem refuses it), not silently removed."""
    assert read_stdin(b"a\n\xef\xbb\xbfb\n", "text") == [Entry(1, "a"), Entry(2, "\ufeffb")]


def test_text_line_that_is_not_utf8_is_a_problem_entry() -> None:
    """A line that is not UTF-8 is a problem entry with its line number; the lines around it still count."""
    assert read_stdin(b"a\ncaf\xe9\nb\n", "text") == [
        Entry(1, "a"),
        Entry(2, "caf\\xe9", "not valid UTF-8"),
        Entry(3, "b"),
    ]


def test_non_ascii_ids_are_decoded() -> None:
    """UTF-8 ids come back as the characters they encode."""
    assert read_stdin("café\n日本\n".encode(), "text") == [Entry(1, "café"), Entry(2, "日本")]


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_id_column_need_not_be_first() -> None:
    """The id is taken from the column named `id`, wherever it is."""
    data = b"name,id,size\nx,a,1\ny,b,2\n"
    assert read_stdin(data, "csv") == [Entry(2, "a"), Entry(3, "b")]


def test_csv_quoted_fields_with_commas() -> None:
    """Quoted fields may hold commas and doubled quotes without shifting the id column."""
    data = b'title,id\n"Hello, world",a\n"say ""hi"", then go",b\nplain,"c,d"\n'
    assert read_stdin(data, "csv") == [Entry(2, "a"), Entry(3, "b"), Entry(4, "c,d")]


def test_csv_header_is_case_and_space_insensitive() -> None:
    """A header cell ` ID ` names the id column, and id cells are stripped."""
    assert read_stdin(b" Name , ID \nx, a \n", "csv") == [Entry(2, "a")]


def test_csv_row_without_the_id_column_is_a_problem_entry() -> None:
    """A row too short to reach the id column is reported with its line number; later rows still count."""
    assert read_stdin(b"name,id\nonly\nx,b\n", "csv") == [
        Entry(2, "only", "row has no id column"),
        Entry(3, "b"),
    ]


def test_csv_blank_rows_are_skipped() -> None:
    """Empty lines and rows of empty cells are skipped, and line numbers stay those of the file."""
    assert read_stdin(b"\nid,n\n\n , \na,1\n", "csv") == [Entry(5, "a")]


def test_csv_crlf_and_bom() -> None:
    """CRLF line ends and a BOM before the header are handled like LF and no BOM."""
    data = b"\xef\xbb\xbfid,name\r\na,x\r\nb,y\r\n"
    assert read_stdin(data, "csv") == [Entry(2, "a"), Entry(3, "b")]


def test_csv_line_numbers_after_a_multiline_field() -> None:
    """A quoted field spanning two lines does not throw off the line numbers of later rows."""
    entries = read_stdin(b'id,note\na,"two\nlines"\nb,x\n', "csv")
    assert [entry.value for entry in entries] == ["a", "b"]
    assert entries[1].line == 4


def test_csv_header_without_id_is_a_manifest_error() -> None:
    """A CSV header with no `id` column stops the run with a message naming the columns and the fix."""
    with pytest.raises(ManifestError) as info:
        read_stdin(b"Name, Recording ,size\nx,a,1\n", "csv")
    message = str(info.value)
    assert "manifest - looks like CSV but its header has no 'id' column" in message
    assert "(columns: name, recording, size)" in message
    assert "--format text" in message


def test_csv_row_that_is_not_utf8_is_a_problem_entry() -> None:
    """A CSV row that is not UTF-8 is reported as a problem entry, as it is in a text manifest."""
    entries = read_stdin(b"id\ncaf\xe9\nok\n", "csv")
    assert entries[1] == Entry(3, "ok")
    assert entries[0].line == 2
    assert entries[0].problem is not None


# --- NDJSON --------------------------------------------------------------------------------------


def test_ndjson_string_and_integer_ids() -> None:
    """`"id"` may be a string or an integer (rendered in decimal); other keys and blank lines are ignored."""
    data = b'{"id":"a"}\n{"id": 42, "x": 1}\n\n{"id": -7}\r\n{"x": 1, "id": "b"}\n'
    assert read_stdin(data, "ndjson") == [
        Entry(1, "a"),
        Entry(2, "42"),
        Entry(4, "-7"),
        Entry(5, "b"),
    ]


def test_ndjson_bad_lines_are_problem_entries() -> None:
    """Non-JSON lines, objects without `"id"` and ids of a wrong type are problem entries on their line."""
    data = (
        b'{"id":"a"}\n'
        b"not json\n"
        b'{"name":"x"}\n'
        b'{"id": null}\n'
        b'{"id": 1.5}\n'
        b'{"id": true}\n'
        b'{"id": ["a"]}\n'
        b'["id"]\n'
        b'{"id":"z"}\n'
    )
    entries = read_stdin(data, "ndjson")
    assert [(entry.line, entry.value) for entry in entries] == [
        (1, "a"),
        (2, "not json"),
        (3, '{"name":"x"}'),
        (4, '{"id": null}'),
        (5, '{"id": 1.5}'),
        (6, '{"id": true}'),
        (7, '{"id": ["a"]}'),
        (8, '["id"]'),
        (9, "z"),
    ]
    problems = [entry.problem for entry in entries]
    assert problems[0] is None
    assert problems[1] is not None
    assert problems[1].startswith("not a JSON object: ")
    assert problems[2:8] == [
        'no "id" key',
        '"id" is NoneType, not a string',
        '"id" is float, not a string',
        '"id" is bool, not a string',
        '"id" is list, not a string',
        'no "id" key',
    ]
    assert problems[8] is None


def test_long_bad_line_is_shortened_in_the_report() -> None:
    """A bad line is quoted in at most 80 characters, ending in an ellipsis."""
    raw = b"x" * 500
    [entry] = read_stdin(raw + b"\n", "ndjson")
    assert entry.value == "x" * 77 + "..."
    assert entry.problem is not None


# --- format choice -------------------------------------------------------------------------------

# Contents that read differently in each format, with what each means when its format is
# chosen by the file name (as opposed to sniffed from the first line).
_CSV = b"{junk},id\n1,abc\n"  # sniffs as NDJSON
_NDJSON = b'"abc"\n{"id":"b"}\n'  # sniffs as text
_TEXT = b'{"id":"a"}\n'  # sniffs as NDJSON
_AS_CSV = [Entry(2, "abc")]
_AS_NDJSON = [Entry(1, '"abc"', 'no "id" key'), Entry(2, "b")]
_AS_TEXT = [Entry(1, '{"id":"a"}')]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("ids.csv", _CSV, _AS_CSV),
        ("IDS.CSV", _CSV, _AS_CSV),
        ("ids.ndjson", _NDJSON, _AS_NDJSON),
        ("ids.jsonl", _NDJSON, _AS_NDJSON),
        ("ids.json", _NDJSON, _AS_NDJSON),
        ("ids.txt", _TEXT, _AS_TEXT),
        ("ids.ids", _TEXT, _AS_TEXT),
        ("ids.lst", _TEXT, _AS_TEXT),
    ],
)
@pytest.mark.parametrize(("suffix", "compress"), [("", plain), (".gz", gz), (".zst", zst), (".zstd", zst)])
def test_format_from_file_suffix(
    tmp_path: Path,
    name: str,
    content: bytes,
    expected: list[Entry],
    suffix: str,
    compress: Callable[[bytes], bytes],
) -> None:
    """The file name's suffix (also under .gz/.zst) picks the format, whatever the first line suggests."""
    path = tmp_path / (name + suffix)
    path.write_bytes(compress(content))
    assert read_file(path) == expected


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    """--format wins over the file name."""
    path = tmp_path / "ids.csv"
    path.write_bytes(_TEXT)
    assert read_file(path, "text") == _AS_TEXT


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"id,name\na,x\n", [Entry(2, "a")]),
        (b"ID\na\n", [Entry(2, "a")]),
        (b'"id"\na\n', [Entry(2, "a")]),
        (b'{"id":"a"}\n{"id":"b"}\n', [Entry(1, "a"), Entry(2, "b")]),
        (b'\n\n  {"id":"a"}\n', [Entry(3, "a")]),
        (b"a\nb\n", [Entry(1, "a"), Entry(2, "b")]),
        (b"# ids\n\nid_1\n", [Entry(3, "id_1")]),
        (b"", []),
        (b"\n# only a comment\n", []),
    ],
    ids=[
        "csv",
        "csv-single-id-column",
        "csv-quoted-id",
        "ndjson",
        "ndjson-after-blanks",
        "text",
        "text-after-comment",
        "empty",
        "comment-only",
    ],
)
@pytest.mark.parametrize("where", ["file.dat", "stdin"])
def test_format_sniffed_from_the_first_line(
    tmp_path: Path, content: bytes, expected: list[Entry], where: str
) -> None:
    """An unknown suffix or standard input is read in the format its first content line suggests."""
    if where == "stdin":
        assert read_stdin(content) == expected
    else:
        path = tmp_path / where
        path.write_bytes(content)
        assert read_file(path) == expected


@pytest.mark.parametrize(
    ("compress", "name"), [(gz, "ids.txt"), (zst, "ids.csv"), (gz, "ids"), (zst, "ids.gz")]
)
def test_compression_is_detected_by_content(
    tmp_path: Path, compress: Callable[[bytes], bytes], name: str
) -> None:
    """gzip and zstd are recognised by their magic bytes, whatever the file is called."""
    path = tmp_path / name
    path.write_bytes(compress(b"id\na\nb\n" if name.endswith(".csv") else b"a\nb\n"))
    assert [entry.value for entry in read_file(path)] == ["a", "b"]


def test_file_named_gz_that_is_plain_text_reads_as_text(tmp_path: Path) -> None:
    """A .gz name on an uncompressed file is not trusted: the bytes are read as they are."""
    path = tmp_path / "ids.txt.gz"
    path.write_bytes(b"a\nb\n")
    assert read_file(path) == [Entry(1, "a"), Entry(2, "b")]


@pytest.mark.parametrize("compress", [gz, zst])
def test_compressed_stdin(compress: Callable[[bytes], bytes]) -> None:
    """Standard input is decompressed and sniffed too."""
    assert read_stdin(compress(b'{"id":"a"}\n{"id":7}\n')) == [Entry(1, "a"), Entry(2, "7")]


@pytest.mark.parametrize("compress", [gz, zst])
def test_concatenated_compressed_members_are_all_read(compress: Callable[[bytes], bytes]) -> None:
    """A file made of several gzip members or zstd frames (`cat a.gz b.gz`) is read to the end."""
    data = compress(b"a\nb\n") + compress(b"c\n")
    assert read_stdin(data, "text") == [Entry(1, "a"), Entry(2, "b"), Entry(3, "c")]


# --- damaged and missing manifests ---------------------------------------------------------------

_MANY = b"".join(b"rec_%06d\n" % i for i in range(30_000))


def _flipped(blob: bytes) -> bytes:
    """`blob` with four bytes in its middle inverted."""
    damaged = bytearray(blob)
    for at in range(len(blob) // 2, len(blob) // 2 + 4):
        damaged[at] ^= 0xFF
    return bytes(damaged)


def gz_stored(data: bytes) -> bytes:
    """gzip without compression: flipped bytes decode to other ids, and only the CRC at the end tells."""
    return gzip.compress(data, compresslevel=0, mtime=0)


_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "flipped": _flipped,
    "cut-in-half": lambda blob: blob[: len(blob) // 2],
    "last-3-bytes-cut": lambda blob: blob[:-3],
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
@pytest.mark.parametrize(("compress", "kind"), [(gz, "gzip"), (gz_stored, "gzip"), (zst, "zstd")])
@pytest.mark.parametrize("where", ["file", "stdin"])
def test_damaged_compressed_manifest_yields_no_id(
    tmp_path: Path, damage: str, compress: Callable[[bytes], bytes], kind: str, where: str
) -> None:
    """A flipped or cut gzip/zstd manifest raises ManifestError before its first entry, file or stdin."""
    blob = _DAMAGE[damage](compress(_MANY))
    seen: list[Entry] = []
    path = tmp_path / "ids.txt.gz"
    path.write_bytes(blob)
    source = ManifestSource(path=path if where == "file" else None)
    with pytest.raises(ManifestError) as info, open_manifest(source, stdin=io.BytesIO(blob)) as entries:
        seen.extend(entries)
    assert seen == []
    message = str(info.value)
    assert f"manifest {source.display} is damaged ({kind}: " in message
    assert "none of its ids were used: fix or re-create the file" in message


def test_stored_gzip_with_flipped_bytes_would_decode_to_other_ids() -> None:
    """The damage above is of the kind the issue met: without the CRC, flipped bytes read as made-up ids."""
    damaged = _flipped(gz_stored(_MANY))
    member = damaged[10:-8]  # a stored deflate stream: 5-byte block headers around the raw text
    assert b"rec_0" in member
    assert _MANY not in member
    assert gzip.decompress(gz_stored(_MANY)) == _MANY


def test_zstd_without_checksums_is_refused(tmp_path: Path) -> None:
    """A zstd frame without a content checksum cannot be proven intact: refused, saying how to fix it."""
    path = tmp_path / "ids.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=False).compress(b"a\nb\n"))
    with pytest.raises(ManifestError, match=r"without checksums.*zstd command"):
        read_file(path)


def test_zstd_with_a_window_over_32_mib_is_refused() -> None:
    """A frame may ask the decompressor to hold up to 128 MiB (`--long`): over 32 MiB is refused."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=26, write_checksum=True)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as writer:
        writer.write(b"a\nb\n")  # streamed: the frame keeps its 64 MiB window whatever it holds
    with pytest.raises(ManifestError, match=r"with a 64 MiB window, over the 32 MiB allowed"):
        read_stdin(out.getvalue())


def test_zstd_skippable_frames_are_read_past() -> None:
    """A skippable frame between frames (metadata some tools add) holds no ids and needs no checksum."""
    skippable = b"\x5e\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    assert read_stdin(zst(b"a\n") + skippable + zst(b"b\n"), "text") == [Entry(1, "a"), Entry(2, "b")]


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    """A manifest that does not exist stops the run with a message naming the path and the cause."""
    path = tmp_path / "nope.txt"
    with pytest.raises(ManifestError, match=r"^cannot open manifest .*nope\.txt: No such file or directory$"):
        read_file(path)


def test_manifest_file_is_closed_afterwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving the context closes the manifest file, even when the entries were not all read."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"a\nb\nc\n")
    opened: list[io.BufferedReader] = []
    real_open = open

    def spy_open(file: Path, mode: str) -> io.BufferedReader:
        handle = real_open(file, mode)
        assert isinstance(handle, io.BufferedReader)
        opened.append(handle)
        return handle

    monkeypatch.setattr("builtins.open", spy_open)
    with open_manifest(ManifestSource(path=path)) as entries:
        assert next(entries) == Entry(1, "a")
    monkeypatch.undo()
    assert len(opened) == 1
    assert opened[0].closed


# --- streaming -----------------------------------------------------------------------------------


def _endless(make_line: Callable[[int], bytes], pulled: list[int]) -> Iterator[bytes]:
    for number in itertools.count(1):
        pulled[0] = number
        yield make_line(number)


@pytest.mark.parametrize(
    ("fmt", "header", "make_line", "first"),
    [
        ("text", None, lambda n: b"id_%d\n" % n, ["id_1", "id_2", "id_3"]),
        ("ndjson", None, lambda n: b'{"id": %d}\n' % n, ["1", "2", "3"]),
        ("csv", b"n,id\n", lambda n: b"%d,r%d\n" % (n, n), ["r1", "r2", "r3"]),
        ("auto", b"id\n", lambda n: b"r%d\n" % n, ["r1", "r2", "r3"]),
        ("auto", None, lambda n: b"id_%d\n" % n, ["id_1", "id_2", "id_3"]),
    ],
)
def test_readers_stream(
    fmt: ManifestFormat, header: bytes | None, make_line: Callable[[int], bytes], first: list[str]
) -> None:
    """Taking the first entries of an endless manifest returns at once, having read only a few lines."""
    pulled = [0]
    lines = _endless(make_line, pulled)
    if header is not None:
        lines = itertools.chain([header], lines)
    entries = list(itertools.islice(read_entries(lines, fmt, "-"), 3))
    assert [entry.value for entry in entries] == first
    assert pulled[0] <= 4


# --- estimate_lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", 0),
        (b"a\nb\nc\n", 3),
        (b"a\nb\nc", 3),
        (b"# header\n\nid\n", 3),
        (b"\n", 1),
    ],
)
def test_estimate_lines_counts_a_plain_file(tmp_path: Path, content: bytes, expected: int) -> None:
    """A plain file's estimate is its newline count, plus one for a last line without a newline."""
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    assert estimate_lines(ManifestSource(path=path)) == expected


def test_estimate_lines_across_read_chunks(tmp_path: Path) -> None:
    """Files larger than one read chunk (1 MiB) are counted in full."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"rec_000000\n" * 200_000 + b"tail")
    assert estimate_lines(ManifestSource(path=path)) == 200_001


@pytest.mark.parametrize("compress", [gz, zst])
def test_estimate_lines_unknown_for_compressed(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    """A compressed manifest has no cheap line count: None, whatever its name."""
    path = tmp_path / "ids.txt"
    path.write_bytes(compress(b"a\nb\n"))
    assert estimate_lines(ManifestSource(path=path)) is None


def test_estimate_lines_unknown_for_stdin_and_missing_files(tmp_path: Path) -> None:
    """Standard input and unreadable paths give None rather than an error."""
    assert estimate_lines(ManifestSource(path=None)) is None
    assert estimate_lines(ManifestSource(path=tmp_path / "missing.txt")) is None


# --- hostile manifests: long lines ---------------------------------------------------------------


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in pieces of `size` bytes, as a stream hands them over."""
    return (data[at : at + size] for at in range(0, len(data), size))


def read_chunks(data: bytes, fmt: ManifestFormat, *, limit: int, chunk: int = 7) -> list[Entry]:
    return list(read_entries(chunked(data, chunk), fmt, "-", max_line_bytes=limit))


_LONG = b"x" * 100


@pytest.mark.parametrize(
    ("fmt", "before", "long_line", "after", "number"),
    [
        ("text", b"a\n", _LONG, b"\nb\n", 2),
        ("ndjson", b'{"id":"a"}\n', b'{"id":"' + _LONG + b'"}', b'\n{"id":"b"}\n', 2),
        ("csv", b"id,note\na,x\n", b"c," + _LONG, b"\nb,y\n", 3),
        ("auto", b"a\n", _LONG, b"\nb\n", 2),
        ("text", b"a\nb\n", _LONG, b"", 3),
        ("csv", b"id,note\na,x\nb,y\n", b"c," + _LONG, b"", 4),
    ],
    ids=["text", "ndjson", "csv", "auto", "text-last-line", "csv-last-line"],
)
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_line_over_the_limit_is_skipped_and_reported(
    fmt: ManifestFormat, before: bytes, long_line: bytes, after: bytes, number: int, chunk: int
) -> None:
    """A line longer than the limit is one problem entry (its start, its length); the ids around it count."""
    entries = read_chunks(before + long_line + after, fmt, limit=64, chunk=chunk)
    assert [entry.value for entry in entries if entry.problem is None] == ["a", "b"]
    [bad] = [entry for entry in entries if entry.problem is not None]
    assert bad.line == number
    assert bad.value.endswith("...")
    assert 64 <= len(bad.value) <= 80
    assert long_line.decode().startswith(bad.value[:-3])
    assert bad.problem == f"line of {len(long_line)} bytes, over the 64-byte limit: skipped"


def test_a_line_at_the_limit_is_read() -> None:
    """The limit is inclusive: a line of exactly `limit` bytes is an id (for id_problem to judge)."""
    assert read_chunks(b"y" * 64 + b"\nb\n", "text", limit=64) == [Entry(1, "y" * 64), Entry(2, "b")]


def test_a_long_comment_is_still_a_comment() -> None:
    """A `#` line over the limit is skipped silently, like any comment."""
    assert read_chunks(b"#" + b"c" * 200 + b"\na\n", "text", limit=64) == [Entry(2, "a")]


def _peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["text", "ndjson", "csv", "auto"])
def test_a_long_line_is_never_held(fmt: ManifestFormat) -> None:
    """A 48 MiB line streamed in 64 KiB chunks costs about the 1 MiB limit in memory, not its length."""
    size = 48 << 20

    def stream() -> Iterator[bytes]:
        yield b"id\n" if fmt == "csv" else b""
        block = b"x" * (1 << 16)
        for _ in range(size >> 16):
            yield block
        yield b'\n{"id":"b"}\n' if fmt == "ndjson" else b"\nb\n"

    entries: list[Entry] = []
    peak = _peak_bytes(lambda: entries.extend(read_entries(stream(), fmt, "-")))
    assert [entry.value for entry in entries if entry.problem is None] == ["b"]
    assert entries[0].problem == f"line of {size} bytes, over the {MAX_LINE_BYTES}-byte limit: skipped"
    assert peak < 4 * MAX_LINE_BYTES


def test_blank_lines_before_the_first_id_are_not_held() -> None:
    """Guessing the format holds only the line that decides it, not the blank lines before it."""
    data = b"\n" * 300_000 + b"a\n"
    entries: list[Entry] = []
    peak = _peak_bytes(lambda: entries.extend(read_entries(chunked(data, 1 << 16), "auto", "-")))
    assert entries == [Entry(300_001, "a")]
    assert peak < 2 << 20


@pytest.mark.parametrize(("compress", "frames"), [(gz, "gzip"), (zst, "zstd")])
def test_a_compression_bomb_costs_time_not_memory(compress: Callable[[bytes], bytes], frames: str) -> None:
    """128 MiB of one line from ~150 KB compressed: the integrity pass and the read stay within a few MiB."""
    member = compress(b"z" * (16 << 20))
    blob = member * 8 + compress(b"\nafter\n")
    assert len(blob) < 1 << 20
    entries: list[Entry] = []
    peak = _peak_bytes(lambda: entries.extend(read_stdin(blob, "text")))
    assert [(entry.line, entry.problem is None) for entry in entries] == [(1, False), (2, True)]
    assert entries[1].value == "after"
    assert peak < 16 << 20


# --- hostile manifests: CSV ----------------------------------------------------------------------


def test_csv_a_long_field_in_another_column_is_fine() -> None:
    """A 300 KB notes cell (over csv's own 131,072 limit) is read; the ids around it count."""
    data = b"id,note\na,x\nb," + b"n" * 300_000 + b"\nc,y\n"
    assert read_stdin(data, "csv") == [Entry(2, "a"), Entry(3, "b"), Entry(4, "c")]


def test_csv_a_long_quoted_field_spanning_lines_is_fine() -> None:
    """A quoted 300 KB multi-line note is one row; line numbers after it stay those of the file."""
    note = b'"' + b"line\n" * 60_000 + b'"'
    data = b"note,id\n" + note + b",a\nx,b\n"
    assert read_stdin(data, "csv") == [Entry(2, "a"), Entry(60_003, "b")]


def test_csv_a_long_id_is_an_entry_for_id_problem_to_refuse() -> None:
    """An id cell of 200,000 characters is read whole (it is under the line limit) and refused as invalid."""
    data = b"id\na\n" + b"i" * 200_000 + b"\nb\n"
    entries = read_stdin(data, "csv")
    assert entries == [Entry(2, "a"), Entry(3, "i" * 200_000), Entry(4, "b")]
    assert id_problem(entries[1].value) == "longer than 256 characters (200000)"


def test_csv_a_stray_quote_is_one_bad_row() -> None:
    """A stray quote that would swallow the rest of the file is reported at its line; the rows after count."""
    data = b'id,note\na,x\nb,"oops\nc,y\nd,z\n'
    assert read_stdin(data, "csv") == [
        Entry(2, "a"),
        Entry(3, 'b,"oops', "damaged CSV row: unexpected end of data"),
        Entry(4, "c"),
        Entry(5, "d"),
    ]


def test_csv_a_stray_quote_before_more_than_the_limit() -> None:
    """A quote still open after the row limit is reported, and every id after it is still read."""
    data = b'id,note\na,x\nb,"oops\n' + b"".join(b"r%d,y\n" % i for i in range(40)) + b"z,y\n"
    entries = read_chunks(data, "csv", limit=64)
    assert entries[:2] == [Entry(2, "a"), Entry(3, 'b,"oops', entries[1].problem)]
    assert entries[1].problem is not None
    assert entries[1].problem.startswith("CSV row still open after ")
    assert [entry.value for entry in entries[2:]] == [f"r{i}" for i in range(40)] + ["z"]
    assert [entry.line for entry in entries[2:]] == list(range(4, 45))


def test_csv_a_quoted_field_running_into_a_long_line() -> None:
    """A row open when an over-long line comes is reported, then the long line, then the rows after."""
    data = b'id,note\na,"open\nc,y\n' + b"L" * 100 + b"\nd,z\n"
    assert read_chunks(data, "csv", limit=64) == [
        Entry(2, 'a,"open', "CSV row runs into the over-long line 4"),
        Entry(3, "c"),
        Entry(4, "L" * 64 + "...", "line of 100 bytes, over the 64-byte limit: skipped"),
        Entry(5, "d"),
    ]


def test_csv_text_after_a_closing_quote_is_a_bad_row() -> None:
    """`"a"b` is damaged, not silently read as `ab`."""
    assert read_stdin(b'id\n"a"b\nc\n', "csv") == [
        Entry(2, '"a"b', "damaged CSV row: ',' expected after '\"'"),
        Entry(3, "c"),
    ]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"id," + b"h" * 100 + b"\na\n", r"CSV header \(line 1\) cannot be read: line of 103 bytes"),
        (b'id,"note\na,b\n', r"CSV header \(line 1\) cannot be read: damaged CSV row"),
    ],
    ids=["too-long", "stray-quote"],
)
def test_csv_header_that_cannot_be_read_is_a_manifest_error(data: bytes, match: str) -> None:
    """A damaged or over-long header would make a data row the header: the manifest is refused."""
    with pytest.raises(ManifestError, match=match):
        read_chunks(data, "csv", limit=64)


def test_csv_nul_bytes_and_crlf() -> None:
    """A NUL in a CSV id is read (and refused by id_problem); CRLF rows are plain rows."""
    entries = read_stdin(b"id\r\na\x00b\r\nc\r\n", "csv")
    assert entries == [Entry(2, "a\x00b"), Entry(3, "c")]
    assert id_problem(entries[0].value) == "contains '\\x00' at position 1"


# --- hostile manifests: NDJSON and text ----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"[" * 5000 + b"]" * 5000, "not a JSON object: depth limit exceeded"),
        (b'{"id": 1e999}', "not a JSON object: number is infinity"),
        (b'{"id": ' + b"9" * 5000 + b"}", "not a JSON object: number is infinity"),
        (b'{"id": ' + b"9" * 30 + b"}", '"id" is float, not a string'),
        (b'{"id": "\xff"}', "not a JSON object: str is not valid UTF-8"),
        (b'{"id": "\\ud800"}', "not a JSON object: no low surrogate"),
        (b'{"id"\x00: "a"}', "not a JSON object"),
    ],
    ids=["deep", "huge-float", "huge-int", "long-int", "not-utf8", "lone-surrogate", "nul"],
)
def test_ndjson_hostile_lines_are_bad_lines(line: bytes, problem: str) -> None:
    """Deep nesting, huge numbers, bad UTF-8, surrogates and NULs are bad lines, and the next id counts."""
    entries = read_stdin(line + b'\n{"id":"b"}\n', "ndjson")
    assert entries[1] == Entry(2, "b")
    assert entries[0].line == 1
    assert entries[0].problem is not None
    assert entries[0].problem.startswith(problem)
    assert len(entries[0].value) <= 80


def test_ndjson_escaped_nul_and_bom_and_crlf() -> None:
    """A BOM before the first object and CRLF ends are dropped; an escaped NUL reaches id_problem."""
    entries = read_stdin(b'\xef\xbb\xbf{"id":"a"}\r\n{"id":"b\\u0000c"}\r\n', "auto")
    assert entries == [Entry(1, "a"), Entry(2, "b\x00c")]
    assert id_problem(entries[1].value) == "contains '\\x00' at position 1"


def test_text_nul_and_lone_cr() -> None:
    """A NUL is part of the id (refused later); a lone CR does not end a line."""
    assert read_stdin(b"a\x00b\nc\rd\n", "text") == [Entry(1, "a\x00b"), Entry(2, "c\rd")]


# --- property: no content ends a run with anything but ManifestError -----------------------------

_FORMATS: list[ManifestFormat] = ["text", "csv", "ndjson", "auto"]
_MANIFESTISH = st.lists(
    st.sampled_from(
        [b"a", b"id", b",", b'"', b"\n", b"\r", b"{", b"}", b":", b'"id"', b"#", b"\x00", b"\xff"]
    )
    | st.binary(max_size=8),
    max_size=60,
).map(b"".join)


def _check_entries(data: bytes, fmt: ManifestFormat, limit: int, wrap: Callable[[bytes], bytes]) -> None:
    try:
        with open_manifest(
            ManifestSource(path=None, format=fmt), io.BytesIO(wrap(data)), max_line_bytes=limit
        ) as it:
            entries = list(it)
    except ManifestError:
        return
    lines = [entry.line for entry in entries]
    assert lines == sorted(set(lines))
    assert all(entry.line >= 1 for entry in entries)
    for entry in entries:
        if entry.problem is None:
            assert len(entry.value.encode("utf-8", "surrogatepass")) <= limit
        else:
            assert len(entry.value) <= 80


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200) | _MANIFESTISH,
    fmt=st.sampled_from(_FORMATS),
    limit=st.sampled_from([4, 16, MAX_LINE_BYTES]),
    wrap=st.sampled_from([plain, gz, zst]),
)
def test_any_bytes_give_entries_or_a_manifest_error(
    data: bytes, fmt: ManifestFormat, limit: int, wrap: Callable[[bytes], bytes]
) -> None:
    """Whatever the bytes (plain, gzip or zstd), a reader yields entries in line order, each bounded, or
    raises ManifestError: never another exception, which would end the run with exit 70."""
    _check_entries(data, fmt, limit, wrap)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=300), fmt=st.sampled_from(_FORMATS), flip=st.integers(0, 299))
def test_any_damaged_compressed_bytes_give_entries_or_a_manifest_error(
    data: bytes, fmt: ManifestFormat, flip: int
) -> None:
    """Compressed data damaged anywhere (magic, header, body, checksum) never raises anything else."""
    for compress in (gz, zst):
        blob = bytearray(compress(data))
        blob[flip % len(blob)] ^= 0x5A
        _check_entries(bytes(blob), fmt, MAX_LINE_BYTES, plain)


@settings(max_examples=200, deadline=None)
@given(data=_MANIFESTISH, fmt=st.sampled_from(_FORMATS), chunk=st.integers(1, 9))
def test_entries_do_not_depend_on_how_the_stream_is_chunked(
    data: bytes, fmt: ManifestFormat, chunk: int
) -> None:
    """Lines split across reads, long lines and CSV rows read the same in any chunking."""
    try:
        whole = list(read_entries([data], fmt, "-", max_line_bytes=8))
    except ManifestError as exc:
        with pytest.raises(ManifestError, match=re.escape(str(exc))):
            read_chunks(data, fmt, limit=8, chunk=chunk)
        return
    assert read_chunks(data, fmt, limit=8, chunk=chunk) == whole


# --- estimate_lines on hostile input -------------------------------------------------------------


def test_estimate_lines_does_not_read_a_pipe(tmp_path: Path) -> None:
    """A FIFO given as the manifest path (`<(zcat ids.gz)`) is not read: its lines belong to the reader."""
    fifo = tmp_path / "ids"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"a\nb\n")
        assert estimate_lines(ManifestSource(path=fifo)) is None
        assert os.read(reader, 100) == b"a\nb\n"
    finally:
        os.close(writer)
        os.close(reader)


def test_estimate_lines_extrapolates_beyond_its_sample(tmp_path: Path) -> None:
    """Past the bytes it samples, the estimate scales by size instead of reading the whole file."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"rec_000000\n" * 1000)
    estimate = estimate_lines(ManifestSource(path=path), sample_bytes=1 << 10)
    assert estimate is not None
    assert 990 <= estimate <= 1010
    path.write_bytes(b"x" * 2000 + b"\n" * 1000)
    assert estimate_lines(ManifestSource(path=path), sample_bytes=1 << 10) == 0


# --- how failed.ndjson names a very long id ------------------------------------------------------


def test_a_short_id_is_reported_whole() -> None:
    """Ids up to 1 KiB (every valid one) are reported as they are, with no extra keys."""
    assert reported_id("a" * REPORTED_ID_BYTES) == {"id": "a" * REPORTED_ID_BYTES}


@pytest.mark.parametrize(("char", "kept"), [("a", 1024), ("é", 512), ("日", 341), ("😀", 256)])
def test_a_long_id_is_cut_with_its_length_and_hash(char: str, kept: int) -> None:
    """A longer id keeps its first KiB, cut at a character boundary, plus its UTF-8 length and sha256."""
    record_id = char * 300_000
    raw = record_id.encode()
    fields = reported_id(record_id)
    assert fields == {"id": char * kept, "id_bytes": len(raw), "id_sha256": hashlib.sha256(raw).hexdigest()}
    line = failed_entry(Failure(record_id, Reason.INVALID_ID, "not sent"), run=1, at="t").to_json_line()
    assert len(line) < 2 * REPORTED_ID_BYTES + 200
    assert orjson.loads(line)["id_bytes"] == len(raw)
