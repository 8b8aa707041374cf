"""`--rate R --burst B` for ~30 s against nginx: achieved rate and the largest bursts."""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.bodies import ensure_bodies, recording_ids, write_manifest
from benchmarks.common import child_env, verdict
from benchmarks.contenders import exporter_command
from benchmarks.harness import Setup
from benchmarks.measure import run_measured, tail
from benchmarks.nginx import Nginx, read_access_log


def rate_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """`--rate R --burst B` for ~30 s against nginx: achieved rate and the largest bursts."""
    args = setup.args
    rate, burst = args.rate, args.burst
    count = int(rate * args.rate_seconds)
    print(f"\n== rate: exporter --rate {rate:g} --burst {burst}, {count:,} ids (~{args.rate_seconds:g} s)")
    bodies = ensure_bodies(
        setup.cache,
        recording_ids(count),
        seed=args.seed,
        large_fraction=args.large_fraction,
        large_bytes=args.large_bytes,
    )
    with Nginx(setup.nginx, root=bodies.root, access_log=True, workers=args.nginx_workers) as server:
        work = setup.workload(
            base_url=server.url,
            manifest=write_manifest(setup.runs / "rate-ids.txt", bodies.ids),
            ids=bodies.ids,
            total_bytes=bodies.total_bytes,
        )
        out = setup.runs / "rate-out"
        shutil.rmtree(out, ignore_errors=True)
        argv = exporter_command(work, out, rate=f"{rate:g}", extra=["--burst", str(burst)])
        log = setup.runs / "rate.log"
        result = run_measured(argv, env=child_env(), log_path=log)
        assert server.access_log is not None
        time.sleep(0.2)  # nginx writes the last lines as those requests end
        starts = [start for start, _ in read_access_log(server.access_log)]
    shutil.rmtree(out, ignore_errors=True)
    if result.exit_code != 0 or len(starts) < count:
        print(f"  FAILED: exit {result.exit_code}, {len(starts)} requests logged: {tail(log)}")
        return False
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span
    steady = (len(starts) - burst) / span
    error_pct = 100 * (achieved - rate) / rate
    print(
        f"  {len(starts):,} requests over {span:.2f} s of server-side starts "
        f"(exporter wall time {result.wall_s:.2f} s)"
    )
    print(
        f"  achieved rate {achieved:,.1f}/s vs --rate {rate:g}: {error_pct:+.2f}% "
        f"(counting --burst fewer requests, as if the bucket's first burst was taken: {steady:,.1f}/s)"
    )
    windows: dict[float, tuple[int, float]] = {}
    settled = [start for start in starts if start >= starts[0] + 1.0]
    for window in (1.0, 0.1, 0.01):
        allowed = burst + rate * window
        most, at = max_in_window(starts, window)
        later, _ = max_in_window(settled, window)
        windows[window] = (most, allowed)
        print(
            f"  most request starts in any {window:g} s window: {most} at +{at - starts[0]:.3f} s; "
            f"after the first second {later} (the bucket allows burst + R*w = {allowed:g})"
        )
    most_1s = windows[1.0][0]
    # Timestamps have 1 ms resolution, which can put one request too many in a window.
    burst_ok = all(most <= allowed + 1 for most, allowed in windows.values())
    print(f"  target: within 5% of R: {verdict(abs(error_pct) <= 5)}")
    print(f"  target: no burst above --burst (1 ms timestamps: +1 tolerated): {verdict(burst_ok)}")
    results["rate"] = {
        "rate": rate,
        "burst": burst,
        "requests": len(starts),
        "span_s": span,
        "achieved_per_s": achieved,
        "error_pct": error_pct,
        "max_starts_1s": most_1s,
        "windows": {str(w): {"max": m, "allowed": a} for w, (m, a) in windows.items()},
        "exporter_wall_s": result.wall_s,
    }
    return True


def max_in_window(starts: Sequence[float], window_s: float) -> tuple[int, float]:
    """The most timestamps in any half-open window [t, t + window_s), and its t (starts sorted)."""
    most, at, low = 0, starts[0] if starts else 0.0, 0
    for high, start in enumerate(starts):
        while starts[low] <= start - window_s:
            low += 1
        if high - low + 1 > most:
            most, at = high - low + 1, starts[low]
    return most, at


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--scenario rate` options, in their own help group."""
    group = parser.add_argument_group("--scenario rate")
    group.add_argument("--rate", type=float, default=500.0, help="exporter --rate (default: %(default)s)")
    group.add_argument("--burst", type=int, default=50, help="exporter --burst (default: %(default)s)")
    group.add_argument(
        "--rate-seconds", type=float, default=30.0, help="ids = rate x this (default: %(default)s)"
    )
