"""How log lines look on stderr: text for people, or one JSON object a line for log search.

Code that logs an event passes its name and fields through `extra=event(...)`;
the text formatter shows only the message (what a person reads), and the JSON
formatter writes the stable keys `ts` (RFC 3339, UTC), `level`, `event`, `run`
and `message`, then the event's own fields. A line without an event is named
after its level (`warning`, `error`, ...). Events meant for machines only
(`start`, `failed`, `commit`) are marked `text=False` and dropped from the
text format, which stays as people know it.

Both formats are where log text meets a person, so both make hostile text
harmless (`display.py`): the text formatter escapes every control character
the values of a line carry (an id, a path, a server's words), never the line's
own wording; the JSON formatter keeps every value exact and writes the
characters a terminal would act on as `\\u` escapes.

Nothing here ever sees the token: it lives in a `Secret`, whose repr hides
it, and no event carries it (tests assert that on every line).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from .display import escape, json_safe

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


class _Shown(str):
    """A value in a text line: `%s` shows it escaped; `%r` as repr() does, which escapes alike."""

    _value: object

    def __new__(cls, value: object) -> _Shown:
        shown = super().__new__(cls, escape(str(value)))
        shown._value = value
        return shown

    def __repr__(self) -> str:
        return repr(self._value)


def _shown(value: object) -> object:
    """A log call's argument as a text line may carry it: numbers as they are, anything else escaped."""
    if value is None or isinstance(value, int | float):
        return value
    return _Shown(value)


class TextFormatter(logging.Formatter):
    """`exporter: MESSAGE` for people: the values in a message escaped, its own wording as written.

    A log call's format string is the program's; its arguments are data (an
    id, a path, a server's error text) and are escaped, so nothing they hold
    can move the cursor, retitle the terminal or start a line of its own. A
    message without arguments is escaped whole.
    """

    def __init__(self) -> None:
        super().__init__("exporter: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"exporter: {text_message(record)}"

    def formatException(self, ei: Any) -> str:
        # A traceback's lines are Python's; what an exception says is escaped line by line.
        return "\n".join(escape(line) for line in super().formatException(ei).split("\n"))


def text_message(record: logging.LogRecord) -> str:
    """The record's message with its arguments escaped (`TextFormatter`)."""
    args = record.args
    if not args:
        return escape(str(record.msg))
    if isinstance(args, Mapping):
        return str(record.msg) % {key: _shown(value) for key, value in args.items()}
    return str(record.msg) % tuple(_shown(value) for value in args)


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
        # JSON escapes every C0 control, so a line is always one line, whatever an id holds;
        # json_safe escapes the rest a terminal would act on (C1, bidi overrides, ...).
        try:
            line = orjson.dumps(doc, default=str).decode("utf-8")
        except orjson.JSONEncodeError:
            # A lone surrogate (bytes that were not UTF-8): orjson refuses it, json writes it
            # as a \\u escape, the exact value still.
            line = json.dumps(doc, default=str, ensure_ascii=True)
        return json_safe(line)
