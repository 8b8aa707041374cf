"""From a response body to one exact NDJSON line: the recording, nothing else.

The archive must hold every value exactly as served: integers of any width,
`-0.0`, `1e308`, strings with NUL or U+2028, deep nesting. The contract is that
`json.loads(line) == json.loads(body)["data"]` in Python.

Two paths:

* Fast: `orjson.loads` + `orjson.dumps`. Exact for everything orjson reads
  exactly, which is all JSON except integers outside the 64-bit range (orjson
  turns those into floats, silently) and nesting deeper than 255 (orjson
  refuses). Any integer that wide has at least 19 digits, so a body with no run
  of 19 digits anywhere cannot contain one; that scan is the guard.
* Exact: for the rest. The body is walked with the standard library's JSON
  scanner, which reports where each top-level member ends, and the `data`
  member's own text is kept, with only the whitespace outside strings removed.
  Numbers keep their literal spelling, so nothing is rounded.

Both paths check that the body is an object whose `data` is a recording with
the id that was asked for, and raise `BadResponse` saying what was wrong
otherwise (an HTML error page, a truncated body, another id).
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import orjson

from .errors import BadResponse

# The guard for wide integers: map every digit to "0" and look for 19 zeros in a
# row. Two C passes over the body, some fifteen times faster than a regex scan.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_WS = re.compile(r"[ \t\n\r]*")
# A JSON string (unrolled-loop form, linear on megabyte strings) or a run of
# insignificant whitespace; `_minify` keeps the first and drops the second.
_STRING_OR_WS = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+', re.DOTALL)
_NEWLINE = b"\n"


def decode_record(body: bytes, expected_id: str) -> bytes:
    """The NDJSON line (with its newline) for the recording in `body`, or BadResponse."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _exact_line(body, expected_id)
    if body.translate(_DIGITS_TO_ZERO).find(_NINETEEN_DIGITS) >= 0:
        return _exact_line(body, expected_id)
    data = _recording(document, expected_id)
    try:
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _exact_line(body, expected_id)


def _recording(document: Any, expected_id: str) -> dict[str, Any]:
    """The `data` object of a parsed body, checked to be the recording asked for."""
    if not isinstance(document, dict):
        raise BadResponse(f'body is a JSON {_kind(document)}, not an object with a "data" member')
    if "data" not in document:
        keys = ", ".join(sorted(str(k) for k in document)[:8])
        raise BadResponse(f'body has no "data" member (it has: {keys or "nothing"})')
    data = document["data"]
    if not isinstance(data, dict):
        raise BadResponse(f'"data" is a JSON {_kind(data)}, not a recording object')
    served = data.get("id")
    if isinstance(served, int) and not isinstance(served, bool):
        served = str(served)
    if served != expected_id:
        shown = repr(served)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise BadResponse(f"data.id is {shown}, not the id that was asked for")
    return data


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _exact_line(body: bytes, expected_id: str) -> bytes:
    """The slow, literal path: keep the `data` member's own text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadResponse(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=str, parse_int=str, strict=True)
    try:
        start, end, data = _data_member(text, decoder)
    except json.JSONDecodeError as exc:
        raise BadResponse(_not_json(text, exc)) from exc
    except RecursionError as exc:
        raise BadResponse("body is nested too deeply to read safely") from exc
    _recording({"data": data}, expected_id)
    return _minify(text[start:end]).encode("utf-8") + _NEWLINE


def _data_member(text: str, decoder: json.JSONDecoder) -> tuple[int, int, Any]:
    """Start, end and decoded value of the top-level `data` member of a JSON object text."""
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "{":
        if not text.strip():
            raise BadResponse("body is empty")
        raise json.JSONDecodeError("Expecting an object", text, pos)
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    found: tuple[int, int, Any] | None = None
    members = 0
    while text[pos : pos + 1] != "}" or members:
        if text[pos : pos + 1] != '"':
            raise json.JSONDecodeError("Expecting a member name", text, pos)
        key, pos = decoder.raw_decode(text, pos)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != ":":
            raise json.JSONDecodeError("Expecting ':'", text, pos)
        start = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        value, end = decoder.raw_decode(text, start)
        if key == "data":
            found = (start, end, value)  # the last one wins, as in json.loads
        members += 1
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] == ",":
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            continue
        if text[pos : pos + 1] != "}":
            raise json.JSONDecodeError("Expecting ',' or '}'", text, pos)
        break
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if pos != len(text):
        raise json.JSONDecodeError("Extra data after the object", text, pos)
    if found is None:
        raise BadResponse('body has no "data" member')
    return found


def _minify(text: str) -> str:
    """`text` without the whitespace outside strings: one line, same tokens."""
    return _STRING_OR_WS.sub(lambda m: m.group(1) or "", text)


def _refuse_constant(name: str) -> NoReturn:
    raise BadResponse(f"body holds {name}, which is not JSON; such a value cannot be archived")


def _not_json(text: str, exc: json.JSONDecodeError) -> str:
    """A message for a body that is not JSON, showing only what identifies an error page."""
    head = text.lstrip()[:60]
    if head.startswith("<"):
        shown = head.encode("ascii", "backslashreplace").decode("ascii")
        return f"body is HTML, not JSON (starts {shown!r})"
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return f"body is not complete JSON: it ends after {len(text.encode())} bytes (truncated?)"
    return f"body is not valid JSON: {exc.msg} at character {exc.pos}"
