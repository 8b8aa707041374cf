"""payload.PayloadDecoder: a body in, the exact recording line out, or BadResponse."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.errors import BadResponse, Reason, TransportError
from exporter.payload import PayloadDecoder

sys.set_int_max_str_digits(0)

#: One decoder for the whole module, as the fetcher keeps one per event loop: each test also
#: shows that it is still sound after every body before it, good and bad.
DECODER = PayloadDecoder()


def decode(body: bytes, record_id: str) -> bytes:
    """The line `DECODER` makes of `body` (on the verbatim path a view into the body), as bytes."""
    return bytes(DECODER(body, record_id))


def body_of(data: Any, *, compact: bool = False, **extra: Any) -> bytes:
    """A response body as the API builds it, written by Python's json (which keeps big ints)."""
    envelope = {"data": data, "cursor": None, "pageSize": 1, "limit": 1, **extra}
    separators = (",", ":") if compact else None
    return json.dumps(envelope, separators=separators, ensure_ascii=False).encode("utf-8", "surrogatepass")


def same(a: Any, b: Any) -> bool:
    """Equal in value and in type, telling -0.0 from 0.0 and 1 from 1.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def roundtrip(body: bytes, record_id: str = "r1") -> Any:
    line = decode(body, record_id)
    assert b"\n" not in line
    assert b"\r" not in line
    return json.loads(line)


def test_compact_body_is_archived_byte_for_byte() -> None:
    """A compact body's `data` bytes become the line verbatim: number spelling and escapes kept."""
    data_text = b'{"id":"r1","n":1.0E+2,"e":"caf\\u00e9","big":123456789012345678901,"z":-0.0}'
    body = b'{"data":' + data_text + b',"cursor":null,"pageSize":1,"limit":1}'
    assert decode(body, "r1") == data_text


@pytest.mark.parametrize(
    "rest",
    [
        b',"cursor":{"next":"},\\"x\\":{}"},"limit":1}',
        b',"cursor":{"a":{"b":{}}},"pageSize":1}',
        b',"cursor":"},\\"pageSize\\":1}","limit":{}}',
        b"}",
    ],
)
def test_verbatim_split_is_not_fooled_by_lookalikes(rest: bytes) -> None:
    """Text like `},"` inside the other members or inside data never moves the cut."""
    data_text = b'{"id":"r1","t":"},\\"cursor\\":null,\\"limit\\":1}","o":{"p":{}},"q":[{}]}'
    body = b'{"data":' + data_text + rest
    assert decode(body, "r1") == data_text
    assert json.loads(decode(body, "r1")) == json.loads(body)["data"]


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (b'{"data":{"id":"r1"},"data":{"id":"other"}}', "wrong id"),
        (b'{"data":{"id":"other"},"data":{"id":"r1","x":1}}', "ok"),
    ],
)
def test_duplicate_data_members_follow_json_loads(body: bytes, outcome: str) -> None:
    """With two `data` members the last one counts, as in json.loads, on every path."""
    if outcome == "ok":
        assert json.loads(decode(body, "r1")) == json.loads(body)["data"]
    else:
        with pytest.raises(BadResponse, match="not the id"):
            decode(body, "r1")


def test_decoder_recovers_when_its_parser_is_held() -> None:
    """A PayloadDecoder keeps working even if a parse proxy outlived a call."""
    decoder = PayloadDecoder()
    body = body_of({"id": "r1", "x": [1, 2]}, compact=True)
    held = decoder._parser.parse(b'{"a":1}')
    assert json.loads(bytes(decoder(body, "r1"))) == {"id": "r1", "x": [1, 2]}
    assert json.loads(bytes(decoder(body, "r1"))) == {"id": "r1", "x": [1, 2]}
    del held


