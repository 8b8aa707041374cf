"""The exporter as a user runs it against the fake API's limits: token buckets, noise, a quota, outages."""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from benchmarks.bodies import recording_ids, write_manifest
from benchmarks.common import BenchError, child_env
from benchmarks.harness import Setup, fake_api_server
from benchmarks.measure import tail
from benchmarks.results import Table, record_tables
from benchmarks.timeline import (
    CONVERGE_WINDOW_REQUESTS,
    CONVERGE_WINDOW_S,
    Timeline,
    accepted_rates,
    convergence_s,
    quota_windows,
    steady_state,
)

PacingKind = Literal["limit", "faults", "quota", "outage"]
PACING_CASES: Final = "abcdefgh"
#: Where the steady state starts when the rate never converges: the issue's "after at most 10 s".
STEADY_FALLBACK_S: Final = 10.0
#: How often the bench polls the fake API's response timeline during a run.
TIMELINE_POLL_S: Final = 2.0
#: A run given --max-duration (or stopped by SIGTERM) gets this long to finish cleanly.
STOP_GRACE_S: Final = 30.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PacingCase:
    """One run of the pacing scenario: the fake API's flags, the exporter's options, a budget."""

    key: str
    title: str
    kind: PacingKind
    server: tuple[str, ...]
    exporter: tuple[str, ...]
    seconds: float
    """The time budget: --max-duration for a budgeted case; past it (and the grace) the bench stops it."""
    ids: int
    limit_rps: float | None = None
    quota: tuple[int, int] | None = None
    """(requests, window seconds) of a fixed-window quota case."""
    outage_s: float | None = None
    budgeted: bool = True
    """False when the run is expected to finish on its own (random faults, outages)."""
    slack_s: float = 0.0
    """Of seconds, how much is slack for a run that should finish sooner (the outage cases)."""


def pacing_cases(scale: float) -> list[PacingCase]:
    """The issue's cases, their durations (and the outage's) multiplied by scale.

    Manifests are twice what the limit allows in the budget, so a run that holds the limit
    is still busy when the budget ends, and the achieved rate is the exporter's, not the end
    of its manifest.
    """
    outage_s, before_s, after_s, outage_rate = 30 * scale, 15 * scale, 20 * scale, 20

    def seconds(base: float) -> float:
        return max(10.0, base * scale)

    def limit_case(key: str, limit: int, burst: int, options: tuple[str, ...], base_s: float) -> PacingCase:
        s = seconds(base_s)
        return PacingCase(
            key=key,
            title=f"token bucket {limit}/s, burst {burst}",
            kind="limit",
            server=("--rate-limit-rps", str(limit), "--rate-limit-burst", str(burst)),
            exporter=options,
            seconds=s,
            ids=int(2 * limit * s) + 100,
            limit_rps=float(limit),
        )

    faults = ["429bare"] * 14 + ["503"] * 3 + ["reset"] * 3  # at a 10% rate: 7%, 1.5%, 1.5%
    # Issue 16's flaky API: 60% of each id's first and second requests fault, so 400 ids take 784
    # requests, 8% of them 429s with only `Retry-After: 1`, 16% 5xx, 16% resets or half bodies.
    flaky = ["500", "502", "503", "504", "reset", "reset", "truncate", "truncate", "html", "wrongid"]
    flaky += ["429bare", "429bare"]
    flaky_server = ("--fault-rate", "0.6", "--fault-attempts", "2", "--fault-kinds", ",".join(flaky))
    noise_server = ("--fault-rate", "0.07", "--fault-kinds", "429bare", "--retry-after-s", "1")
    outage = [
        PacingCase(
            key=f"f-{mode}",
            title=f"{outage_s:g} s outage ({mode}) after {before_s:g} s",
            kind="outage",
            server=(
                "--outage-s",
                f"{outage_s:g}",
                "--outage-after-s",
                f"{before_s:g}",
                "--outage-mode",
                mode,
            ),
            exporter=("--rate", str(outage_rate)),
            seconds=before_s + outage_s + after_s + 60,
            ids=int(outage_rate * (before_s + after_s)),
            outage_s=outage_s,
            budgeted=False,
            slack_s=60,
        )
        for mode in ("503", "refuse")
    ]
    return [
        limit_case("a", 3, 3, (), 75),
        limit_case("b", 40, 5, ("--rate", "10000", "--concurrency", "32"), 60),
        limit_case("c", 400, 40, ("--rate", "10000", "--concurrency", "64"), 30),
        PacingCase(
            key="d",
            title="random faults: 7% 429bare (Retry-After: 1), 1.5% 503, 1.5% reset",
            kind="faults",
            server=("--fault-rate", "0.1", "--fault-kinds", ",".join(faults), "--retry-after-s", "1"),
            exporter=("--rate", "0"),
            seconds=seconds(90),
            ids=500,
            budgeted=False,
        ),
        PacingCase(
            key="e",
            title="fixed-window quota 100 per 10 s",
            kind="quota",
            server=("--quota-limit", "100", "--quota-window-s", "10"),
            exporter=("--rate", "10000"),
            seconds=seconds(60),
            ids=int(2 * 10 * seconds(60)) + 100,
            quota=(100, 10),
        ),
        *outage,
        PacingCase(
            key="g",
            title="flaky API: 60% of first and second attempts fault (5xx, 429 + Retry-After: 1, "
            "resets, half bodies, HTML, another id's record)",
            kind="faults",
            server=(*flaky_server, "--retry-after-s", "1"),
            exporter=(),
            seconds=seconds(240),
            ids=max(40, int(400 * min(1.0, scale))),
            budgeted=False,
            slack_s=seconds(240) - seconds(90),  # 784 requests at 10/s take about 80 s
        ),
        PacingCase(
            key="h",
            title="token bucket 40/s, burst 5, and 7% random 429s (429bare)",
            kind="limit",
            server=("--rate-limit-rps", "40", "--rate-limit-burst", "5", *noise_server),
            exporter=("--rate", "10000", "--concurrency", "32"),
            seconds=seconds(60),
            ids=int(2 * 40 * seconds(60)) + 100,
            limit_rps=40.0,
        ),
    ]


