"""The contenders (floor, client, exporter, curl, aria2c): their commands, one measured run each, medians."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import API_PATH, CONTENDERS, LOOPS, MB, SCRIPTS, TOKEN, BenchError, child_env
from benchmarks.measure import Measurement, ProcessResult, machine_busy_s, run_measured, tail
from benchmarks.results import Table


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload:
    """What every contender fetches in a run: the same ids from the same server."""

    base_url: str
    manifest: Path
    ids: tuple[str, ...]
    total_bytes: int
    concurrency: int
    runs_dir: Path
    exporter: str
    tools: dict[str, str]


def files_in(directory: Path) -> tuple[int, int]:
    """(files, bytes) of the downloads in a directory (aria2c's control files excluded)."""
    count = size = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file() and not entry.name.endswith(".aria2"):
                count += 1
                size += entry.stat().st_size
    return count, size


def floor_command(work: Workload, concurrency: int | None = None, *, loop: str = "floor") -> list[str]:
    c = concurrency or work.concurrency
    return [sys.executable, str(SCRIPTS / "bench.py"), loop, str(work.manifest), work.base_url, str(c)]


def exporter_command(work: Workload, out: Path, *, rate: str = "0", extra: Sequence[str] = ()) -> list[str]:
    """The exporter as a user runs it; `--rate 0` (no limit) unless measuring the limiter."""
    return [
        work.exporter, "export", str(work.manifest), "--base-url", work.base_url, "--out", str(out),
        "--rate", rate, "--concurrency", str(work.concurrency), "--quiet", *extra,
    ]  # fmt: skip


def run_contender(name: str, work: Workload, repetition: int, server_cpu: Callable[[], float]) -> Measurement:
    """Run one contender once over the workload, check its result, and measure it."""
    run_dir = work.runs_dir / f"{name}-{repetition}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = run_dir / "out"
    log = run_dir / "output.log"
    if name in LOOPS:
        argv = floor_command(work, loop=name)
    elif name == "exporter":
        argv = exporter_command(work, out)
    elif name == "curl":
        out.mkdir()
        config = run_dir / "curl.config"
        with open(config, "w", encoding="ascii") as handle:
            handle.write(f'header = "Authorization: Bearer {TOKEN}"\n')
            for record_id in work.ids:
                handle.write(f'url = "{work.base_url}{API_PATH}{record_id}"\noutput = "{out}/{record_id}"\n')
        argv = [
            work.tools["curl"], "--parallel", "--parallel-max", str(work.concurrency),
            "--silent", "--show-error", "--fail", "--config", str(config),
        ]  # fmt: skip
    elif name == "aria2c":
        out.mkdir()
        listing = run_dir / "aria2c.input"
        with open(listing, "w", encoding="ascii") as handle:
            for record_id in work.ids:
                handle.write(f"{work.base_url}{API_PATH}{record_id}\n  out={record_id}\n")
        argv = [
            work.tools["aria2c"], "--input-file", str(listing), "--dir", str(out),
            "--max-concurrent-downloads", str(work.concurrency), "--max-connection-per-server", "1",
            "--split", "1", "--header", f"Authorization: Bearer {TOKEN}", "--file-allocation", "none",
            "--allow-overwrite", "true", "--auto-file-renaming", "false", "--max-tries", "1",
            "--enable-http-keep-alive", "true", "--console-log-level", "error", "--summary-interval", "0",
            "--download-result", "hide", "--auto-save-interval", "0", "--quiet",
        ]  # fmt: skip
    else:
        raise BenchError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}", 2)

    server_before, machine_before = server_cpu(), machine_busy_s()
    result = run_measured(argv, env=child_env(), log_path=log)
    server_cpu_s = server_cpu() - server_before
    others_cpu_s = max(0.0, machine_busy_s() - machine_before - server_cpu_s - result.cpu_s)
    records, size, error = _check(name, work, result, out, log)
    measurement = Measurement(
        contender=name,
        repetition=repetition,
        concurrency=work.concurrency,
        records=records,
        bytes=size,
        wall_s=result.wall_s,
        user_s=result.user_s,
        sys_s=result.sys_s,
        maxrss_bytes=result.maxrss_bytes,
        server_cpu_s=server_cpu_s,
        others_cpu_s=others_cpu_s,
        error=error,
    )
    if error is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        shutil.rmtree(out, ignore_errors=True)  # keep the log and the inputs for a look
    os.sync()  # write back what this contender left dirty before the next one starts
    return measurement


