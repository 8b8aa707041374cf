"""`exporter get`: any archived record back, byte for byte, in the order asked, from any codec and file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runs import ROOT, cli
from test_index import export_run, run_files

from exporter.archive import framing, index
from exporter.archive.layout import FAILED_NAME, FailedEntry
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings
from exporter.offline.get import Damaged, Found, Missing, get_records

ids_st = st.text(min_size=1, max_size=30)  # any text but lone surrogates (a checkpoint cannot hold them)
values_st = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def record(record_id: str, value: object) -> bytes:
    """A record line as the exporter keeps it: a JSON object with the id, no newline."""
    return json.dumps({"id": record_id, "value": value}, ensure_ascii=False).encode()


def request(run: int = 0) -> RunRequest:
    return RunRequest(started_at=f"t{run}", refetch=False, manifest="m", shard=None)


@settings(max_examples=40, deadline=None)
@given(
    runs=st.lists(
        st.lists(st.tuples(ids_st, values_st), min_size=1, max_size=25, unique_by=lambda pair: pair[0]),
        min_size=1,
        max_size=3,
    ),
    codec=st.sampled_from(["none", "gzip", "zstd"]),
    max_file_bytes=st.sampled_from([None, 300, 2000]),
    per_commit=st.integers(min_value=1, max_value=9),
    absent=st.lists(ids_st, max_size=5),
    seed=st.integers(min_value=0, max_value=1000),
    deflate_threads=st.sampled_from([1, 3]),
)
def test_get_returns_exactly_the_archived_line_in_any_codec_and_rotation(
    tmp_path_factory: object,
    runs: list[list[tuple[str, object]]],
    codec: str,
    max_file_bytes: int | None,
    per_commit: int,
    absent: list[str],
    seed: int,
    deflate_threads: int,
) -> None:
    """Every id archived, asked in any order with repeats: its exact line (first place); others Missing.

    With 3 deflate threads and pieces of at least 40 bytes, gzip commits are
    deflated in pieces (one member, sync flushes between the pieces), as
    commits of a MiB and more are at the real minimum.
    """
    out = Path(os.fspath(tmp_path_factory.mktemp("get"))) / "out"  # type: ignore[attr-defined]
    stored: dict[str, bytes] = {}
    with (
        mock.patch.object(index, "FLUSH_IDS", 16),
        mock.patch.object(index, "MERGE_FLOOR", 1),
        mock.patch.object(framing, "GZIP_MIN_PIECE_BYTES", 40),
    ):
        for number, pairs in enumerate(runs):
            archive = Archive.open(
                ArchiveSettings(
                    out_dir=out,
                    compress=codec,  # type: ignore[arg-type]
                    max_file_bytes=max_file_bytes,
                    compress_threads=deflate_threads,
                ),
                request(number),
            )
            try:
                for start in range(0, len(pairs), per_commit):
                    chunk = [(i, record(i, v)) for i, v in pairs[start : start + per_commit]]
                    archive.commit(chunk)
                    for record_id, line in chunk:
                        stored.setdefault(record_id, line + b"\n")
            finally:
                archive.close()
    rng = random.Random(seed)
    asked = list(stored) + [i for i in absent if i not in stored]
    asked += rng.choices(asked, k=5)
    rng.shuffle(asked)
    results = list(get_records([out], asked))
    assert [r.id for r in results] == asked
    for result in results:
        if result.id in stored:
            assert isinstance(result, Found)
            assert result.line == stored[result.id]
        else:
            assert isinstance(result, Missing)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_get_reads_a_commit_of_megabytes_deflated_in_pieces(tmp_path: Path, codec: str) -> None:
    """A 3 MiB commit: for gzip one member of three deflate pieces (sync flushes between), at the real
    minimum piece size; every record comes back exactly, and so do those of the commits around it."""
    out = tmp_path / "out"
    rng = random.Random(18)
    big = [(f"big-{n}", record(f"big-{n}", rng.randbytes(300_000).hex())) for n in range(5)]
    small = [(f"small-{n}", record(f"small-{n}", n)) for n in range(3)]
    settings = ArchiveSettings(out_dir=out, compress=codec, compress_threads=3)  # type: ignore[arg-type]
    pool = framing.DeflatePool(3)
    try:
        assert pool.pieces(sum(len(line) + 1 for _, line in big)) == 3
    finally:
        pool.close()
    archive = Archive.open(settings, request())
    try:
        for chunk in ([small[0]], big, small[1:]):
            archive.commit(chunk)
    finally:
        archive.close()
    wanted = [small[2], big[3], small[0], big[0], big[4], small[1]]
    results = list(get_records([out], [record_id for record_id, _ in wanted]))
    assert [(r.id, r.line) for r in results if isinstance(r, Found)] == [
        (i, line + b"\n") for i, line in wanted
    ]


def test_shards_are_searched_in_order_and_the_answer_keeps_the_order_asked(tmp_path: Path) -> None:
    """Ids from several archives come back in the order asked; the first archive that holds one wins."""
    one, two = tmp_path / "one", tmp_path / "two"
    export_run(one, ["a", "b", "both"], compress="gzip")
    export_run(two, ["c", "d", "both"], compress="zstd")
    results = list(get_records([two, one], ["d", "a", "both", "zz", "c", "b", "a"]))
    assert [(type(r).__name__, r.id) for r in results] == [
        ("Found", "d"),
        ("Found", "a"),
        ("Found", "both"),
        ("Missing", "zz"),
        ("Found", "c"),
        ("Found", "b"),
        ("Found", "a"),
    ]
    both = results[2]
    assert isinstance(both, Found)
    assert both.archive == two


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir()}


def test_get_reads_while_a_run_holds_the_archive_and_writes_nothing(tmp_path: Path) -> None:
    """While an export holds the lock and commits, get finds every committed record, unflushed ones too."""
    out = tmp_path / "out"
    export_run(out, ["early-1", "early-2"])
    archive = Archive.open(ArchiveSettings(out_dir=out), request(1))
    try:
        archive.commit([("late-1", record("late-1", 1))])  # committed, not yet in an index run
        before = tree(out)
        done = cli("get", str(out), "--id", "late-1", "--id", "early-2", "--id", "later")
        assert done.returncode == 1
        assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == ["late-1", "early-2"]
        assert "'later' is not archived" in done.stderr
        assert tree(out) == before
    finally:
        archive.close()


def flip_byte_in_commit(out: Path, record_id: str) -> None:
    """Damage the stored bytes of the commit holding `record_id` (one byte in the middle)."""
    from exporter.archive.safe_fs import SafeDir
    from exporter.digests import id_digest

    with SafeDir.open_existing(out) as directory, index.open_view(directory) as view:
        ordinal = view.lookup(id_digest(record_id))
        assert ordinal is not None
        place = view.place(ordinal)
    path = out / place.file
    raw = bytearray(path.read_bytes())
    raw[(place.start + place.end) // 2] ^= 0x55
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_a_damaged_commit_is_reported_for_its_ids_and_never_printed(tmp_path: Path, codec: str) -> None:
    """A flipped byte in one commit: its ids are Damaged (crc32), the other commits' ids still Found."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(12)], per_commit=4, compress=codec)
    flip_byte_in_commit(out, "a-5")
    results = {r.id: r for r in get_records([out], [f"a-{i}" for i in range(12)])}
    for number in range(12):
        result = results[f"a-{number}"]
        if 4 <= number < 8:
            assert isinstance(result, Damaged)
            assert "crc32" in result.why
        else:
            assert isinstance(result, Found)
    done = cli("get", str(out), "--id", "a-5", "--id", "a-9")
    assert done.returncode == 1
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == ["a-9"]
    assert "'a-5' is in" in done.stderr
    assert "damaged" in done.stderr


