"""verify --manifest (offline/completeness): several shards' archives together hold exactly the manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from archive_runs import export_run, ids, only

from exporter.config import ManifestSource
from exporter.errors import ManifestError
from exporter.offline.verify import verify_archives


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    """Three shard-like archives over disjoint ids; shard 1 found `gone` missing and `flaky` failing."""
    roots = [tmp_path / f"shard-{k}" for k in range(3)]
    export_run(roots[0], [ids("a", 4)])
    export_run(roots[1], [ids("b", 3)], failures=[("gone", "not_found"), ("flaky", "http_error")])
    export_run(roots[2], [ids("c", 2), ids("d", 2)], compress="zstd")
    return roots


def manifest(path: Path, lines: Sequence[str]) -> ManifestSource:
    path.write_text("".join(f"{line}\n" for line in lines))
    return ManifestSource(path=path)


def all_ids() -> list[str]:
    return ids("a", 4) + ids("b", 3) + ids("c", 2) + ids("d", 2)


def test_manifest_complete_and_disjoint(shards: list[Path], tmp_path: Path) -> None:
    """Every manifest id archived once or not_found, nothing else: exit 0; invalid ids are only notes."""
    source = manifest(tmp_path / "ids.txt", [*all_ids(), "gone", "a b", *all_ids()[:2]])
    report = verify_archives(shards, manifest=source)
    assert report.problems == [], [str(p) for p in report.findings]
    (note,) = report.notes
    assert (note.path, note.line) == (str(tmp_path / "ids.txt"), 13)
    assert "invalid id 'a b'" in note.message
    assert report.summary_line() == (
        f"verified 3 archives against {tmp_path / 'ids.txt'}: 11 records in 3 files, 0 problems"
    )


def test_manifest_id_missing(shards: list[Path], tmp_path: Path) -> None:
    """A manifest id in no archive and not found-missing is named with its manifest line (and any failure)."""
    source = manifest(tmp_path / "ids.txt", [*all_ids(), "gone", "lost", "flaky"])
    report = verify_archives(shards, manifest=source)
    lost = only(report, "'lost'")
    assert (lost.path, lost.line) == (str(tmp_path / "ids.txt"), 13)
    assert lost.message == "id 'lost' is in no archive, nor listed in any failed.ndjson"
    assert (
        only(report, "'flaky'").message == "id 'flaky' is in no archive, failed.ndjson lists it as http_error"
    )
    assert report.exit_code == 1


def test_manifest_id_in_two_archives(shards: list[Path], tmp_path: Path) -> None:
    """An id archived by two shards fails the manifest check as a duplicate with both places."""
    export_run(shards[2], [["b001"]])
    report = verify_archives(shards, manifest=manifest(tmp_path / "ids.txt", all_ids()))
    problem = only(report, "duplicate")
    assert str(shards[1] / "records-00001.ndjson") + ":2" in problem.message
    assert problem.path == str(shards[2] / "records-00002.ndjson")


def test_manifest_extra_archived_id(shards: list[Path], tmp_path: Path) -> None:
    """An archived id the manifest does not list is reported where it is archived."""
    report = verify_archives(shards, manifest=manifest(tmp_path / "ids.txt", all_ids()[1:]))
    problem = only(report, "not in the manifest")
    assert (problem.path, problem.line) == (str(shards[0] / "records-00001.ndjson"), 1)


def test_unreadable_manifest_is_a_usage_error(shards: list[Path], tmp_path: Path) -> None:
    """A manifest that cannot be opened raises ManifestError (exit 2)."""
    with pytest.raises(ManifestError):
        verify_archives(shards, manifest=ManifestSource(path=tmp_path / "none.txt"))
