"""What fetching an id produces, and what the run consumes: a record, a failure, a wait, an end.

    Success      the exact NDJSON line of a recording fetched and checked
    Failure      an id that did not export, and why (the writer turns it into a failed.ndjson
                 entry, `archive.layout.FailedEntry`; nothing here writes a file)
    Later        an id to try again after a wait, with what it has used so far (`Tries`)
    Unfinished   an id left for the next run: no request may start any more, and the line
                 that says why
    FetchStats   the counters the summary and the metrics read (answers by `answer_class`)

These are values: the fetcher makes them, the planner makes failures too (a
malformed manifest line), and the job source, the writer, the summary, the
metrics and the dry run read them without importing the HTTP client's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Reason
from .pacing import Halt
from .payload import Record


@dataclass(slots=True)
class Success:
    """A recording fetched and checked: `line` is what goes into the records file (no newline)."""

    id: str
    line: Record
    attempts: int


@dataclass(slots=True)
class Failure:
    """An id that did not export, and why; what one line of failed.ndjson says about it."""

    id: str
    reason: Reason
    error: str
    status: int | None = None
    attempts: int = 0
    #: The manifest line, for problems found in the manifest itself.
    line: int | None = None


@dataclass(slots=True)
class Unfinished:
    """An id left for the next run: no request for it may start any more (`halt` says why,
    `message` in a line for the user)."""

    id: str
    halt: Halt
    message: str = ""


@dataclass(slots=True)
class Tries:
    """What an id has used so far: requests sent, and those that count against --max-attempts."""

    sent: int = 0
    counted: int = 0
    #: Attempts used in dry spell `spell` while the API answered nobody: they count once the
    #: spell is judged the ids' own, and are given back if it was an outage.
    provisional: int = 0
    spell: int = 0
    #: The last failure (reason, message, status): what the id fails with if it comes to that.
    last: tuple[Reason, str, int | None] | None = None


@dataclass(slots=True)
class Later:
    """An id to try again no sooner than `not_before` (monotonic seconds)."""

    id: str
    not_before: float
    tries: Tries


Outcome = Success | Failure | Unfinished | Later


#: The classes `FetchStats.answers` counts by (a 429 apart from the other 4xx; `error`: no answer).
ANSWER_CLASSES = ("2xx", "3xx", "4xx", "5xx", "429", "error")


def answer_class(status: int | None) -> str:
    """The class of an answer for the metrics: `429`, `2xx`..`5xx`, or `error` (none, or nonsense)."""
    if status is None:
        return "error"
    if status == 429:
        return "429"
    if 200 <= status < 600:
        return f"{status // 100}xx"
    return "error"


@dataclass(slots=True)
class FetchStats:
    """Counters for summary.json and the metrics; touched only from the event loop."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    #: Answers by `answer_class`; a request abandoned at a stop is in none.
    answers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANSWER_CLASSES, 0))
    #: Requests sent and not yet answered.
    in_flight: int = 0