def _pacing_keys(text: str) -> str:
    keys = "".join(part.strip() for part in text.split(","))
    if not keys or any(key not in PACING_CASES for key in keys):
        raise argparse.ArgumentTypeError(f"{text!r}: choose cases from {','.join(PACING_CASES)}")
    return keys


def archived_id_counts(out: Path) -> collections.Counter[str]:
    """How often each id is in the archive's records files (plain NDJSON, one record a line)."""
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(out.glob("records-*.ndjson")):
        with open(path, "rb") as handle:
            for line in handle:
                counts[str(json.loads(line)["id"])] += 1
    return counts


def paused_text(paused: dict[str, float] | None) -> str:
    """`12.0 (retry_after 9.0, outage 3.0)`, or `n/a` when summary.json has no pacing.paused_s."""
    if paused is None:
        return "n/a"
    total = sum(paused.values())
    parts = ", ".join(f"{reason} {seconds:.1f}" for reason, seconds in sorted(paused.items()) if seconds)
    return f"{total:.1f}" + (f" ({parts})" if parts else "")


class TimelineReader:
    """Polls the fake API's GET /_stats/responses?since=N, keeping everything it has seen."""

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url
        self.timeline: Timeline = []
        self.total = 0
        self.lost = 0
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            with self._opener.open(f"{self.root_url}{path}", timeout=10) as response:
                data: dict[str, Any] = json.loads(response.read())
                return data
        except (OSError, ValueError):  # refused during an outage in refuse mode: try later
            return None

    def poll(self) -> None:
        data = self._get(f"/_stats/responses?since={self.total}")
        if data is None:
            return
        self.lost += int(data["first"]) - self.total
        self.timeline.extend((float(t), int(status)) for t, status in data["responses"])
        self.total = int(data["total"])

    def stats(self) -> dict[str, Any]:
        return self._get("/_stats") or {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PacingRun:
    """One exporter run of a pacing case: what it printed, its summary and what the server saw."""

    exit_code: int
    started: float
    """time.monotonic() at launch: the fake API's timeline uses the same clock."""
    wall_s: float
    stopped_by_bench: bool
    summary: dict[str, Any]
    timeline: Timeline
    stats: dict[str, Any]
    log: Path
    out: Path

    @property
    def paused(self) -> dict[str, float] | None:
        value = self.summary.get("pacing", {}).get("paused_s")
        return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else None

    end: float
    """Where the run's figures end: when the bench stopped it at its budget, else its exit."""


def run_pacing_case(setup: Setup, case: PacingCase, scratch: Path, manifest: Path) -> PacingRun:
    """Start the fake API with the case's flags and run the exporter against it as a user would."""
    args = setup.args
    out = scratch / f"out-{case.key}"
    shutil.rmtree(out, ignore_errors=True)
    log = scratch / f"exporter-{case.key}.log"
    options = list(case.exporter)
    deadline_s = case.seconds
    if case.budgeted:
        options += ["--max-duration", f"{case.seconds:.0f}s"]
        deadline_s += STOP_GRACE_S
    server_dir = scratch / f"server-{case.key}"
    server_dir.mkdir(parents=True, exist_ok=True)
    with fake_api_server(
        args, server_dir, latency_ms=args.pacing_latency_ms, large_fraction=0.0, extra=case.server
    ) as (url, _pid):
        reader = TimelineReader(url)
        argv = [setup.exporter, "export", str(manifest), "--base-url", url, "--out", str(out), *options]
        print(
            f"  $ {shlex.join(['exporter', *argv[1:3], '--base-url', 'URL', '--out', 'OUT', *options])}",
            flush=True,
        )
        print(f"    fake API: {' '.join(case.server) or '(no limit)'}", flush=True)
        with open(log, "wb") as handle:
            started = time.monotonic()
            proc = subprocess.Popen(
                argv, env=child_env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
            stopped = False
            end = 0.0
            try:
                while proc.poll() is None:
                    elapsed = time.monotonic() - started
                    if not stopped and elapsed >= deadline_s:
                        proc.send_signal(signal.SIGTERM)  # the exporter stops cleanly and writes summary.json
                        stopped, end = True, time.monotonic()
                    if stopped and elapsed >= deadline_s + STOP_GRACE_S:
                        proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(TIMELINE_POLL_S)
                    reader.poll()
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            wall_s = time.monotonic() - started
            end = end or started + wall_s
        time.sleep(0.2)
        reader.poll()
        stats = reader.stats()
    if reader.lost:
        print(
            f"    note: {reader.lost:,} responses fell out of the fake API's timeline before they were read"
        )
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return PacingRun(
        exit_code=proc.returncode if proc.returncode >= 0 else 128 - proc.returncode,
        started=started,
        wall_s=wall_s,
        stopped_by_bench=stopped,
        end=end,
        summary=summary,
        timeline=sorted(reader.timeline),
        stats=stats,
        log=log,
        out=out,
    )


def _exit_text(run: PacingRun) -> str:
    return f"{run.exit_code}" + (" (stopped at the budget)" if run.stopped_by_bench else "")


def _options(case: PacingCase) -> str:
    return " ".join(case.exporter) or "defaults (--rate 10 --concurrency 8)"


def report_limit_case(case: PacingCase, run: PacingRun) -> tuple[list[str], dict[str, Any]]:
    """Accepted rate, achieved/L and the 429 share in the steady state; time to converge."""
    assert case.limit_rps is not None
    limit = case.limit_rps
    ok_times = [t for t, status in run.timeline if status == 200]
    converged = convergence_s(
        ok_times,
        run.started,
        run.end,
        limit,
        window_s=max(CONVERGE_WINDOW_S, CONVERGE_WINDOW_REQUESTS / limit),
    )
    steady = steady_state(
        run.timeline, run.started, run.end, converged if converged is not None else STEADY_FALLBACK_S
    )
    exported = int(run.summary.get("counts", {}).get("exported", len(ok_times)))
    row = [
        case.key, f"{limit:g}/s", _options(case), f"{steady.accepted_per_s:,.2f}/s",
        f"{100 * steady.accepted_per_s / limit:.0f}%", f"{100 * steady.share_429:.1f}%",
        "never" if converged is None else f"{converged:.1f} s",
        paused_text(run.paused), f"{exported:,} in {run.wall_s:.0f} s", _exit_text(run),
    ]  # fmt: skip
    since = (
        "after convergence" if converged is not None else f"from {STEADY_FALLBACK_S:g} s on (never converged)"
    )
    print(
        f"    steady state {since}: {steady.accepted_per_s:,.2f} accepted/s over {steady.seconds:.0f} s "
        f"= {100 * steady.accepted_per_s / limit:.0f}% of L; {100 * steady.share_429:.1f}% of "
        f"{steady.responses:,} answers were 429"
    )
    return row, {
        "limit_rps": limit,
        "converged_s": converged,
        "steady": dataclasses.asdict(steady),
        "exported": exported,
        "rates_5s": accepted_rates(ok_times, run.started, run.end, CONVERGE_WINDOW_S, step_s=5.0),
    }


def report_faults_case(case: PacingCase, run: PacingRun) -> tuple[list[str], dict[str, Any]]:
    """Completion time, records/s, requests/s, failed ids, the 429 share over the whole run and the
    rate cuts the pacer made."""
    counts = run.summary.get("counts", {})
    exported, failed = int(counts.get("exported", 0)), int(counts.get("failed", 0))
    statuses = collections.Counter(status for _, status in run.timeline)
    complete = exported == case.ids
    done = f"{run.wall_s:.1f} s" if complete else f"not complete after {run.wall_s:.0f} s"
    requests_per_s = len(run.timeline) / run.wall_s
    cuts = run.summary.get("pacing", {}).get("rate_cuts")
    row = [
        case.key, f"{case.ids:,}", _options(case), f"{exported:,}", done, f"{exported / run.wall_s:,.1f}",
        f"{requests_per_s:,.1f}", f"{failed:,} {run.summary.get('failed_by_reason', {}) or ''}".strip(),
        f"{100 * statuses[429] / max(1, len(run.timeline)):.1f}%", "n/a" if cuts is None else str(cuts),
        paused_text(run.paused), _exit_text(run),
    ]  # fmt: skip
    return row, {
        "exported": exported,
        "failed": failed,
        "complete": complete,
        "statuses": dict(statuses),
        "requests_per_s": requests_per_s,
        "rate_cuts": cuts,
    }


def report_quota_case(case: PacingCase, run: PacingRun) -> tuple[list[str], dict[str, Any]]:
    """Share of the quota used in each whole window, and 429s after the first window."""
    origin = run.stats.get("quota_origin")
    if origin is None:
        raise BenchError("the fake API reported no quota_origin: is --quota-limit supported?")
    assert case.quota is not None
    limit, window_s = case.quota[0], float(case.quota[1])
    first_t = run.timeline[0][0] if run.timeline else run.started
    windows = quota_windows(run.timeline, origin, window_s, first_t, run.end)
    first_end = origin + (math.floor((first_t - origin) / window_s) + 1) * window_s
    after_first = sum(status == 429 for t, status in run.timeline if t >= first_end)
    shares = [ok / limit for _, ok, _ in windows]
    print("    per whole window: " + ", ".join(f"{ok}/{limit} ({limited}x429)" for _, ok, limited in windows))
    mean = f"{100 * statistics.mean(shares):.0f}%" if shares else "n/a"
    low = f"{100 * min(shares):.0f}%" if shares else "n/a"
    row = [
        case.key, f"{limit} per {window_s:g} s", _options(case), str(len(windows)), mean, low,
        f"{after_first:,}", paused_text(run.paused), _exit_text(run),
    ]  # fmt: skip
    return row, {
        "windows": windows,
        "mean_share": statistics.mean(shares) if shares else None,
        "after_first_429": after_first,
    }


def report_outage_case(
    case: PacingCase, run: PacingRun, manifest_ids: Sequence[str], verify_code: int
) -> tuple[list[str], dict[str, Any]]:
    """Exit code, every id exactly once, paused seconds, and how soon records flowed after the outage."""
    counts = archived_id_counts(run.out)
    expected = set(manifest_ids)
    missing = len(expected - set(counts))
    repeated = sum(1 for n in counts.values() if n > 1)
    foreign = len(set(counts) - expected)
    once = not missing and not repeated and not foreign
    failed = int(run.summary.get("counts", {}).get("failed", 0))
    outage_start = run.stats.get("outage_start")
    lag = None
    if outage_start is not None and case.outage_s is not None:
        outage_end = float(outage_start) + case.outage_s
        lag = next((t - outage_end for t, status in run.timeline if t >= outage_end and status == 200), None)
    row = [
        case.key, case.title, _options(case), f"{len(counts):,} of {len(expected):,}",
        "yes" if once else f"NO ({missing} missing, {repeated} repeated, {foreign} foreign)",
        str(failed), str(verify_code), paused_text(run.paused), "n/a" if lag is None else f"{lag:.1f} s",
        f"{run.wall_s:.0f} s", _exit_text(run),
    ]  # fmt: skip
    return row, {
        "archived": len(counts),
        "every_id_once": once,
        "missing": missing,
        "repeated": repeated,
        "failed": failed,
        "verify_exit": verify_code,
        "recovery_lag_s": lag,
    }


PACING_HEADERS: Final[dict[PacingKind, tuple[str, ...]]] = {
    "limit": ("case", "L", "exporter options", "accepted (steady)", "of L", "429s (steady)",
              "converged after", "paused s", "exported", "exit"),
    "faults": ("case", "ids", "exporter options", "exported", "completed in", "records/s", "requests/s",
               "failed", "429s", "rate cuts", "paused s", "exit"),
    "quota": ("case", "quota", "exporter options", "whole windows", "quota used (mean)", "(lowest)",
              "429s after the first window", "paused s", "exit"),
    "outage": ("case", "outage", "exporter options", "archived", "every id once", "failed",
               "verify exit", "paused s", "first record after", "wall", "exit"),
}  # fmt: skip


def pacing_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """The exporter against a token bucket, random 429s, a quota and outages (issue 9)."""
    args = setup.args
    cases = [c for c in pacing_cases(args.pacing_scale) if c.key[0] in args.pacing_cases]
    budget = sum(c.seconds - c.slack_s for c in cases)
    print(f"\n== pacing: cases {', '.join(c.key for c in cases)}, about {budget / 60:.0f} min")
    scratch = setup.runs / "pacing"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    print(f"  budgets end by --max-duration; the fake API adds {args.pacing_latency_ms:g} ms per answer")
    rows: dict[PacingKind, list[list[str]]] = {kind: [] for kind in PACING_HEADERS}
    report: dict[str, Any] = {}
    ok = True
    for case in cases:
        print(f"\n case {case.key}: {case.title}; {case.ids:,} ids, budget {case.seconds:.0f} s", flush=True)
        ids = recording_ids(case.ids, f"{case.key.replace('-', '')}-")
        manifest = write_manifest(scratch / f"ids-{case.key}.txt", ids)
        run = run_pacing_case(setup, case, scratch, manifest)
        if not run.summary:
            print(f"    no summary.json (exit {run.exit_code}): {tail(run.log)}")
            ok = False
        verify_code = -1
        if case.kind == "outage":
            verify = subprocess.run(
                [setup.exporter, "verify", str(run.out), "--manifest", str(manifest)],
                capture_output=True,
                text=True,
                check=False,
            )
            verify_code = verify.returncode
        figures: dict[str, Any]
        if case.kind == "limit":
            row, figures = report_limit_case(case, run)
        elif case.kind == "faults":
            row, figures = report_faults_case(case, run)
        elif case.kind == "quota":
            row, figures = report_quota_case(case, run)
        else:
            row, figures = report_outage_case(case, run, ids, verify_code)
        print(Table(title=case.kind, header=PACING_HEADERS[case.kind], rows=(tuple(row),)).markdown())
        rows[case.kind].append(row)
        report[case.key] = {
            "title": case.title, "server": list(case.server), "exporter": list(case.exporter),
            "ids": case.ids, "budget_s": case.seconds, "exit_code": run.exit_code,
            "stopped_by_bench": run.stopped_by_bench, "wall_s": run.wall_s, "paused_s": run.paused,
            "summary_counts": run.summary.get("counts"), **figures,
        }  # fmt: skip
        shutil.rmtree(run.out, ignore_errors=True)
    tables = [
        Table(title=kind, header=PACING_HEADERS[kind], rows=tuple(map(tuple, kind_rows)))
        for kind, kind_rows in rows.items()
        if kind_rows
    ]
    print("\n markdown (README):")
    for table in tables:
        print("\n" + table.markdown())
    results["pacing"] = report
    record_tables(report, tables)
    return ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--scenario pacing` options, in their own help group."""
    group = parser.add_argument_group("--scenario pacing")
    group.add_argument(
        "--pacing-cases",
        type=_pacing_keys,
        default=PACING_CASES,
        help="which cases, e.g. a,b or abc (default: all, a-f, about 7 minutes)",
    )
    group.add_argument(
        "--pacing-scale",
        type=float,
        default=1.0,
        help="multiply every case's duration (and the outage's) by this; at least 10 s a case "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--pacing-latency-ms",
        type=float,
        default=20.0,
        help="the fake API's latency per answer in the pacing cases (default: %(default)s)",
    )
