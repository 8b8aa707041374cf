"""What a person sees escapes control characters; what a program reads (JSON) stays exact.

The pure functions first (`display.escape`, `display.json_safe`), then the real
commands (export's stderr, status, the dry run, verify, argparse's errors) run
with hostile ids, names and server text, their output searched for any raw
control character.
"""

from __future__ import annotations

import http.server
import io
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeServerHandle
from hypothesis import given
from hypothesis import strategies as st
from runs import cli
from threaded_http import serving

from exporter.display import escape, json_safe
from exporter.progress import BarProgress

#: Ids that would retitle the terminal and clear it, overwrite a line, reverse text, or start a
#: CSI through a C1 control; none is a valid id, so each lands in failed.ndjson as it is.
HOSTILE_IDS = [
    "evil\x1b]0;PWNED\x07\x1b[2J",
    "x\rFAKE: all good",
    "bidi\u202eevil",
    "c1\x9b31m",
    "line\nexporter: all good",
]
#: A member name a hostile server puts in its JSON (a bad_response's error quotes it).
SERVER_TEXT = "\x1b]0;SERVER-PWNED\x07\x1b[2J"


def raw_controls(text: str) -> list[str]:
    """Every character in `text` a terminal acts on, but the newlines that end lines."""
    return [
        char for char in text if char != "\n" and unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs")
    ]


# --- the functions ---------------------------------------------------------------------------------


def test_escape_shows_every_control_as_a_literal() -> None:
    """C0, DEL, C1, bidi overrides, zero-width and line separators come out as Python escapes."""
    assert escape("evil\x1b]0;PWNED\x07\x1b[2J") == "evil\\x1b]0;PWNED\\x07\\x1b[2J"
    assert escape("x\rFAKE\n\t") == "x\\rFAKE\\n\\t"
    assert escape("a\x7fb\x9bc") == "a\\x7fb\\x9bc"
    assert escape("\u202eabc\u200b\u2028\ufeff") == "\\u202eabc\\u200b\\u2028\\ufeff"
    assert escape("tag\U000e0041 \udc80") == "tag\\U000e0041 \\udc80"
    assert escape("Zoë 日本 ok-1 C:\\path") == "Zoë 日本 ok-1 C:\\path"


@given(st.text())
def test_escape_never_lets_a_control_through_and_keeps_printable_text(text: str) -> None:
    """Whatever the text, the escaped form holds no control character; printable text is unchanged."""
    shown = escape(text)
    assert raw_controls(shown) == []
    assert "\n" not in shown
    if text.isprintable():
        assert shown == text