def test_plain_record_is_the_data_object() -> None:
    """A normal body yields exactly its `data` object, nothing of the envelope."""
    data = {"id": "r1", "title": "call", "durationInMilliseconds": 1234, "tags": {}}
    assert roundtrip(body_of(data)) == data


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        2**64 - 1,
        -(2**63) - 1,
        -(2**63),
        10**40,
        -(10**40),
        int("9" * 5000),
        1234567890123456789,
    ],
)
@pytest.mark.parametrize("compact", [True, False])
def test_integers_of_any_width_stay_exact(value: int, compact: bool) -> None:
    """Integers beyond 64 bits (which orjson would turn into floats) come back as the same int."""
    got = roundtrip(body_of({"id": "r1", "n": value, "nested": [{"m": value}]}, compact=compact))
    assert type(got["n"]) is int
    assert got["n"] == value
    assert got["nested"][0]["m"] == value


@pytest.mark.parametrize(
    "literal", ["-0.0", "1e308", "1.7976931348623157e308", "5e-324", "1.5", "1.0", "1E+2"]
)
def test_float_literals_keep_their_value_and_sign(literal: str) -> None:
    """Floats such as -0.0, 1e308 and the smallest subnormal keep value and sign."""
    body = b'{"data":{"id":"r1","x":' + literal.encode() + b"}}"
    assert same(roundtrip(body)["x"], json.loads(literal))


def test_out_of_range_float_literal_is_kept_verbatim() -> None:
    """1e400 (not a double) is archived as its literal text, so Python reads the same inf from both."""
    body = b'{"data":{"id":"r1","x":1e400,"y":[1e400]}}'
    line = decode(body, "r1")
    assert b"1e400" in line
    assert json.loads(line) == json.loads(body)["data"]


@pytest.mark.parametrize(
    "text",
    ["nul\x00inside", "line\u2028sep\u2029para", "emoji \U0001f600 ok", 'quote " back \\ slash', "\t\n\r"],
)
@pytest.mark.parametrize("compact", [True, False])
def test_strings_keep_every_character(text: str, compact: bool) -> None:
    """Strings with NUL, U+2028/U+2029, emoji and escapes come back unchanged, on one line."""
    assert roundtrip(body_of({"id": "r1", "s": text}, compact=compact))["s"] == text


def test_lone_surrogate_escape_is_kept() -> None:
    """A lone surrogate escape (legal JSON text that orjson refuses) is archived as served."""
    body = b'{"data":{"id":"r1","s":"a\\ud800b"}}'
    assert roundtrip(body)["s"] == "a\ud800b"


def test_deep_nesting_beyond_orjson_limit() -> None:
    """Data nested 300 levels (deeper than orjson writes) is archived exactly."""
    deep: Any = "leaf"
    for _ in range(300):
        deep = {"d": [deep]}
    assert roundtrip(body_of({"id": "r1", "deep": deep}))["deep"] == deep


def test_verbatim_line_is_a_view_of_the_served_bytes() -> None:
    """A compact body's line is a view into the body itself (nothing copied); other bodies are re-made."""
    data_text = b'{"id":"r1","n":1}'
    body = b'{"data":' + data_text + b',"cursor":null}'
    line = DECODER(body, "r1")
    assert isinstance(line, memoryview)
    assert line.obj is body
    assert line == data_text
    pretty = b'{"data": {"id": "r1", "n": 1}, "cursor": null}'
    assert DECODER(pretty, "r1") == data_text
    assert not isinstance(DECODER(pretty, "r1"), memoryview)


def test_pretty_printed_body_becomes_one_line() -> None:
    """A body spread over many lines still yields a single NDJSON line with the same value."""
    data = {"id": "r1", "text": "a  b\n c", "list": [1, 2, {"k": "v  w"}]}
    body = json.dumps({"data": data, "cursor": None}, indent=4).encode()
    assert roundtrip(body) == data


def test_pretty_printed_body_with_big_int_keeps_strings_intact() -> None:
    """The exact path removes whitespace outside strings only, never inside them."""
    data = {"id": "r1", "n": 2**70, "text": "two  spaces\tand\ttabs", "e": ""}
    body = json.dumps({"data": data}, indent=2).encode()
    assert roundtrip(body) == data


def test_multi_megabyte_string() -> None:
    """A multi-megabyte transcript passes through untouched."""
    text = "word " * 600_000
    assert roundtrip(body_of({"id": "r1", "transcript": text}))["transcript"] == text


