"""`exporter index DIR [--rebuild]`: the index brought up to date by hand, under the archive's lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runs import cli
from test_index import assert_exact, export_run, run_files

from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings


def test_rebuild_writes_an_index_for_an_archive_that_has_none(tmp_path: Path) -> None:
    """An archive made before the index existed (no run files) gets an exact one, and says how big."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(30)], compress="gzip")
    for name in run_files(out):
        (out / name).unlink()
    done = cli("index", str(out), "--rebuild", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ids"] == 30
    assert report["rebuilt"] is True
    assert report["runs"] == run_files(out)
    assert report["index_bytes"] == sum((out / name).stat().st_size for name in run_files(out))
    assert_exact(out)


def test_catch_up_without_rebuild_leaves_a_current_index_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_run(out, ["a", "b"])
    before = {name: (out / name).stat().st_mtime_ns for name in run_files(out)}
    done = cli("index", str(out))
    assert done.returncode == 0, done.stderr
    assert "index up to date" in done.stdout
    assert "2 ids" in done.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in run_files(out)} == before


def test_a_running_export_keeps_the_index_command_out(tmp_path: Path) -> None:
    """It writes, so it waits its turn: exit 4 while a run holds the archive, and nothing changed."""
    out = tmp_path / "out"
    export_run(out, ["a"])
    archive = Archive.open(
        ArchiveSettings(out_dir=out), RunRequest(started_at="t", refetch=False, manifest="m", shard=None)
    )
    try:
        before = sorted(os.listdir(out))
        done = cli("index", str(out), "--rebuild")
        assert done.returncode == 4
        assert "another exporter" in done.stderr
        assert sorted(os.listdir(out)) == before
    finally:
        archive.close()


def test_not_an_archive_is_a_usage_error(tmp_path: Path) -> None:
    done = cli("index", str(tmp_path))
    assert done.returncode == 2
    assert "is not an archive" in done.stderr


def test_help_has_examples() -> None:
    done = cli("index", "--help")
    assert done.returncode == 0
    assert "exporter index archive/ --rebuild" in done.stdout


def test_what_it_prints_is_escaped(tmp_path: Path) -> None:
    """The archive's path goes to a terminal: its control characters are escaped, the JSON stays exact."""
    out = tmp_path / "out\x1b[2J"
    export_run(out, ["a"])
    done = cli("index", str(out))
    assert done.returncode == 0, done.stderr
    assert "index up to date" in done.stdout
    assert "\x1b" not in done.stdout
    done = cli("index", str(out), "--json")
    assert json.loads(done.stdout)["archive"] == str(out)


def test_its_json_escapes_what_json_leaves_raw(tmp_path: Path) -> None:
    """JSON escapes C0 controls but not C1 controls or bidi overrides: `--json` writes them as \\u
    escapes, so the line is safe on a terminal and still the same value."""
    out = tmp_path / "out\x9b2J\u202e"
    export_run(out, ["a"])
    done = cli("index", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert "\x9b" not in done.stdout
    assert "\u202e" not in done.stdout
    assert json.loads(done.stdout)["archive"] == str(out)


def test_its_json_names_an_archive_whose_name_is_not_utf8(tmp_path: Path) -> None:
    """A directory name holding bytes that are not UTF-8 is written as the value Python reads it as
    (a \\udcxx escape), not a traceback."""
    out = tmp_path / os.fsdecode(b"out\xff")
    export_run(out, ["a"])
    done = cli("index", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["archive"] == str(out)
