"""The results file, and the two commands that read it: `bench.py report` and `bench.py compare`.

Every run writes one JSON file (`--json PATH`, else `bench-out/results-SCENARIO-TIME.json`): the
command, the settings, the versions, and one section per scenario with its raw figures and the
tables it prints for the README (`record_tables`). So a README table is regenerated from a file
(`bench.py report FILE`), not copied from a terminal, and two runs, say the previous commit's
and this one's on the same machine, are compared figure by figure (`bench.py compare OLD NEW`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

#: Raw series kept for inspection, not figures: per-repetition measurements (their medians are
#: compared), the 5 s rate series, quota windows and the tables (text).
NOT_FIGURES: Final = frozenset({"measurements", "rates_5s", "windows", "tables", "settings", "versions"})
#: Fields that name an element of a list of figures (a contender, a codec...), in label order.
LABELS: Final = ("contender", "codec", "record_bytes", "rate", "repetition", "run")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Table:
    """A README table: a title, a header, rows of text; `right` marks right-aligned columns."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: tuple[bool, ...] = ()

    def markdown(self) -> str:
        rule = ["---:" if i < len(self.right) and self.right[i] else "---" for i in range(len(self.header))]
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join(rule) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "header": self.header, "rows": self.rows, "right": self.right}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Table:
        return cls(
            title=str(data["title"]),
            header=tuple(map(str, data["header"])),
            rows=tuple(tuple(map(str, row)) for row in data["rows"]),
            right=tuple(map(bool, data.get("right", ()))),
        )


def record_tables(section: dict[str, Any], tables: Sequence[Table]) -> None:
    """Keep a scenario's README tables in its results section, for `bench.py report`."""
    section["tables"] = [table.as_json() for table in tables]


def default_path(workdir: Path, scenario: str, started: str) -> Path:
    return workdir / f"results-{scenario}-{started}.json"


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def load(path: Path) -> dict[str, Any]:
    """A results file, or SystemExit with a message saying which file and why."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bench.py: cannot read results {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"bench.py: {path} is not a results file (a JSON object)")
    return data


def report(results: dict[str, Any]) -> str:
    """Every scenario's README tables, as markdown, in the order they ran."""
    parts = [f"<!-- {results.get('command', '?')}; {results.get('versions', {}).get('exporter', '?')} -->"]
    for name, section in results.items():
        if isinstance(section, dict) and isinstance(section.get("tables"), list):
            for table in map(Table.from_json, section["tables"]):
                parts.append(f"{name}: {table.title}\n\n{table.markdown()}")
    return "\n\n".join(parts)


def figures(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(dotted name, number) for every numeric leaf; list elements named by their LABELS."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        if math.isfinite(value):
            yield path, float(value)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in NOT_FIGURES and key not in LABELS:
                yield from figures(item, f"{path}.{key}" if path else str(key))
        return
    if isinstance(value, list):
        for index, item in enumerate(value, 1):
            label = ""
            if isinstance(item, dict):
                label = ",".join(f"{k}={item[k]}" for k in LABELS if k in item)
            yield from figures(item, f"{path}[{label or index}]")


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A markdown table of every figure both results hold: old, new and new/old."""
    before = {name: number for name, number in figures(_scenarios(old))}
    rows = []
    for name, number in figures(_scenarios(new)):
        if name in before:
            was = before[name]
            ratio = f"{number / was:.2f}" if was else ""
            rows.append((name, f"{was:,.4g}", f"{number:,.4g}", ratio))
    table = Table(
        title="",
        header=("figure", "old", "new", "new/old"),
        rows=tuple(rows),
        right=(False, True, True, True),
    )
    heading = f"old: {old.get('command', '?')} ({old.get('versions', {}).get('exporter', '?')})\n"
    heading += f"new: {new.get('command', '?')} ({new.get('versions', {}).get('exporter', '?')})\n\n"
    return heading + (table.markdown() if rows else "(no figure in common)")


def _scenarios(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if isinstance(v, dict) and k not in NOT_FIGURES}


def main(command: str, argv: Sequence[str]) -> int:
    """`bench.py report RESULTS` or `bench.py compare OLD NEW`."""
    parser = argparse.ArgumentParser(prog=f"bench.py {command}", description=(__doc__ or "").split("\n")[0])
    if command == "report":
        parser.add_argument(
            "results", type=Path, help="a results file (bench.py --json, or bench-out/results-*)"
        )
        args = parser.parse_args(argv)
        print(report(load(args.results)))
    else:
        parser.add_argument(
            "old", type=Path, help="the results to compare against (e.g. the previous commit's)"
        )
        parser.add_argument("new", type=Path, help="the results to compare")
        args = parser.parse_args(argv)
        print(compare(load(args.old), load(args.new)))
    return 0
