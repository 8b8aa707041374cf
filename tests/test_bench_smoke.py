"""The benchmark keeps working: `scripts/bench.py --smoke` runs end to end (no timings asserted),
and the pacing scenario's figures are computed right (pure arithmetic on made-up timelines)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.cli import build_parser
from benchmarks.scenarios.compress import (
    CompressCase,
    CompressRun,
    compress_cases,
    compress_cpu_rows,
    compress_tables,
)
from benchmarks.scenarios.pacing import pacing_cases, paused_text
from benchmarks.timeline import accepted_rates, convergence_s, quota_windows, steady_state

#: The benchmark's scenarios, run for real: `pytest -m 'not slow'` leaves them out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx-light)")
@pytest.mark.timeout(300)
def test_smoke_run_prints_a_figure_for_each_contender(tmp_path: Path) -> None:
    """`bench.py --smoke` exits 0 and prints records/s for the floor, the exporter and each tool found."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = ["floor", "client", "exporter"] + [tool for tool in ("curl", "aria2c") if shutil.which(tool)]
    table = done.stdout.split("| contender |", 1)[1]
    for name in expected:
        assert f"| {name} | " in table, f"no figure for {name}:\n{done.stdout}"


@pytest.mark.timeout(120)
def test_compress_scenario_runs_and_compressed_archives_are_smaller(tmp_path: Path) -> None:
    """`--scenario compress` (no nginx needed) runs every codec and reports smaller stored bytes."""
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "bench.py"), "--scenario", "compress",
            "--compress-sizes", "2000", "--compress-rate-max-bytes", "0", "--compress-mb", "0.04",
            "--repeat", "1", "--workdir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| 2 KB | 1.96 KB | 20 |"))
    ratios = [float(ratio) for ratio in re.findall(r"\((\d+\.\d)x\)", row)]
    assert len(ratios) == 2, row
    assert min(ratios) >= 2, row


def _compress_run(codec: str, rate: float, records_per_s: float, stored: int) -> CompressRun:
    return CompressRun(
        codec=codec, record_bytes=300, rate=rate, concurrency=8, repetition=1, ids=100, exported=100,
        exit_code=0, wall_s=100 / records_per_s, cpu_s=1.0, stored_bytes=stored, raw_bytes=30_000,
        frames=2,
    )  # fmt: skip


def test_compress_tables_hold_the_target_only_at_90_percent_of_plain() -> None:
    """Medians per codec against plain's: 0.9 of plain meets the target, less misses it."""
    cases = [CompressCase(record_bytes=300, rate=50.0, concurrency=8, ids=100)]
    runs = [_compress_run("none", 50.0, 50.0, 30_000), _compress_run("zstd", 50.0, 45.0, 5_000)]
    rows, _, met = compress_tables(runs, cases, ["none", "zstd"])
    assert met, rows
    assert rows[0][-1].startswith("45.0 (0.90)")
    slower = [*runs[:1], _compress_run("zstd", 50.0, 44.0, 5_000)]
    assert not compress_tables(slower, cases, ["none", "zstd"])[2]
    at_full_speed = [CompressCase(record_bytes=300, rate=0.0, concurrency=64, ids=100)]
    fast = [_compress_run("none", 0.0, 3000.0, 30_000), _compress_run("zstd", 0.0, 3000.0, 5_000)]
    _, sizes, _ = compress_tables(fast, at_full_speed, ["none", "zstd"])
    assert sizes == [["300 B", "300 B", "100", "30 KB", "5 KB (6.0x)", "50"]]


def test_compress_scenario_runs_3_mb_records_at_the_default_rate_and_shows_whose_cpu() -> None:
    """3 MB records at --rate 10 are a case of their own; each case shows the CPU of exporter, API, the rest.

    Only the sizes --compress-sizes names get their --compress-at points, so a quick run stays quick.
    """
    args = build_parser().parse_args(["--scenario", "compress", "--compress-sizes", "20000,3000000"])
    cases = compress_cases(args)
    at_ten = [c for c in cases if c.rate == 10.0]
    assert [(c.record_bytes, c.ids, c.concurrency) for c in at_ten] == [(3_000_000, 100, 8)]
    assert (20_000, 100.0) in [(c.record_bytes, c.rate) for c in cases]
    quick = build_parser().parse_args(["--compress-sizes", "2000", "--compress-at", "3000000@10"])
    assert all(c.record_bytes == 2000 for c in compress_cases(quick))

    run = dataclasses.replace(
        _compress_run("gzip", 10.0, 5.0, 5_000), cpu_s=14.0, api_cpu_s=1.0, others_cpu_s=15.0
    )
    rows = compress_cpu_rows(
        [run], [CompressCase(record_bytes=300, rate=10.0, concurrency=8, ids=100)], ["gzip"]
    )
    assert rows == [["300 B", "10", "14.0 / 1.0 / 15.0 (1.5 cores)"]]


