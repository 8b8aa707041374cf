"""`exporter verify` checks the index against the checkpoint, and says so (`offline/verify_index.py`)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from runs import cli
from test_index import export_run, run_files

from exporter.archive import index
from exporter.archive.index_format import TRAILER_BYTES, RunHeader
from exporter.offline.verify import verify_archives


def test_an_agreeing_index_is_confirmed(tmp_path: Path) -> None:
    """A sound archive: no finding, and the report (and the command's output) says the index agrees."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(40)], compress="zstd")
    report = verify_archives([out])
    assert report.problems == []
    assert [n.message for n in report.notes] == [
        "missing: no run has finished yet (the first one was killed?)"
    ]
    assert report.confirmed == [f"{out}: the index (1 run) agrees with the checkpoint for 40 of 40 ids"]
    done = cli("verify", str(out))
    assert done.returncode == 0
    assert "the index (1 run) agrees with the checkpoint for 40 of 40 ids" in done.stdout


def test_an_index_behind_or_damaged_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Index files that cannot be used are left for the next run to replace: notes, not problems."""
    monkeypatch.setattr(index, "FLUSH_IDS", 10)
    monkeypatch.setattr(index, "MERGE_FLOOR", 1)
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(60)])
    runs = run_files(out)
    assert len(runs) > 1
    raw = bytearray((out / runs[-1]).read_bytes())
    raw[200] ^= 1
    (out / runs[-1]).write_bytes(bytes(raw))
    report = verify_archives([out])
    assert report.problems == []
    messages = [note.message for note in report.notes]
    assert any("crc32 does not match" in m for m in messages), messages
    assert any("the index covers" in m and "of the 60 ids" in m for m in messages), messages


def rewrite(path: Path, change: int, value: bytes) -> None:
    """Put `value` at offset `change` of a run file and make its crc32 right again (a forgery)."""
    raw = bytearray(path.read_bytes())
    raw[change : change + len(value)] = value
    body = len(raw) - TRAILER_BYTES
    raw[body : body + 4] = struct.pack("<I", zlib.crc32(bytes(raw[:body])))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("section", ["keys", "commits", "ids"])
def test_an_index_that_says_something_else_is_a_problem(tmp_path: Path, section: str) -> None:
    """An index whose crc32 and checkpoint hash hold but whose content is wrong is a problem, with the fix."""
    out = tmp_path / "out"
    export_run(out, [f"a-{i}" for i in range(30)])
    (name,) = run_files(out)
    path = out / name
    header = RunHeader.unpack(path.read_bytes())
    at = header.sections()[section][0]
    if section == "commits":
        at += 4  # the first commit's crc32
    rewrite(path, at, b"\xee\xee\xee\xee")
    report = verify_archives([out])
    assert report.problems, [str(p) for p in report.findings]
    assert all("the index disagrees with the checkpoint" in p.message for p in report.problems)
    assert "--rebuild" in report.problems[0].message
    assert report.confirmed == []
