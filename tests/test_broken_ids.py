"""A few broken ids are not an outage, and an outage at the tail still is: end to end, against a
scripted server on loopback that answers every id but the broken ones, which fail one of four ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import pytest
from on_disk import read_failed, read_records, read_summary, write_manifest
from runs import export, make_config
from scripted import Conversation, Handler, scripted

from exporter.config import RetrySettings
from exporter.errors import ExitCode

GOOD = [f"ok-{i}" for i in range(20)]
BROKEN = ["bad-1", "bad-2", "bad-3"]
TIMEOUT_S = 0.5
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"


def record_id(head: bytes) -> str:
    return unquote(head.split(b" ", 2)[1].decode("ascii").split("?", 1)[0].rsplit("/", 1)[1])


def record(rid: str) -> bytes:
    return json.dumps({"data": {"id": rid, "duration": 61}}).encode()


async def never_answers(conv: Conversation) -> None:
    await conv.reader.read()  # until the client gives up and hangs up


async def resets_after_the_head(conv: Conversation) -> None:
    await conv.send(_HEAD + b'{"data":')
    conv.writer.transport.abort()  # a TCP RST


async def short_body_then_close(conv: Conversation) -> None:
    await conv.send(_HEAD + b'{"data":{"id"')
    conv.writer.close()


async def trickles_its_head(conv: Conversation) -> None:
    with contextlib.suppress(ConnectionError):
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 10_000:
            if conv.reader.at_eof():
                return  # the client gave up
            await conv.send(bytes([byte]))
            await asyncio.sleep(0.02)


BREAKS: dict[str, tuple[Callable[[Conversation], Awaitable[None]], str]] = {
    "never answers": (never_answers, "timeout"),
    "resets after the head": (resets_after_the_head, "network"),
    "short body then close": (short_body_then_close, "network"),
    "trickles its head": (trickles_its_head, "timeout"),
}


def api(breaks: Callable[[Conversation], Awaitable[None]], asked: list[float]) -> Handler:
    """Every id answered at once, but the broken ones: each request for them is broken, and the time
    it came goes into `asked`."""

    async def handler(conv: Conversation) -> None:
        while (head := await conv.read_request()) is not None:
            rid = record_id(head)
            if rid not in BROKEN:
                await conv.respond(record(rid))
                continue
            asked.append(time.monotonic())
            await breaks(conv)
            return

    return handler


@pytest.mark.parametrize("kind", BREAKS)
async def test_three_broken_ids_at_the_end_fail_with_their_reason_within_seconds(
    tmp_path: Path, kind: str
) -> None:
    """The API answers every id but three, the last of the manifest, which never answer, reset after
    the head, send a short body and close, or trickle their head. Once the others are done those
    three are all that fail, and nothing else answers: they spend their attempts and fail with their
    reason (timeout or network), exit 1, within seconds of their last attempt; no outage is declared.

    (Before: an outage, a wait of the whole --max-outage, 30 s here, and exit 6.)"""
    breaks, reason = BREAKS[kind]
    asked: list[float] = []
    manifest = write_manifest(tmp_path / "ids.txt", GOOD + BROKEN)
    out = tmp_path / "out"
    async with scripted(api(breaks, asked)) as server:
        config = make_config(
            manifest, out, f"http://127.0.0.1:{server.port}", concurrency=8, rate=20, timeout_s=TIMEOUT_S
        )
        config = replace(
            config,
            retry=RetrySettings(max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.5, max_outage_s=30.0),
        )
        started = time.monotonic()
        outcome = await export(config)
        finished = time.monotonic()
    assert outcome.exit_code == ExitCode.INCOMPLETE, outcome.message
    failed = read_failed(out)
    assert sorted(failed) == BROKEN
    assert {entry["reason"] for entry in failed.values()} == {reason}
    assert {entry["attempts"] for entry in failed.values()} == {3}
    assert Counter(r["id"] for r in read_records(out)) == Counter(GOOD)
    assert len(asked) == 9
    # The last attempt failed at once, or at its --timeout; the run ended a few seconds after.
    last_failure = max(asked) + (TIMEOUT_S if reason == "timeout" else 0.0)
    assert finished - last_failure < 10.0, finished - last_failure  # not --max-outage (30 s)
    assert finished - started < 20.0
    pacing = read_summary(out)["pacing"]
    assert (pacing["outages"], pacing["halt"]) == (0, None)


async def test_an_outage_at_the_tail_is_still_an_outage(tmp_path: Path) -> None:
    """The API answers every id once and then nothing but 503, with three ids left: those three fail,
    and so does a recording it served a moment ago, asked for again. That is an outage: no id is
    marked failed, the three are left for the next run, and after --max-outage the run ends with
    exit 6, summary.json blaming the API and the message naming its last error."""
    served: set[str] = set()
    manifest = write_manifest(tmp_path / "ids.txt", GOOD + BROKEN)
    out = tmp_path / "out"

    async def handler(conv: Conversation) -> None:
        while (head := await conv.read_request()) is not None:
            rid = record_id(head)
            if rid in BROKEN or rid in served:
                await conv.respond(b"down", status="503 Service Unavailable")
            else:
                served.add(rid)
                await conv.respond(record(rid))

    async with scripted(handler) as server:
        config = make_config(manifest, out, f"http://127.0.0.1:{server.port}", concurrency=1, rate=0)
        config = replace(config, retry=RetrySettings(max_attempts=3, backoff_base_s=0.05, max_outage_s=3.0))
        started = time.monotonic()
        outcome = await export(config)
        elapsed = time.monotonic() - started
    assert outcome.exit_code == ExitCode.API_UNAVAILABLE, read_failed(out)
    assert 3.0 <= elapsed < 15.0
    assert read_failed(out) == {}
    summary = read_summary(out)
    assert summary["counts"]["not_attempted"] == 3
    assert summary["pacing"]["outages"] == 1
    assert summary["pacing"]["outage_checks"] >= 1
    halt = summary["pacing"]["halt"]
    assert (halt["reason"], halt["cause"]) == ("api_unavailable", "api")
    assert halt["message"] == outcome.message
    assert "--max-outage (3 s); last error: HTTP 503 Service Unavailable" in (outcome.message or "")
