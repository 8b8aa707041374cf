"""A 1,000,000-id manifest, fresh, then resumed with 900,000 archived: peak RSS, time to first request."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.bodies import ensure_templates, recording_ids, write_manifest
from benchmarks.common import MB, MEMORY_PREFIX, child_env, verdict
from benchmarks.contenders import exporter_command
from benchmarks.harness import Setup
from benchmarks.measure import run_measured, tail
from benchmarks.nginx import Nginx, read_access_log


def first_request_after(access_log: Path, offset: int, start_epoch: float) -> float | None:
    """Seconds from a process start to the first request the server saw from it.

    Lines are in the order requests ended, so the first to start is among the first few
    thousand after `offset`.
    """
    entries = read_access_log(access_log, offset, limit=10_000)
    starts = [s for s, _ in entries if s >= start_epoch - 0.002]
    return starts[0] - start_epoch if starts else None


def memory_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """Peak RSS for a 1,000,000-id manifest, fresh and resumed with 900,000 archived."""
    args = setup.args
    total = args.memory_ids
    done = int(total * args.resume_fraction)
    print(f"\n== memory: {total:,}-id manifest, fresh; then {done:,} archived and the {total:,} resumed")
    templates = ensure_templates(
        setup.cache, seed=args.seed, large_fraction=args.memory_large_fraction, large_bytes=args.large_bytes
    )
    sizes = [p.stat().st_size for p in templates.glob("*.json")]
    print(
        f"  server: nginx, {len(sizes)} template bodies (mean {statistics.mean(sizes) / 1000:.1f} KB, "
        f"{sum(s >= MB for s in sizes)} large) with data.id rewritten per request by sub_filter"
    )
    scratch = setup.runs / "memory"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ids = recording_ids(total, MEMORY_PREFIX)
    manifest_all = write_manifest(scratch / "ids-all.txt", ids)
    manifest_done = write_manifest(scratch / "ids-done.txt", ids[:done])
    del ids
    rows: list[dict[str, Any]] = []
    ok = True
    with Nginx(
        setup.nginx, root=templates, templates=templates, access_log=True, workers=args.nginx_workers
    ) as server:
        assert server.access_log is not None

        def export(label: str, manifest: Path, out: Path, expect: int) -> dict[str, Any]:
            work = setup.workload(base_url=server.url, manifest=manifest, runs_dir=scratch)
            offset = server.access_log.stat().st_size if server.access_log else 0
            log = scratch / f"{label}.log"
            result = run_measured(exporter_command(work, out), env=child_env(), log_path=log)
            time.sleep(0.2)
            assert server.access_log is not None
            first = first_request_after(server.access_log, offset, result.started_epoch)
            summary = (
                json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
            )
            exported = summary.get("counts", {}).get("exported", 0)
            row = {
                "run": label,
                "exit_code": result.exit_code,
                "exported": exported,
                "wall_s": result.wall_s,
                "records_per_s": exported / result.wall_s,
                "cpu_s": result.cpu_s,
                "maxrss_mb": result.maxrss_bytes / MB,
                "first_request_s": first,
            }
            first_text = f"{first:.2f} s" if first is not None else "none"
            print(
                f"  {label:<14} exit {result.exit_code}, exported {exported:,} in {result.wall_s:,.1f} s "
                f"({row['records_per_s']:,.0f}/s, {result.cpu_s:,.1f} CPU-s), peak RSS "
                f"{row['maxrss_mb']:,.1f} MB, first request {first_text} after start",
                flush=True,
            )
            if result.exit_code != 0 or exported != expect:
                print(f"  FAILED: expected {expect:,} exported: {tail(log)}")
            rows.append(row)
            return row

        fresh = export(f"fresh {total:,}", manifest_all, scratch / "out-fresh", total)
        shutil.rmtree(scratch / "out-fresh", ignore_errors=True)
        os.sync()
        prefill = export(f"prefill {done:,}", manifest_done, scratch / "out-resume", done)
        resume = export("resume", manifest_all, scratch / "out-resume", total - done)
        shutil.rmtree(scratch / "out-resume", ignore_errors=True)
    for row, expect in ((fresh, total), (prefill, done), (resume, total - done)):
        ok = ok and row["exit_code"] == 0 and row["exported"] == expect
    limit = args.memory_limit_mb
    print(f"  targets: peak RSS < {limit} MB:")
    for row in (fresh, resume):
        print(f"    {row['run']:<14} {row['maxrss_mb']:,.1f} MB: {verdict(row['maxrss_mb'] < limit)}")
    first = resume["first_request_s"]
    first_ok = first is not None and first <= 5
    first_text = "no request seen" if first is None else f"{first:.2f} s"
    print(f"  target: the resume's first request within 5 s of its start ({first_text}): {verdict(first_ok)}")
    results["memory"] = {"ids": total, "archived_before_resume": done, "runs": rows}
    return ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--scenario memory` options, in their own help group."""
    group = parser.add_argument_group("--scenario memory")
    group.add_argument(
        "--memory-ids", type=int, default=1_000_000, help="manifest length (default: %(default)s)"
    )
    group.add_argument(
        "--resume-fraction",
        type=float,
        default=0.9,
        help="share archived before the resume (default: %(default)s)",
    )
    group.add_argument(
        "--memory-large-fraction",
        type=float,
        default=0.0,
        help="share of large template bodies (default: %(default)s: 0.5%% of a million "
        "3 MB bodies would write 15 GB per run)",
    )
    group.add_argument(
        "--memory-limit-mb", type=int, default=150, help="the target, in MB (default: %(default)s)"
    )
