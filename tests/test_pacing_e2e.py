"""Pacing end to end against the fake API: outages waited out as one pool, long pauses told and counted."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from fakeapi import FakeServerHandle
from on_disk import read_failed, read_records, read_summary, write_manifest
from runs import export, make_config, spawn

from exporter.config import Budgets, RetrySettings
from exporter.errors import ExitCode

#: Real waits of several seconds (outages, Retry-After, quotas): `pytest -m 'not slow'` leaves them out.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["503", "refuse"])
async def test_an_outage_mid_run_is_waited_out_and_loses_nothing(
    api: FakeServerHandle, tmp_path: Path, mode: str
) -> None:
    """A 4 s outage (503 to everyone, or refused connections) after the first requests: exit 0, every
    id exactly once, nothing failed, and the wait is booked as `outage` in summary.json."""
    ids = [f"rec-{i}" for i in range(80)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    api.configure(outage_s=4.0, outage_after_s=0.5, outage_mode=mode)
    config = make_config(manifest, tmp_path / "out", api.url, concurrency=4, rate=40, max_attempts=3)
    started = time.monotonic()
    outcome = await export(config)
    assert outcome.exit_code == ExitCode.OK, read_failed(tmp_path / "out")
    assert time.monotonic() - started >= 4.0
    archived = Counter(record["id"] for record in read_records(tmp_path / "out"))
    assert archived == Counter(ids)
    assert read_failed(tmp_path / "out") == {}
    pacing = read_summary(tmp_path / "out")["pacing"]
    assert pacing["outages"] >= 1
    assert 2.0 <= pacing["paused_s"]["outage"] <= 10.0


async def test_an_outage_longer_than_max_outage_ends_with_exit_6(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """--max-outage 2 s against a 60 s outage: the run stops after about 2 s, status api_unavailable,
    exit 6, no id marked failed, the rest left for the next run."""
    ids = [f"rec-{i}" for i in range(40)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    api.configure(outage_s=60.0, outage_mode="503")
    config = make_config(manifest, tmp_path / "out", api.url, concurrency=4, rate=0, max_attempts=3)
    config = replace(config, retry=RetrySettings(max_attempts=3, backoff_base_s=0.01, max_outage_s=2.0))
    started = time.monotonic()
    outcome = await export(config)
    assert outcome.exit_code == ExitCode.API_UNAVAILABLE
    assert 2.0 <= time.monotonic() - started < 15.0
    summary = read_summary(tmp_path / "out")
    assert summary["status"] == "api_unavailable"
    assert read_failed(tmp_path / "out") == {}
    assert summary["counts"]["not_attempted"] == len(ids)
    assert "--max-outage" in (outcome.message or "")


def test_a_long_retry_after_is_told_once_and_counted(api: FakeServerHandle, tmp_path: Path) -> None:
    """A 429 asking for 6 s holds every worker, says so once on stderr with the resume time, and
    books 6 s as `retry_after`; under --quiet nothing is said. (The two runs go at once, each with
    its own busy id, which the fake API refuses once each: 6 s of waiting, not 12.)"""
    api.configure(fail_first={"busy-": ["429bare", 1]}, retry_after_s=6)
    runs = {}
    for name, busy, extra in (("out", "busy-1", ()), ("quiet", "busy-2", ("--quiet",))):
        manifest = write_manifest(tmp_path / f"{name}.txt", [busy, "rec-2", "rec-3"])
        args = ["export", str(manifest), "--base-url", api.url, "--rate", "0", "--no-progress"]
        runs[name] = spawn(*args, "--out", str(tmp_path / name), *extra)
    loud_err, quiet_err = (runs[name].communicate(timeout=60)[1] for name in ("out", "quiet"))
    assert runs["out"].returncode == 0, loud_err
    told = [line for line in loud_err.decode().splitlines() if "Retry-After" in line]
    assert len(told) == 1, loud_err
    assert "the API asked to wait 6 s (Retry-After); resuming at " in told[0]
    assert read_summary(tmp_path / "out")["pacing"]["paused_s"]["retry_after"] >= 5.5

    assert runs["quiet"].returncode == 0, quiet_err
    assert quiet_err == b""
    assert read_summary(tmp_path / "quiet")["pacing"]["paused_s"]["retry_after"] >= 5.5
    assert api.stats()["per_id"]["busy-2"] == 2, "the quiet run was not asked to wait"


async def test_a_retry_after_beyond_the_cap_stops_the_run_instead_of_asking_every_id(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A daily quota spent (Retry-After: 3600, over the 15 min cap): that id fails as rate_limited,
    no further request is sent, the rest stays for the next run, exit 6 with the wait in the message."""
    api.configure(fail_first={"busy-": ["429bare", 1]}, retry_after_s=3600)
    ids = ["busy-1"] + [f"rec-{i}" for i in range(20)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    outcome = await export(make_config(manifest, tmp_path / "out", api.url, concurrency=1, rate=0))
    assert outcome.exit_code == ExitCode.API_UNAVAILABLE
    assert "asked to wait 3600 s" in (outcome.message or "")
    assert api.stats()["requests_total"] == 1
    failed = read_failed(tmp_path / "out")
    assert failed["busy-1"]["reason"] == "rate_limited"
    assert read_summary(tmp_path / "out")["counts"]["not_attempted"] == 20


async def test_an_announced_quota_is_spread_over_its_window_without_a_429(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A fixed window of 20 requests per 3 s, announced in X-RateLimit-* and RateLimit fields, under
    --rate 1000: no 429 at all, and each whole window after the first carries >= 85% of the quota."""
    api.configure(quota_limit=20, quota_window_s=3)
    ids = [f"rec-{i}" for i in range(75)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    outcome = await export(make_config(manifest, tmp_path / "out", api.url, concurrency=8, rate=1000))
    assert outcome.exit_code == ExitCode.OK
    stats = api.stats()
    assert stats["by_status"].get("429", 0) == 0
    origin = stats["quota_origin"]
    accepted = [at - origin for at, status in stats["responses"] if status == 200]
    whole = int(accepted[-1] // 3)
    per_window = [sum(1 for at in accepted if w * 3 <= at < w * 3 + 3) for w in range(whole)]
    assert per_window, accepted
    assert all(count <= 20 for count in per_window)
    assert min(per_window[1:] or per_window) >= 17, per_window


#: Issue 16's flaky API: faults drawn from these on 60% of each id's first and second requests
#: (`scripts/bench.py` case g): 8% of all answers are 429s with `Retry-After: 1`.
FLAKY_KINDS = ["500", "502", "503", "504", "reset", "reset", "truncate", "truncate", "html", "wrongid"]
FLAKY_KINDS += ["429bare", "429bare"]


async def test_a_flaky_api_is_exported_at_the_default_rate(api: FakeServerHandle, tmp_path: Path) -> None:
    """The flaky API of issue 16 at --rate 10 (8 workers): the run keeps 8 requests/s or more and
    exports every id exactly once. The old pacer took random 429s for a limit and slowed to
    under 1/s (58 of 400 ids in 60 s): here it would hit the 40 s budget."""
    api.configure(fault_rate=0.6, fault_attempts=2, fault_kinds=FLAKY_KINDS, retry_after_s=1)
    ids = [f"rec-{i}" for i in range(80)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    config = make_config(manifest, tmp_path / "out", api.url, rate=10, max_attempts=5)
    config = replace(config, budgets=Budgets(max_duration_s=40.0))
    outcome = await export(config)
    assert outcome.exit_code == ExitCode.OK, read_failed(tmp_path / "out")
    assert Counter(record["id"] for record in read_records(tmp_path / "out")) == Counter(ids)
    stats = api.stats()
    assert stats["by_status"].get("429", 0) >= 3  # the noise was there
    times = sorted(at for at, _ in stats["responses"])
    assert stats["requests_total"] / (times[-1] - times[0]) >= 8.0
