"""`export --dry-run --json` over 1,000,000 ids with 900,000 archived: wall time, CPU, peak RSS."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from typing import Any

from benchmarks.bodies import recording_ids, write_manifest
from benchmarks.common import MB, MEMORY_PREFIX, child_env, verdict
from benchmarks.harness import Setup
from benchmarks.measure import run_measured, tail


def dryrun_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """`export --dry-run --json` over a --memory-ids manifest with --resume-fraction of it archived.

    The archive is written by the exporter's own writer (`Archive.commit`, 1,000 ids a commit) with
    one-line records: a dry run reads the checkpoint and the manifest, never the records, so their
    size does not matter. Its lock is held while the dry runs are measured, as a run would hold it.
    """
    from exporter.archive.writer import Archive, RunRequest
    from exporter.config import ArchiveSettings

    args = setup.args
    total = args.memory_ids
    done = int(total * args.resume_fraction)
    print(f"\n== dryrun: {total:,}-id manifest over an archive holding {done:,} of them (locked)")
    scratch = setup.runs / "dryrun"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ids = recording_ids(total, MEMORY_PREFIX)
    manifest = write_manifest(scratch / "ids-all.txt", ids)
    out = scratch / "out"
    request = RunRequest(started_at="bench", refetch=False, manifest="bench", shard=None)
    archive = Archive.open(ArchiveSettings(out_dir=out), request)
    started = time.monotonic()
    try:
        for start in range(0, done, 1000):
            archive.commit([(i, b'{"id":"%s"}' % i.encode()) for i in ids[start : min(start + 1000, done)]])
        built_s = time.monotonic() - started
        print(f"  archive built in {built_s:.1f} s ({done:,} ids, {done // 1000:,} commits)")
        del ids
        argv = [setup.exporter, "export", str(manifest), "--base-url", "http://127.0.0.1:9",
                "--out", str(out), "--dry-run", "--json"]  # fmt: skip
        rows = []
        for repetition in range(args.repeat):
            log = scratch / f"dry-{repetition}.log"
            result = run_measured(argv, env=child_env(), log_path=log)
            report = json.loads(log.read_text()) if result.exit_code == 0 else {}
            right = (report.get("to_fetch"), report.get("already_archived")) == (total - done, done)
            rows.append(
                {"wall_s": result.wall_s, "cpu_s": result.cpu_s, "maxrss_mb": result.maxrss_bytes / MB,
                 "exit_code": result.exit_code, "right": right}
            )  # fmt: skip
            print(
                f"  dry run {repetition + 1}: exit {result.exit_code}, {result.wall_s:.2f} s wall, "
                f"{result.cpu_s:.2f} CPU-s, peak RSS {result.maxrss_bytes / MB:,.1f} MB, counts "
                f"{'right' if right else 'WRONG: ' + tail(log)}",
                flush=True,
            )
    finally:
        archive.close()
        shutil.rmtree(scratch, ignore_errors=True)
    wall = statistics.median(row["wall_s"] for row in rows)
    ok = all(row["exit_code"] == 0 and row["right"] for row in rows) and wall < 10
    print(f"  target: under 10 s (median {wall:.2f} s): {verdict(ok)}")
    results["dryrun"] = {"ids": total, "archived": done, "runs": rows}
    return ok
