"""100 ms latency at --concurrency 64, vs 640/s: the fake API, then nginx's echo_sleep."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

from benchmarks.bodies import ensure_bodies, recording_ids, write_manifest
from benchmarks.common import verdict
from benchmarks.contenders import Workload, print_measurement, run_contender, summarize
from benchmarks.harness import Setup, fake_api_server
from benchmarks.measure import Measurement, process_cpu_s
from benchmarks.nginx import ECHO_MODULE, Nginx


def latency_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """100 ms of server latency at concurrency 64: throughput vs concurrency / latency.

    Served twice: by `scripts/fake_api.py --latency-ms` (Python, builds each body per request),
    then, when the echo module is there, by nginx sleeping exactly that long in C before
    sending the same static bodies, which shows what the fake API's own work costs.
    """
    args = setup.args
    ideal = args.concurrency / (args.latency_ms / 1000)
    count = args.latency_ids or int(ideal * 20)
    ids = tuple(recording_ids(count))
    print(
        f"\n== latency: --latency-ms {args.latency_ms:g}, concurrency {args.concurrency}, {count:,} ids; "
        f"ideal {ideal:,.0f} records/s"
    )
    bodies = ensure_bodies(
        setup.cache, ids, seed=args.seed, large_fraction=args.large_fraction, large_bytes=args.large_bytes
    )
    scratch = setup.runs / "latency"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    work = setup.workload(
        base_url="",
        manifest=write_manifest(scratch / "ids.txt", ids),
        ids=ids,
        total_bytes=bodies.total_bytes,  # the fake API serves the very same bodies
        runs_dir=scratch,
    )
    report: dict[str, Any] = {"latency_ms": args.latency_ms, "ideal_per_s": ideal, "ids": count}
    print(f" server: scripts/fake_api.py --latency-ms {args.latency_ms:g} (its own process)")
    with fake_api_server(args, scratch) as (url, pid):
        work = dataclasses.replace(work, base_url=url)

        def fake_api_cpu() -> float:
            return process_cpu_s(pid)

        # Can the fake API serve more than the ideal at this latency? Ask at 4x the concurrency.
        probe = dataclasses.replace(work, concurrency=4 * args.concurrency)
        capacity = run_contender("floor", probe, 0, fake_api_cpu)
        print_measurement(dataclasses.replace(capacity, contender="capacity"))
        if capacity.error is None:
            enough = capacity.records_per_s >= 1.1 * ideal
            note = "enough" if enough else "NOT enough: the fake API itself is the bottleneck"
            print(
                f"  fake API capacity at concurrency {4 * args.concurrency}: "
                f"{capacity.records_per_s:,.0f}/s vs ideal {ideal:,.0f}/s at {args.concurrency}: {note}"
            )
            report["fake_api_capacity_per_s"] = capacity.records_per_s
        ok, report["fake_api"] = _latency_runs(work, fake_api_cpu, args.repeat, ideal)
    if not ECHO_MODULE.exists():
        print(f" server: nginx + echo_sleep skipped: no {ECHO_MODULE} (apt-get install -y nginx-light)")
    else:
        print(f" server: nginx, echo_sleep {args.latency_ms / 1000:g} then the static body")
        with Nginx(
            setup.nginx, root=bodies.root, workers=args.nginx_workers, latency_ms=args.latency_ms
        ) as server:
            work = dataclasses.replace(work, base_url=server.url)
            nginx_ok, report["nginx_echo_sleep"] = _latency_runs(work, server.cpu_s, args.repeat, ideal)
            ok = ok and nginx_ok
        floors = [_median_rate(report[key], "floor") for key in ("fake_api", "nginx_echo_sleep")]
        if floors[0] and floors[1] and floors[0] < 0.95 * floors[1]:
            print(
                f"  note: the floor reaches {floors[0]:,.0f}/s against the fake API but {floors[1]:,.0f}/s "
                "against nginx: the fake API's own work per request (done one by one when a wave of "
                "sleeps ends together) adds to the latency, so it is part of the bottleneck there"
            )
    results["latency"] = report
    return ok


def _median_rate(report: dict[str, Any], contender: str) -> float | None:
    return next((m["records_per_s"] for m in report["medians"] if m["contender"] == contender), None)


def _latency_runs(
    work: Workload, server_cpu: Callable[[], float], repeat: int, ideal: float
) -> tuple[bool, dict[str, Any]]:
    """Floor and exporter, interleaved, against one slow server; medians vs the ideal."""
    measurements: list[Measurement] = []
    for repetition in range(1, repeat + 1):
        for name in ("floor", "exporter"):
            measurement = run_contender(name, work, repetition, server_cpu)
            print_measurement(measurement)
            measurements.append(measurement)
    summaries = summarize(measurements, ("floor", "exporter"))
    for s in summaries:
        print(
            f"  {s.contender:<9} median {s.records_per_s:,.0f} records/s "
            f"= {100 * s.records_per_s / ideal:.1f}% of {ideal:,.0f}/s"
        )
    exporter = next((s for s in summaries if s.contender == "exporter"), None)
    if exporter is not None:
        print(f"  target >= 90% of {ideal:,.0f}/s: {verdict(exporter.records_per_s >= 0.9 * ideal)}")
    ok = exporter is not None and not any(m.error for m in measurements)
    return ok, {
        "measurements": [m.as_json() for m in measurements],
        "medians": [dataclasses.asdict(s) for s in summaries],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--scenario latency` options, in their own help group."""
    group = parser.add_argument_group("--scenario latency")
    group.add_argument(
        "--latency-ms",
        type=float,
        default=100.0,
        help="server latency per request, fake API and nginx (default: %(default)s)",
    )
    group.add_argument(
        "--latency-ids", type=int, default=0, help="ids per run (default: 20 s worth at the ideal rate)"
    )
