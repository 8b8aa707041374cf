"""How log lines look on stderr: text for people, or one JSON object a line for log search.

Code that logs an event passes its name and fields through `extra=event(...)`;
the text formatter shows only the message, as it always has, and the JSON
formatter writes the stable keys `ts` (RFC 3339, UTC), `level`, `event`, `run`
and `message`, then the event's own fields. A line without an event is named
after its level (`warning`, `error`, ...). Events meant for machines only
(`start`, `failed`, `commit`) are marked `text=False` and dropped from the
text format, which stays as people know it.

Nothing here ever sees the token: it lives in a `Secret`, whose repr hides
it, and no event carries it (tests assert that on every line).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

_EVENT = "exporter_event"
_FIELDS = "exporter_fields"
_IN_TEXT = "exporter_in_text"
#: Keys every JSON line has, in this order; an event's fields never replace them.
STABLE_KEYS = ("ts", "level", "event", "run", "message")


def event(name: str, *, text: bool = True, **fields: Any) -> dict[str, Any]:
    """The `extra=` of a log call that is an event: `log.info("...", extra=event("start", run=3))`.

    `text=False`: the line is for the JSON format only.
    """
    return {_EVENT: name, _FIELDS: fields, _IN_TEXT: text}


def rfc3339(epoch: float) -> str:
    """UTC with milliseconds and `Z`: `2026-11-26T02:14:05.123Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextOnly(logging.Filter):
    """Drops the events meant for the JSON format only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(getattr(record, _IN_TEXT, True))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    `run` is the archive's run number: announced by the `start` event (any
    event with a `run` field), carried by every line after it; null before.
    """

    def __init__(self) -> None:
        super().__init__()
        self._run: int | None = None

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS, {})
        run = fields.get("run")
        if isinstance(run, int):
            self._run = run
        level = record.levelname.lower()
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": level,
            "event": getattr(record, _EVENT, level),
            "run": self._run,
            "message": record.getMessage(),
        }
        for key, value in fields.items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        # orjson escapes every control character, so a line is always one line, whatever an id holds.
        return orjson.dumps(doc, default=str).decode("utf-8")