def test_a_cut_records_file_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_run(out, ["a", "b"], per_commit=1)
    path = out / "records-00001.ndjson"
    path.write_bytes(path.read_bytes()[:5])
    results = list(get_records([out], ["a", "b"]))
    assert all(isinstance(r, Damaged) for r in results)
    assert "cut short" in results[0].why  # type: ignore[union-attr]


def test_a_line_holding_another_id_is_not_printed(tmp_path: Path) -> None:
    """A line whose bytes pass the crc32 but hold another id (a writer's bug) is damage, not the record."""
    out = tmp_path / "out"
    archive = Archive.open(ArchiveSettings(out_dir=out), request())
    try:
        archive.commit([("asked", record("someone-else", 1))])
    finally:
        archive.close()
    (result,) = get_records([out], ["asked"])
    assert isinstance(result, Damaged)
    assert "'someone-else'" in result.why


def archive_and_failure(out: Path, reason: str, error: str, status: int) -> None:
    """An archive holding "here", whose failed.ndjson says `reason` about "gone"."""
    export_run(out, ["here"])
    entry = FailedEntry.about("gone", reason=reason, error=error, status=status, attempts=1, run=1, at="t")
    (out / FAILED_NAME).write_bytes(entry.to_json_line())


def test_missing_ids_are_named_with_their_failed_reason(tmp_path: Path) -> None:
    out = tmp_path / "out"
    archive_and_failure(out, "not_found", "HTTP 404 Not Found", 404)
    done = cli("get", str(out), "--id", "gone", "--id", "here", "--id", "never")
    assert done.returncode == 1
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == ["here"]
    assert (
        f"'gone' is not archived: failed.ndjson in {out} says not_found (HTTP 404 Not Found)" in done.stderr
    )
    assert "'never' is not archived\n" in done.stderr