@given(
    st.recursive(
        st.text() | st.integers() | st.none(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_json_safe_is_the_same_json_value_with_nothing_raw(value: Any) -> None:
    """json_safe leaves the JSON value exactly as it was and no raw control in the text."""
    for text in (json.dumps(value, ensure_ascii=False), json.dumps(value, ensure_ascii=False, indent=2)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            continue  # a lone surrogate in raw JSON text: not something any writer here produces
        safe = json_safe(text)
        assert json.loads(safe) == value
        assert [c for c in raw_controls(safe) if c not in "\r\t"] == []


def test_the_bar_shows_its_state_escaped() -> None:
    """A state on the progress bar (written straight to the terminal) carries no control sequence."""
    stream = io.StringIO()
    bar = BarProgress(stream)
    bar.status("paused for \x1b]0;PWNED\x07\x1b[2J")
    bar.tick()
    bar.close()
    assert "\x1b]0;PWNED" not in stream.getvalue()
    assert "\\x1b]0;PWNED\\x07" in stream.getvalue()


# --- the commands ----------------------------------------------------------------------------------


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """An API that answers every id with JSON whose only member's name is SERVER_TEXT (a bad_response),
    and a Pushgateway that refuses a push with hostile words."""

    def do_GET(self) -> None:
        body = json.dumps({SERVER_TEXT: 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = f"{SERVER_TEXT}push refused\n".encode()
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hostile_server() -> Iterator[str]:
    with serving(_HostileHandler) as url:
        yield url


def _hostile_manifest(directory: Path) -> Path:
    manifest = directory / "ids\x1b]0;MANIFEST\x07.ndjson"
    rows = [*HOSTILE_IDS, "srv-1"]
    manifest.write_text("".join(json.dumps({"id": i}) + "\n" for i in rows), encoding="utf-8")
    return manifest


def test_no_command_prints_a_raw_control_character_and_json_stays_exact(
    hostile_server: str, tmp_path: Path
) -> None:
    """Hostile ids, a hostile manifest and archive name, a server's hostile member name and a
    Pushgateway's hostile error: export's stderr (with -v), status, the dry run and verify print
    them escaped; --log-format json, status --json and --dry-run --json give them exactly."""
    manifest = _hostile_manifest(tmp_path)
    out = tmp_path / "out\x1b]0;ARCHIVE\x07"
    export = [
        "export", str(manifest), "--base-url", hostile_server, "--out", str(out), "--rate", "0",
        "--no-progress", "--max-attempts", "2", "--metrics-push", hostile_server,
    ]  # fmt: skip
    text = cli(*export, "-v")
    assert text.returncode == 1, text.stderr
    assert "SERVER-PWNED" in text.stderr  # the retry and the push warning say what the server sent
    assert "push refused" in text.stderr
    assert str(out).replace("\x1b", "\\x1b").replace("\x07", "\\x07") in text.stderr
    assert raw_controls(text.stderr) == [], text.stderr

    failed = {
        json.loads(line)["id"]: json.loads(line) for line in (out / "failed.ndjson").read_text().splitlines()
    }
    assert set(failed) == {*HOSTILE_IDS, "srv-1"}
    assert SERVER_TEXT in failed["srv-1"]["error"]

    logged = cli(*export, "--log-format", "json", "--retry-failed", "-v")
    assert logged.returncode == 1, logged.stderr
    assert raw_controls(logged.stderr) == []
    events = [json.loads(line) for line in logged.stderr.splitlines()]
    assert {e["id"] for e in events if e["event"] == "failed"} == {*HOSTILE_IDS, "srv-1"}
    assert any(e["event"] == "retry" and SERVER_TEXT in e["error"] for e in events)
    assert any(SERVER_TEXT in e["message"] for e in events if e["level"] == "warning")

    status = cli("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "evil\\x1b]0;PWNED\\x07\\x1b[2J" in status.stdout
    assert raw_controls(status.stdout + status.stderr) == []
    status_json = cli("status", str(out), "--json")
    assert raw_controls(status_json.stdout) == []
    doc = json.loads(status_json.stdout)
    assert doc["archive"] == str(out)
    assert set(doc["failed"]["by_reason"]["invalid_id"]["first_ids"]) <= set(HOSTILE_IDS)
    assert doc["last_error"].startswith(f'srv-1: body has no "data" member (it has: {SERVER_TEXT})')
    assert "(it has: \\x1b]0;SERVER-PWNED\\x07\\x1b[2J)" in status.stdout

    dry = cli(*export[:9], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "ids\\x1b]0;MANIFEST\\x07.ndjson" in dry.stdout
    assert raw_controls(dry.stdout + dry.stderr) == []
    dry_json = json.loads(cli(*export[:9], "--dry-run", "--json").stdout)
    assert (dry_json["manifest"], dry_json["out"]) == (str(manifest), str(out))

    verified = cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout
    assert raw_controls(verified.stdout + verified.stderr) == []


def test_a_failed_run_error_and_argparse_errors_are_escaped(api: FakeServerHandle, tmp_path: Path) -> None:
    """The error line of a run refused at the start, and argparse's own errors quoting what was
    typed, reach stderr escaped."""
    manifest = tmp_path / "ids.txt"
    manifest.write_text("a\n")
    hostile = "\x1b]0;PWNED\x07\x1b[2J"
    missing = cli(
        "export", str(tmp_path / f"no-such{hostile}.txt"), "--base-url", api.url, "--out", str(tmp_path / "o")
    )
    assert missing.returncode == 2
    assert "no-such\\x1b]0;PWNED" in missing.stderr
    extra = cli("export", str(manifest), "--base-url", api.url, "--out", str(tmp_path / "o"), f"x{hostile}")
    assert extra.returncode == 2
    assert "unrecognized arguments: x\\x1b]0;PWNED" in extra.stderr
    for result in (missing, extra):
        assert raw_controls(result.stderr) == [], result.stderr