def test_last_data_member_wins_like_json_loads() -> None:
    """With two `data` members the last one is archived, as Python's json would read it."""
    body = b'{"data":{"id":"x"},"data":{"id":"r1","n":18446744073709551616}}'
    assert roundtrip(body) == {"id": "r1", "n": 18446744073709551616}


def test_integer_id_matches_its_string() -> None:
    """An API that serves the id as a JSON number is still the recording asked for."""
    assert roundtrip(b'{"data":{"id":42,"x":1}}', "42") == {"id": 42, "x": 1}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"data":{"id":"r1","title":"cut', "truncated"),
        (b'{"data": {"id": "r1"}} trailing', "not valid JSON"),
        (b"[1,2,3]", "array"),
        (b'{"cursor":null}', 'no "data"'),
        (b'{"data":[{"id":"r1"}]}', "array"),
        (b'{"data":{"id":"other"}}', "not the id"),
        (b'{"data":{"title":"no id"}}', "not the id"),
        (b'{"data":{"id":"r1","x":NaN}}', "NaN"),
        (b'{"data":{"id":"r1","x":"\xff\xfe"}}', "UTF-8"),
    ],
)
def test_bad_bodies_raise_with_a_clear_reason(body: bytes, fragment: str) -> None:
    """Every kind of wrong body raises BadResponse whose message says what was wrong."""
    with pytest.raises(BadResponse) as caught:
        decode(body, "r1")
    assert fragment in str(caught.value)


def test_wrong_id_with_big_int_is_refused_on_the_exact_path_too() -> None:
    """The id check also guards the slow path taken for wide integers."""
    with pytest.raises(BadResponse, match="not the id"):
        decode(body_of({"id": "other", "n": 2**80}), "r1")


def test_html_error_message_does_not_dump_the_body() -> None:
    """Only the start of an error page is quoted, never the whole body."""
    page = b"<html>" + b"x" * 10_000 + b"</html>"
    with pytest.raises(BadResponse) as caught:
        decode(page, "r1")
    assert len(str(caught.value)) < 200


def test_a_member_name_of_48_mib_is_not_quoted_whole() -> None:
    """A body whose only member name is 48 MiB: the message quotes its start and length in under 200 bytes."""
    with pytest.raises(BadResponse) as caught:
        decode(b'{"' + b"k" * (48 << 20) + b'":1}', "r1")
    message = str(caught.value)
    assert len(message) < 200
    assert 'no "data" member' in message
    assert "(50,331,648 bytes)" in message


def test_bad_response_and_transport_messages_are_capped_as_they_are_made() -> None:
    """Text put into the two exceptions that carry a server's bytes is cut to 512 bytes and its length."""
    assert str(BadResponse("x" * 10**6)) == "x" * 512 + "… (1,000,000 bytes)"
    assert str(TransportError(Reason.NETWORK, "y" * 10**6)) == "y" * 512 + "… (1,000,000 bytes)"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    style=st.sampled_from(["compact", "spaced", "pretty"]),
    cursor=json_values,
)
def test_any_json_value_round_trips_exactly(payload: dict[str, Any], style: str, cursor: Any) -> None:
    """For arbitrary JSON data, json.loads(line) equals json.loads(body)["data"], types and signs included."""
    data = {**payload, "id": "r1"}
    envelope = {"data": data, "cursor": cursor, "limit": 1}
    layouts: dict[str, dict[str, Any]] = {
        "compact": {"separators": (",", ":")},
        "spaced": {},
        "pretty": {"indent": 2},
    }
    layout = layouts[style]
    body = json.dumps(envelope, ensure_ascii=False, **layout).encode("utf-8", "surrogatepass")
    try:
        served = json.loads(body)["data"]
    except UnicodeDecodeError:
        return  # hypothesis made a lone surrogate raw in UTF-8: not a valid body at all
    try:
        line = decode(body, "r1")
    except BadResponse as exc:
        assert "UTF-8" in str(exc)  # noqa: PT017 - hypothesis needs the value, not a raises block
        return
    assert same(json.loads(line), served)