# --- the pacing scenario's arithmetic (pure) ------------------------------------------------


def _evenly(rate: float, start: float, end: float) -> list[float]:
    """Accepted-response times at rate per second over [start, end)."""
    count = round((end - start) * rate)
    return [start + n / rate for n in range(count)]


def test_convergence_is_when_the_5s_rate_reaches_90_percent_and_stays() -> None:
    """Slow for 12 s, then at the limit: converges at 12 s + the 4.5 s the window needs to fill to 90%."""
    ok = _evenly(1.0, 0.0, 12.0) + _evenly(10.0, 12.0, 60.0)
    converged = convergence_s(ok, 0.0, 60.0, 10.0)
    assert converged is not None
    assert 16.0 <= converged <= 17.0
    steady = steady_state([(t, 200) for t in ok], 0.0, 60.0, converged)
    assert steady.accepted_per_s == pytest.approx(10.0, rel=0.03)


def test_a_dip_late_in_the_run_moves_convergence_past_it() -> None:
    """At the limit, then 5 s of silence at 40 s: converged only after the dip, not at the start."""
    ok = _evenly(10.0, 0.0, 40.0) + _evenly(10.0, 45.0, 60.0)
    converged = convergence_s(ok, 0.0, 60.0, 10.0)
    assert converged is not None
    assert converged > 45.0


def test_a_rate_that_never_reaches_90_percent_never_converges() -> None:
    """0.46/s against L = 3 (the issue's case a) never converges, and a too-short run neither."""
    assert convergence_s(_evenly(0.46, 0.0, 90.0), 0.0, 90.0, 3.0) is None
    assert convergence_s(_evenly(8.9, 0.0, 90.0), 0.0, 90.0, 10.0) is None
    assert convergence_s(_evenly(10.0, 0.0, 4.0), 0.0, 4.0, 10.0) is None


def test_accepted_rates_count_a_trailing_window() -> None:
    """The rate at t counts accepted responses in (t - window, t]."""
    rates = accepted_rates([0.5, 1.0, 1.5, 2.0, 2.5], 0.0, 3.0, 2.0, step_s=1.0)
    assert rates == [(2.0, 2.0), (3.0, 1.5)]


def test_steady_state_share_of_429s() -> None:
    """The 429 share counts every answer in the stretch, the accepted rate only 200s."""
    timeline = [(float(t), 200) for t in range(20)] + [(t + 0.5, 429) for t in range(10, 20)]
    steady = steady_state(sorted(timeline), 0.0, 20.0, 10.0)
    assert steady.share_429 == pytest.approx(0.5)
    assert steady.accepted_per_s == pytest.approx(1.0)


def test_quota_windows_are_whole_windows_aligned_to_the_origin() -> None:
    """Only windows wholly inside the run count; each gets its 200s and 429s."""
    timeline = [(103.0, 200), (109.0, 429), (112.0, 200), (115.0, 200), (118.0, 429), (125.0, 200)]
    assert quota_windows(timeline, 100.0, 10.0, 103.0, 128.0) == [(1, 2, 1)]
    assert quota_windows(timeline, 100.0, 10.0, 100.0, 130.0) == [(0, 1, 1), (1, 2, 1), (2, 1, 0)]


def test_pacing_cases_fit_the_budget_and_outlast_it() -> None:
    """The cases take 8-11 minutes, and every budgeted case has ids for twice what the limit allows."""
    cases = pacing_cases(1.0)
    assert [c.key for c in cases] == ["a", "b", "c", "d", "e", "f-503", "f-refuse", "g", "h"]
    minutes = sum(c.seconds - c.slack_s for c in cases) / 60
    assert 8 <= minutes <= 11
    for case in cases:
        if case.limit_rps is not None:
            assert case.ids >= 2 * case.limit_rps * case.seconds
    assert paused_text(None) == "n/a"
    assert paused_text({"retry_after": 9.0, "outage": 3.0}) == "12.0 (outage 3.0, retry_after 9.0)"
