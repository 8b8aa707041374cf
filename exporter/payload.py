"""From a response body to one exact line of JSON: the recording, nothing else.

The archive must hold every value exactly as served: integers of any width,
`-0.0`, `1e308`, strings with NUL or U+2028, deep nesting. The contract is that
`json.loads(line) == json.loads(body)["data"]` in Python.

Three paths, fastest first:

* Verbatim: a compact body that starts `{"data":{` (what APIs send). The
  whole body is validated by simdjson (a few microseconds for 10 KB, several
  times faster than building it with orjson), then the `data` member's own
  bytes are cut out and become the line, so every value is byte for byte what
  was served and nothing is re-encoded. Where `data` ends is found from the
  right: the `},"` after which the rest parses as an object holding exactly the
  body's other members, in order. Only the true end of `data` can do that, so
  no string content can fool it. (One difference from json.loads is left
  alone: should a recording carry two `id` members, the first is compared with
  the id asked for, not the last; `exporter verify` reads them the other way
  and would report the record.)
* Re-encoded: any other body orjson reads exactly, parsed and `data` dumped
  again. orjson reads every JSON value exactly except integers outside the
  64-bit range, which it turns into floats without a word; any such integer
  has at least 19 digits, so a body with no run of 19 digits cannot hold one.
* Literal: the rest (wide integers in a pretty-printed body, nesting deeper
  than orjson writes). The standard library's scanner reports where the
  `data` member ends and its own text is kept, minus the whitespace outside
  strings. Numbers keep their spelling, so nothing is rounded.

Every path checks that the body is an object whose `data` is a recording with
the id that was asked for, and raises `BadResponse` saying what was wrong
otherwise (an HTML error page, a truncated body, another id).
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import orjson
import simdjson

from .bounded import capped
from .errors import BadResponse

# The guard for wide integers: map every digit to "0" and look for 19 zeros in a
# row. Two C passes over the body, some fifteen times faster than a regex scan.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_WS = re.compile(r"[ \t\n\r]*")
# A JSON string (unrolled-loop form, linear on megabyte strings) or a run of
# insignificant whitespace; `_minify` keeps the first and drops the second.
_STRING_OR_WS = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+', re.DOTALL)
_COMPACT_START = b'{"data":{'
#: A member name quoted in a BadResponse is cut to this many bytes (a server may send 48 MiB of one).
_KEY_BYTES = 40

#: One archived record: a single line of JSON without its newline. A view into
#: the response body when the served bytes are kept as they are.
Record = bytes | memoryview


class PayloadDecoder:
    """Turns response bodies into archive lines; keeps one reusable simdjson parser.

    Not thread-safe (the parser is not): the pipeline makes one per event loop.
    """

    __slots__ = ("_parser",)

    def __init__(self) -> None:
        self._parser = simdjson.Parser()

    def __call__(self, body: bytes, expected_id: str) -> Record:
        """The recording in `body` as one line of JSON (no newline), or BadResponse."""
        if body.startswith(_COMPACT_START):
            line = self._verbatim_line(body, expected_id)
            if line is not None:
                return line
        return _reencoded_line(body, expected_id)

    def _verbatim_line(self, body: bytes, expected_id: str) -> Record | None:
        """A view of the served bytes of `data`, or None to take a slower path."""
        shape = self._shape(body)
        if shape is None:
            return None
        keys, served_id = shape
        if keys[0] != "data" or keys.count("data") != 1:
            return None  # a second `data`: json.loads keeps the last, simdjson finds the first
        others = keys[1:]
        data_start = len(_COMPACT_START) - 1
        if others:
            split = body.rfind(b'},"', data_start)
            while split > data_start:
                try:
                    rest = orjson.loads(b"{" + body[split + 2 :])
                except orjson.JSONDecodeError:
                    rest = None
                if isinstance(rest, dict) and list(rest) == others:
                    break
                split = body.rfind(b'},"', data_start, split)
            else:
                return None  # whitespace between members: the slower paths handle it
        elif body.endswith(b"}}"):
            split = len(body) - 2
        else:
            return None
        if body.find(b"\n", data_start, split) >= 0 or body.find(b"\r", data_start, split) >= 0:
            return None  # pretty-printed: the line must be made one line
        _check_id(served_id, expected_id)
        return memoryview(body)[data_start : split + 1]

    def _shape(self, body: bytes) -> tuple[list[str], object] | None:
        """Top-level keys and `data.id` of a valid body, or None.

        None when simdjson refuses the body (not JSON, or JSON it cannot hold
        such as integers beyond 64 bits) or it is not an object whose `data`
        is an object: the slower paths then decide, and say what is wrong.
        simdjson's proxies must all be gone before the parser is used again,
        so nothing but plain values leaves this method.
        """
        try:
            document = self._parser.parse(body)
        except RuntimeError as exc:
            if "re-use" not in str(exc):
                return None  # e.g. BIGINT_ERROR
            self._parser = simdjson.Parser()  # a proxy outlived its parse: start afresh
            return None
        except ValueError:  # includes UnicodeDecodeError
            return None
        try:
            if not isinstance(document, simdjson.Object):
                return None
            data = document.get("data")
            if not isinstance(data, simdjson.Object):
                return None
            served = data.get("id")
            if isinstance(served, simdjson.Object | simdjson.Array):
                served = "(not a string)"
            return list(document.keys()), served
        finally:
            del document


def _reencoded_line(body: bytes, expected_id: str) -> bytes:
    """orjson's path, or the literal one when orjson could lose something."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _exact_line(body, expected_id)
    if body.translate(_DIGITS_TO_ZERO).find(_NINETEEN_DIGITS) >= 0:
        return _exact_line(body, expected_id)
    data = _recording(document, expected_id)
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return _exact_line(body, expected_id)


def _recording(document: Any, expected_id: str) -> dict[str, Any]:
    """The `data` object of a parsed body, checked to be the recording asked for."""
    if not isinstance(document, dict):
        raise BadResponse(f'body is a JSON {_kind(document)}, not an object with a "data" member')
    if "data" not in document:
        keys = ", ".join(capped(str(k), _KEY_BYTES) for k in sorted(document)[:8])
        raise BadResponse(f'body has no "data" member (it has: {keys or "nothing"})')
    data = document["data"]
    if not isinstance(data, dict):
        raise BadResponse(f'"data" is a JSON {_kind(data)}, not a recording object')
    _check_id(data.get("id"), expected_id)
    return data


def _check_id(served: object, expected_id: str) -> None:
    """BadResponse unless the served id is the one asked for (a number counts as its digits)."""
    if isinstance(served, int) and not isinstance(served, bool):
        served = str(served)
    if served != expected_id:
        shown = repr(served)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise BadResponse(f"data.id is {shown}, not the id that was asked for")


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
    return _minify(text[start:end]).encode("utf-8")


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
