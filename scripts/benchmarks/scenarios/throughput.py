"""Floor vs exporter vs other tools, interleaved, medians and the exporter/floor ratio."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from benchmarks.bodies import describe_bodies, ensure_bodies, recording_ids, write_manifest
from benchmarks.common import LOOPS, BenchError, verdict
from benchmarks.contenders import Workload, markdown_table, print_measurement, run_contender, summarize
from benchmarks.harness import Setup
from benchmarks.measure import Measurement
from benchmarks.nginx import Nginx
from benchmarks.results import record_tables


def throughput_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """Floor vs exporter vs other tools, interleaved, medians and the exporter/floor ratio."""
    args = setup.args
    contenders = [c for c in args.contenders if c in (*LOOPS, "exporter") or c in setup.tools]
    for skipped in sorted(set(args.contenders) - set(contenders)):
        print(f"note: {skipped} is not installed, so it is skipped (apt-get install -y {_package(skipped)})")
    print(f"\n== throughput: {args.ids:,} ids, concurrency {args.concurrency}, {args.repeat} repetition(s)")
    bodies = ensure_bodies(
        setup.cache,
        recording_ids(args.ids),
        seed=args.seed,
        large_fraction=args.large_fraction,
        large_bytes=args.large_bytes,
    )
    print(f"  bodies: {describe_bodies(bodies)}")
    measurements: list[Measurement] = []
    with Nginx(setup.nginx, root=bodies.root, workers=args.nginx_workers) as server:
        work = setup.workload(
            base_url=server.url,
            manifest=write_manifest(setup.runs / "throughput-ids.txt", bodies.ids),
            ids=bodies.ids,
            total_bytes=bodies.total_bytes,
        )
        _warm_up(work)
        for repetition in range(1, args.repeat + 1):
            print(f" repetition {repetition}/{args.repeat}", flush=True)
            for name in contenders:
                measurement = run_contender(name, work, repetition, server.cpu_s)
                print_measurement(measurement)
                measurements.append(measurement)
    summaries = summarize(measurements, contenders)
    print(f"\n medians of {args.repeat} (range of records/s in brackets):")
    for s in summaries:
        ratio = f"  {s.contender}/floor {s.vs_floor:.2f}" if s.vs_floor is not None else ""
        print(
            f"  {s.contender:<9} {s.records_per_s:>8,.0f} records/s "
            f"[{s.records_per_s_range[0]:,.0f}-{s.records_per_s_range[1]:,.0f}] "
            f"{s.mb_per_s:>7,.1f} MB/s {s.cpu_s_per_10k:>6.2f} CPU-s/10k ({s.sys_pct:.0f}% sys)  "
            f"peak RSS {s.maxrss_mb:>6,.1f} MB"
            f"  server {s.server_cpu_pct:.0f}%{ratio}"
        )
    noisy = max((s.others_cpu_pct for s in summaries), default=0.0)
    if noisy > 10:
        print(f"  warning: the rest of the machine was busy (median {noisy:.0f}% of a core): noisy figures")
    failed = [m for m in measurements if m.error is not None]
    by_name = {s.contender: s for s in summaries}
    exporter = by_name.get("exporter")
    if exporter is not None:
        print("\n targets (issue 5):")
        if exporter.vs_floor is not None:
            print(
                f"  throughput exporter/floor {exporter.vs_floor:.2f} >= 0.75: "
                f"{verdict(exporter.vs_floor >= 0.75)}"
            )
        client = by_name.get("client")
        if client is not None:
            print(
                f"  (exporter/client {exporter.records_per_s / client.records_per_s:.2f}: the exporter "
                "against its own HTTP client with nothing else to do)"
            )
        mean_kb = bodies.total_bytes / len(bodies.ids) / 1000
        mix = "; --large-fraction 0 for ~10 KB records only" if bodies.large_count else ""
        print(
            f"  CPU {exporter.cpu_s_per_10k:.2f} s per 10k records (mean {mean_kb:.1f} KB{mix}) <= 1.2: "
            f"{verdict(exporter.cpu_s_per_10k <= 1.2)}"
        )
    table = markdown_table(summaries)
    print("\n markdown (README):\n")
    print(table.markdown())
    results["throughput"] = {
        "ids": args.ids,
        "concurrency": args.concurrency,
        "bodies_bytes": bodies.total_bytes,
        "large_bodies": bodies.large_count,
        "measurements": [m.as_json() for m in measurements],
        "medians": [dataclasses.asdict(s) for s in summaries],
    }
    record_tables(results["throughput"], [table])
    return not failed


def _package(tool: str) -> str:
    return {"aria2c": "aria2"}.get(tool, tool)


def _warm_up(work: Workload) -> None:
    """One unmeasured floor run: the page cache, nginx's open-file cache and .pyc files warm up."""
    started = time.perf_counter()
    measurement = run_contender("floor", work, 0, lambda: 0.0)
    if measurement.error is not None:
        raise BenchError(f"the warm-up run failed: {measurement.error}")
    print(f"  warm-up (floor, not counted): {time.perf_counter() - started:.1f} s", flush=True)
