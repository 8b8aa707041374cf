"""verify_report: findings, the per-file cap on per-line problems, and the printed report."""

from __future__ import annotations

import io
from pathlib import Path

from exporter.offline.verify_report import DETAIL_LIMIT, Findings, Problem, Report, print_report


def test_printer_formats_and_quiet(tmp_path: Path) -> None:
    """Findings print as `path:line: message`, notes prefixed, then the totals; quiet prints problems only."""
    report = Report(
        findings=[Problem("d/records-00001.ndjson", 3, "bad"), Problem("d", None, "tail", "note")],
        archives=1,
        files=1,
        records=5,
    )
    out = io.StringIO()
    print_report(report, out)
    assert out.getvalue().splitlines() == [
        "d/records-00001.ndjson:3: bad",
        "note: d: tail",
        "verified 1 archive: 5 records in 1 file, 1 problem",
    ]
    out = io.StringIO()
    print_report(report, out, quiet=True)
    assert out.getvalue() == "d/records-00001.ndjson:3: bad\n"


def test_per_line_problems_are_capped_per_file() -> None:
    """`detail` lists DETAIL_LIMIT problems a file and counts the rest; problems and notes are not capped."""
    findings = Findings(Report())
    for line in range(DETAIL_LIMIT + 5):
        findings.detail(Path("d/a"), line, "bad line")
        findings.problem("d/a", None, "whole file")
    findings.detail("d/b", 1, "bad line")
    findings.note("d", None, "tail")
    report = findings.report
    assert len([p for p in report.problems if p.path == "d/a" and p.line is not None]) == DETAIL_LIMIT
    assert len([p for p in report.problems if p.line is None]) == DETAIL_LIMIT + 5
    assert report.unlisted == {"d/a": 5}
    assert [str(n) for n in report.notes] == ["note: d: tail"]
    assert not report.ok
    assert report.exit_code == 1
