"""The files a test hands the exporter and reads back: a manifest, records, failures, the summary.

Plain functions over paths, imported by the tests that need them (fixtures live in conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_manifest(path: Path, ids: Sequence[str]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return path


def read_records(out: Path) -> list[dict[str, Any]]:
    """Every record of an uncompressed archive, parsed with Python's json, in file order."""
    records: list[dict[str, Any]] = []
    for path in sorted(out.glob("records-*.ndjson")):
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle)
    return records


def read_failed(out: Path) -> dict[str, dict[str, Any]]:
    path = out / "failed.ndjson"
    if not path.exists():
        return {}
    return {entry["id"]: entry for entry in map(json.loads, path.read_text().splitlines())}


def read_summary(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return result
