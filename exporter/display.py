"""Text shown to a person: every control and invisible format character made visible.

Ids, file names, a server's error text and an archive's own messages can hold
any character. Written raw to a terminal, `ESC ]0;...BEL` retitles it, `ESC [2J`
clears the screen, a CR sends the cursor back to overwrite the start of a line,
a newline starts a line that looks like one of ours, and a bidi override makes
what follows read backwards. So every place where text meets a person runs it
through `escape` (the text log formatter, `status`, the dry run, `verify`, the
progress bar, argparse's errors), and every JSON line goes through `json_safe`,
which keeps the JSON value exact while making it as safe to `cat` (`json_text`
writes a document so, whatever its strings hold).

Escaped: the Unicode categories Cc (C0 controls, DEL and the C1 controls, some
of which terminals take as CSI), Cf (bidi embeddings, overrides and isolates,
zero-width characters, the BOM, tags), Zl and Zp (line and paragraph
separators, which some terminals and editors break lines at), Cs (lone
surrogates: bytes that were not UTF-8, which a strict stream cannot even
write) and Cn (unassigned: a later Unicode may make them format characters).
Each is written as in a Python string literal: `\\n`, `\\r`, `\\t`, `\\xNN`,
`\\uNNNN`, `\\UNNNNNNNN`. A backslash itself is left alone: text stays as
readable as it was, and no valid id holds one.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import orjson

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Every character that may need escaping: ASCII controls and anything not ASCII.
_CANDIDATE = re.compile(r"[^\x20-\x7e]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _literal(char: str) -> str:
    """`char` as a Python string literal writes it."""
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_unsafe(char: str) -> bool:
    """Whether `char` (one character) must not reach a terminal as it is."""
    if char < "\x80":
        return char < " " or char == "\x7f"
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape_match(match: re.Match[str]) -> str:
    char = match.group()
    return _literal(char) if is_unsafe(char) else char


def escape(text: str) -> str:
    """`text` with every control, format, separator, surrogate and unassigned character escaped.

    Printable text comes back unchanged (the same object), cheaply: plain
    ASCII is one regex search, other text one `isprintable` call first.
    """
    if text.isascii():
        return text if _ASCII_CONTROL.search(text) is None else _ASCII_CONTROL.sub(_escape_match, text)
    if text.isprintable():
        return text  # every character escape() changes is non-printable
    return _CANDIDATE.sub(_escape_match, text)


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char < " " or not is_unsafe(char):
        return char  # JSON escapes C0 inside strings itself: outside them it is whitespace
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)  # JSON writes astral characters as a UTF-16 pair
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def json_safe(document: str) -> str:
    """A JSON text with every raw unsafe character written as a `\\u` escape: the same value, safe to print.

    JSON escapes C0 controls already, but lets DEL, C1 controls, bidi
    overrides and the like stand raw inside strings. Outside strings JSON has
    only ASCII punctuation and whitespace, so every such character is inside
    one, where a `\\u` escape means exactly that character.
    """
    if document.isascii():
        return document.replace("\x7f", "\\u007f") if "\x7f" in document else document
    if document.isprintable():
        return document  # one line with nothing to escape: the common case of a log line
    return _CANDIDATE.sub(_json_escape, document)


def json_text(document: Any, *, indent: bool = False) -> str:
    """`document` as JSON text for a program to read (`json_safe`): exact, and never a traceback.

    orjson refuses a lone surrogate, which is what a file name's bytes that
    are not UTF-8 become in Python; the standard library writes it as its
    `\\u` escape, which Python's json reads back as the same value.
    """
    try:
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2 if indent else 0).decode("utf-8")
    except orjson.JSONEncodeError:
        text = json.dumps(document, indent=2 if indent else None, ensure_ascii=True)
    return json_safe(text)
