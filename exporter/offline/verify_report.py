"""What `exporter verify` finds, and how it is printed.

A `Problem` is one finding: a file (and a line, when it is about one line), a
message, and a severity: "problem" fails the verification, "note" reports a
leftover the next export run deals with by itself. `Findings` collects them
into a `Report`, listing at most `DETAIL_LIMIT` per-line problems per file and
only counting the rest, so a file damaged on every line still gives a report a
person can read (and memory that stays bounded). `print_report` prints one
finding a line, then the totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from exporter.display import escape
from exporter.errors import ExitCode

Severity = Literal["problem", "note"]

#: Per-line findings listed for one file (or one manifest) before the rest are only counted.
DETAIL_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (a file, and a line when it is about one line), what, and how bad.

    `severity` "problem" fails the verification; "note" reports something
    expected (an uncommitted tail after a crash, a summary a killed run did not
    rewrite) that the next export run deals with by itself.
    """

    path: str
    line: int | None
    message: str
    severity: Severity = "problem"

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{'note: ' if self.severity == 'note' else ''}{where}: {self.message}"


@dataclass(slots=True)
class Report:
    """What `verify_archives` found, and how much it read."""

    findings: list[Problem] = field(default_factory=list)
    #: Problems not listed in `findings` (over DETAIL_LIMIT for one file), by path.
    unlisted: dict[str, int] = field(default_factory=dict)
    archives: int = 0
    files: int = 0
    #: Committed lines read whose record has an id.
    records: int = 0
    manifest: str | None = None
    #: What was proven beyond the records (the index agrees), one line each.
    confirmed: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for p in self.findings if p.severity == "problem"]

    @property
    def notes(self) -> list[Problem]:
        return [p for p in self.findings if p.severity == "note"]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unlisted

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.ok else ExitCode.INCOMPLETE)

    def summary_line(self) -> str:
        against = f" against {self.manifest}" if self.manifest is not None else ""
        count = len(self.problems) + sum(self.unlisted.values())
        return (
            f"verified {_plural(self.archives, 'archive')}{against}: {self.records} records in "
            f"{_plural(self.files, 'file')}, {_plural(count, 'problem')}"
        )


class Findings:
    """Adds findings to `report`: every problem and note, per-line problems up to DETAIL_LIMIT a file."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self._details: dict[str, int] = {}

    def problem(self, path: Path | str, line: int | None, message: str) -> None:
        self.report.findings.append(Problem(str(path), line, message))

    def note(self, path: Path | str, line: int | None, message: str) -> None:
        self.report.findings.append(Problem(str(path), line, message, "note"))

    def detail(self, path: Path | str, line: int | None, message: str) -> None:
        """A per-line problem: listed up to DETAIL_LIMIT per file, counted after that."""
        key = str(path)
        listed = self._details.get(key, 0)
        if listed < DETAIL_LIMIT:
            self._details[key] = listed + 1
            self.problem(key, line, message)
        else:
            self.unlisted(key)

    def unlisted(self, path: Path | str, count: int = 1) -> None:
        unlisted = self.report.unlisted
        unlisted[str(path)] = unlisted.get(str(path), 0) + count


def print_report(report: Report, out: TextIO, *, quiet: bool = False) -> None:
    """Problems (and unless `quiet` notes, then the summary line), one a line.

    Paths, ids and what a damaged line holds are anyone's text: each line is
    escaped (`display.escape`) so that it stays one harmless line.
    """
    for finding in report.findings:
        if not quiet or finding.severity == "problem":
            out.write(escape(str(finding)) + "\n")
    for path, count in report.unlisted.items():
        out.write(escape(f"{path}: {_plural(count, 'more problem')} like the ones above, not listed") + "\n")
    if not quiet:
        for line in report.confirmed:
            out.write(escape(line) + "\n")
        out.write(escape(report.summary_line()) + "\n")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
