"""bounded.py: streams cut into bounded lines (with the newline of each told), texts capped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.bounded import TEXT_BYTES, LineCutter, Overlong, capped


def test_capped_keeps_a_short_text_and_cuts_a_long_one_noting_its_length() -> None:
    """Up to the limit a text is itself; beyond it, its first bytes and its full length in bytes."""
    assert capped("HTTP 503") == "HTTP 503"
    assert capped("x" * TEXT_BYTES) == "x" * TEXT_BYTES
    assert capped("k" * 48_000_012) == "k" * TEXT_BYTES + "… (48,000,012 bytes)"


def test_capped_cuts_at_a_character_boundary() -> None:
    """A character that straddles the limit is left out whole, and the length counts UTF-8 bytes."""
    text = "é" * 300  # 600 bytes
    cut = capped(text, 11)
    assert cut == "é" * 5 + "… (600 bytes)"
    assert capped("\udcff" * 10, 8) == "\udcff" * 2 + "… (30 bytes)"  # a lone surrogate: 3 bytes


@given(st.text(max_size=300), st.integers(min_value=4, max_value=400))
def test_capped_text_is_a_prefix_within_the_limit(text: str, limit: int) -> None:
    """Whatever the text, what is kept is a prefix of it no longer than the limit in UTF-8."""
    cut = capped(text, limit)
    if cut == text:
        assert len(text.encode("utf-8", "surrogatepass")) <= limit
        return
    head, _, note = cut.rpartition("… (")
    assert text.startswith(head)
    assert len(head.encode("utf-8", "surrogatepass")) <= limit
    assert note == f"{len(text.encode('utf-8', 'surrogatepass')):,} bytes)"


@pytest.mark.parametrize("chunk", [1, 3, 1 << 16])
def test_cutter_skips_a_long_line_as_it_streams_past(chunk: int) -> None:
    """However the chunks fall, a line over the limit comes out as its start and length; the rest whole."""
    data = b"a\n" + b"x" * 100 + b"\nb\nlast"
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    cutter = LineCutter(10)
    assert list(cutter.cut(chunks)) == [(1, b"a"), (2, Overlong(b"x" * 10, 100, 10)), (3, b"b"), (4, b"last")]
    assert cutter.lines == 3
