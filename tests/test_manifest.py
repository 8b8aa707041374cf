"""Unit tests for `exporter.manifest`: id validation and the streaming manifest readers."""

from __future__ import annotations

import gzip
import io
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from exporter.config import ManifestFormat, ManifestSource
from exporter.errors import ManifestError
from exporter.manifest import MAX_ID_CHARS, Entry, estimate_lines, id_problem, open_manifest, read_entries


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
    return zstandard.ZstdCompressor().compress(data)


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


def test_truncated_gzip_is_a_manifest_error_naming_the_line_reached(tmp_path: Path) -> None:
    """A gzip file cut short raises ManifestError after the ids before the cut, naming the last line read."""
    blob = gz(_MANY)
    path = tmp_path / "ids.txt.gz"
    path.write_bytes(blob[: len(blob) // 2])
    seen: list[Entry] = []
    with pytest.raises(ManifestError) as info, open_manifest(ManifestSource(path=path)) as entries:
        seen.extend(entries)
    assert 0 < len(seen) < 30_000
    assert seen == [Entry(i + 1, f"rec_{i:06d}") for i in range(len(seen))]
    message = str(info.value)
    assert f"manifest {path} is damaged after line {len(seen)}:" in message
    assert "fix or re-create the file" in message


def test_truncated_zstd_is_a_manifest_error(tmp_path: Path) -> None:
    """A zstd file cut short raises ManifestError instead of passing for a shorter manifest."""
    blob = zst(_MANY)
    path = tmp_path / "ids.txt.zst"
    path.write_bytes(blob[:-3])
    with pytest.raises(ManifestError, match="is damaged after line"):
        read_file(path)


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