def test_what_get_tells_a_person_is_escaped(tmp_path: Path) -> None:
    """An archive's path and failed.ndjson's error text are anyone's: no control character reaches stderr."""
    out = tmp_path / "out\x1b[2J"
    archive_and_failure(out, "http_error", "HTTP 500 \x1b]0;pwned\x07", 500)
    done = cli("get", str(out), "--id", "gone", "--id", "here")
    assert done.returncode == 1
    assert json.loads(done.stdout)["id"] == "here"
    assert "'gone' is not archived" in done.stderr
    assert "\x1b" not in done.stderr
    assert "\x07" not in done.stderr


def test_ids_file_from_stdin_with_comments_and_bad_lines(tmp_path: Path) -> None:
    """--ids-file - reads a manifest-like list: comments skipped, a line holding no id named, exit 1."""
    out = tmp_path / "out"
    export_run(out, ["a", "b"])
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "get", str(out), "--ids-file", "-"],
        input=b"# wanted\nb\n\na\n" + b"x" * (2 << 20) + b"\n",
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout.splitlines() == [b'{"id": "b"}', b'{"id": "a"}']
    assert b"- line 5" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the ids"),
        (["--id", "a", "--ids-file", "-"], "one of the two"),
        (["--ids-file", "no-such-file"], "cannot open --ids-file no-such-file"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """What get cannot do is said in one line naming the option, exit 2."""
    out = tmp_path / "out"
    export_run(out, ["a"])
    done = cli("get", str(out), *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_closed_standard_output_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    """`exporter get ... >&-` (and status, verify, a dry run): nowhere to print the answer, said in
    one line, exit 2, nothing done."""
    out = tmp_path / "out"
    export_run(out, ["a"])
    (tmp_path / "ids.txt").write_text("a\n")
    for command in (
        ["get", str(out), "--id", "a"],
        ["status", str(out)],
        ["verify", str(out)],
        ["export", str(tmp_path / "ids.txt"), "--base-url", "https://x", "--out", str(out), "--dry-run"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "exporter", *command],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: os.close(1),
            check=False,
            timeout=60,
        )
        assert done.returncode == 2, command
        assert b"standard output is closed" in done.stderr, command
        assert b"Traceback" not in done.stderr


def test_not_an_archive_exits_2(tmp_path: Path) -> None:
    done = cli("get", str(tmp_path), "--id", "a")
    assert done.returncode == 2
    assert "is not an archive" in done.stderr


def test_help_has_examples() -> None:
    done = cli("get", "--help")
    assert done.returncode == 0
    assert "exporter get archive/ --id rec-8f2a31" in done.stdout
    assert "--ids-file" in done.stdout


def test_the_index_files_need_not_exist(tmp_path: Path) -> None:
    """An archive without index files (made before the index) is read from its checkpoint alone."""
    out = tmp_path / "out"
    export_run(out, ["a", "b", "c"], compress="zstd")
    for name in run_files(out):
        (out / name).unlink()
    assert [type(r).__name__ for r in get_records([out], ["c", "a", "x"])] == ["Found", "Found", "Missing"]
    assert not run_files(out)  # and it wrote none


def test_a_forged_commit_span_is_reported_without_reading_it(tmp_path: Path) -> None:
    """A checkpoint whose last commit claims to end 2**62 bytes in: the id is Damaged (past the
    file's end), and nothing of that size is read into memory."""
    out = tmp_path / "out"
    export_run(out, ["a", "b"], per_commit=1)
    path = out / "checkpoint.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    last = max(n for n, line in enumerate(lines) if json.loads(line).get("t") == "commit")
    entry = json.loads(lines[last])
    entry["end"] = 2**62
    lines[last] = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    results = {r.id: r for r in get_records([out], ["a", "b"])}
    assert isinstance(results["a"], Found)
    assert isinstance(results["b"], Damaged)
    assert "cut short" in results["b"].why
