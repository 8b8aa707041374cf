"""The benchmark's results files: README tables regenerated from them, two runs compared figure by figure,
and the scenario registry the command line is built from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.cli import build_parser
from benchmarks.results import Table, compare, record_tables, report
from benchmarks.scenarios import SCENARIOS, needs_nginx

ROOT = Path(__file__).resolve().parent.parent


def _results(exporter_rate: float, floor_rate: float) -> dict[str, object]:
    section: dict[str, object] = {
        "ids": 2000,
        "medians": [
            {"contender": "floor", "records_per_s": floor_rate, "vs_floor": None},
            {"contender": "exporter", "records_per_s": exporter_rate, "vs_floor": exporter_rate / floor_rate},
        ],
        "measurements": [{"contender": "floor", "repetition": 1, "records_per_s": floor_rate}],
    }
    table = Table(
        title="throughput",
        header=("contender", "records/s"),
        rows=(("floor", f"{floor_rate:,.0f}"), ("exporter", f"{exporter_rate:,.0f}")),
        right=(False, True),
    )
    record_tables(section, [table])
    return {"command": "bench.py --smoke", "versions": {"exporter": "commit abc1234"}, "throughput": section}


def test_report_prints_the_tables_a_run_recorded_as_markdown() -> None:
    """The README table comes back from the results file exactly, alignment included."""
    text = report(json.loads(json.dumps(_results(9000.0, 8000.0))))
    assert "| contender | records/s |\n|---|---:|\n| floor | 8,000 |\n| exporter | 9,000 |" in text
    assert "commit abc1234" in text


def test_compare_names_each_figure_by_its_contender_and_gives_the_ratio() -> None:
    """Figures both runs hold, labelled by contender, old, new and new/old; raw per-run series left out."""
    text = compare(_results(9000.0, 8000.0), _results(4500.0, 8000.0))
    assert "| throughput.medians[contender=exporter].records_per_s | 9,000 | 4,500 | 0.50 |" in text
    assert "| throughput.medians[contender=floor].records_per_s | 8,000 | 8,000 | 1.00 |" in text
    assert "measurements" not in text
    assert "tables" not in text


def test_compare_and_report_run_from_the_command_line(tmp_path: Path) -> None:
    """`bench.py compare OLD NEW` and `bench.py report FILE` read files and need no nginx or exporter."""
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_results(9000.0, 8000.0)))
    new.write_text(json.dumps(_results(9900.0, 8000.0)))
    bench = [sys.executable, str(ROOT / "scripts" / "bench.py")]
    done = subprocess.run(
        [*bench, "compare", str(old), str(new)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "| 9,000 | 9,900 | 1.10 |" in done.stdout
    done = subprocess.run([*bench, "report", str(new)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "| exporter | 9,900 |" in done.stdout


def test_every_scenario_the_readme_cites_is_registered_with_its_options() -> None:
    """--scenario NAME for each README scenario, each one's options in its own help group."""
    names = [s.name for s in SCENARIOS]
    assert names == ["throughput", "rate", "latency", "memory", "pacing", "dryrun", "compress", "scale"]
    assert [n for n in names if not needs_nginx(n)] == ["pacing", "dryrun", "compress", "scale"]
    assert needs_nginx("all")
    groups = [g.title for g in build_parser()._action_groups]
    assert [f"--scenario {n}" for n in ("rate", "latency", "memory", "pacing", "compress", "scale")] == [
        g for g in groups if g and g.startswith("--scenario")
    ]