def _check(
    name: str, work: Workload, result: ProcessResult, out: Path, log: Path
) -> tuple[int, int, str | None]:
    """(records, bytes, error) of a finished contender; error says what was wrong."""
    expected = len(work.ids)
    if result.exit_code != 0:
        return 0, 0, f"{name} exited {result.exit_code}: {tail(log)}"
    if name in LOOPS:
        report = json.loads(log.read_text().strip().splitlines()[-1])
        records, size = int(report["ok"]), int(report["bytes"])
    elif name == "exporter":
        summary = json.loads((out / "summary.json").read_text())
        records = int(summary["counts"]["exported"])
        size = work.total_bytes if records == expected else 0
    else:
        records, size = files_in(out)
    if records != expected:
        return records, size, f"{name} got {records} of {expected} records: {tail(log)}"
    if size != work.total_bytes:
        return records, size, f"{name} got {size} bytes, the bodies hold {work.total_bytes}"
    return records, size, None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Summary:
    """Medians over the repetitions of one contender."""

    contender: str
    runs: int
    records_per_s: float
    records_per_s_range: tuple[float, float]
    mb_per_s: float
    cpu_s_per_10k: float
    sys_pct: float
    maxrss_mb: float
    server_cpu_pct: float
    others_cpu_pct: float
    vs_floor: float | None


def summarize(measurements: Sequence[Measurement], contenders: Sequence[str]) -> list[Summary]:
    """Medians per contender; vs_floor is the median of the ratios taken within each repetition."""
    good = [m for m in measurements if m.error is None]
    floors = {m.repetition: m.records_per_s for m in good if m.contender == "floor"}
    summaries = []
    for name in contenders:
        mine = [m for m in good if m.contender == name]
        if not mine:
            continue
        rates = [m.records_per_s for m in mine]
        ratios = [m.records_per_s / floors[m.repetition] for m in mine if m.repetition in floors]
        summaries.append(
            Summary(
                contender=name,
                runs=len(mine),
                records_per_s=statistics.median(rates),
                records_per_s_range=(min(rates), max(rates)),
                mb_per_s=statistics.median(m.mb_per_s for m in mine),
                cpu_s_per_10k=statistics.median(m.cpu_s_per_10k for m in mine),
                sys_pct=statistics.median(100 * m.sys_s / max(m.cpu_s, 1e-9) for m in mine),
                maxrss_mb=statistics.median(m.maxrss_bytes / MB for m in mine),
                server_cpu_pct=statistics.median(100 * m.server_cpu_s / m.wall_s for m in mine),
                others_cpu_pct=statistics.median(100 * m.others_cpu_s / m.wall_s for m in mine),
                vs_floor=statistics.median(ratios) if ratios and name != "floor" else None,
            )
        )
    return summaries


def markdown_table(summaries: Sequence[Summary]) -> Table:
    """The README's throughput table."""
    rows = []
    for s in summaries:
        ratio = "1.00" if s.contender == "floor" else (f"{s.vs_floor:.2f}" if s.vs_floor else "")
        rows.append((s.contender, f"{s.records_per_s:,.0f}", f"{s.mb_per_s:,.1f}", f"{s.cpu_s_per_10k:.2f}",
                     f"{s.maxrss_mb:,.0f} MB", ratio))  # fmt: skip
    header = ("contender", "records/s", "MB/s", "CPU s / 10k records", "peak RSS", "vs floor")
    return Table(title="throughput", header=header, rows=tuple(rows), right=(False, *[True] * 5))


def print_measurement(m: Measurement) -> None:
    if m.error is not None:
        print(f"  {m.contender:<9} FAILED: {m.error}", flush=True)
        return
    others = m.others_cpu_s / m.wall_s
    busy = f", rest of the machine {100 * others:.0f}% of a core: NOISY" if others > 0.1 else ""
    print(
        f"  {m.contender:<9} {m.records_per_s:>8,.0f} records/s {m.mb_per_s:>7,.1f} MB/s "
        f"{m.cpu_s_per_10k:>6.2f} CPU-s/10k ({100 * m.sys_s / max(m.cpu_s, 1e-9):.0f}% sys)  "
        f"peak RSS {m.maxrss_bytes / MB:>6,.1f} MB  "
        f"({m.wall_s:.2f} s, server {100 * m.server_cpu_s / m.wall_s:.0f}% of a core{busy})",
        flush=True,
    )
