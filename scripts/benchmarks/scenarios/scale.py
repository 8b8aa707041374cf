"""The archive index at scale (issue 18): a 10,000,000-id manifest over an archive of 9,000,000.

Runnable alone (`scripts/bench_scale.py`, which calls `main`) or as `bench.py --scenario scale`:

    .venv/bin/python scripts/bench_scale.py                     # 10M ids, 90% archived, ~10 minutes
    .venv/bin/python scripts/bench_scale.py --ids 1000000       # the 1M figures
    .venv/bin/python scripts/bench.py --scenario scale          # the same, from bench.py

No HTTP to build it: the archive is written by the exporter's own writer (`Archive.commit`, so it
is a real archive with its checkpoint and its index kept as a run keeps them), the first 90% of
the manifest's ids in the order a run with `--reorder` requests in flight finishes them, zstd,
1,000 records a commit. Then, each run its own process measured by the benchmark's
launcher (`benchmarks.measure`) (wall time, CPU, peak RSS), medians of `--repeat`:

    resume     `exporter export` over the whole manifest against a loopback server that notes when
               the first request arrives: start to first request, peak RSS; stopped by
               --max-requests (exit 5). The same into an empty directory: a fresh run's
    dry run    `export --dry-run --json` over the whole manifest: with the archive, and fresh; and
               fresh over the same ids shuffled with 5% of them repeated (`shuffled.txt`), what
               a manifest put together from several exports looks like
    get        one archived record by id: in this process through `offline.get.Getter` (the index
               opened once), and as a cold `exporter get DIR --id ID` command
    index      its size per id; `exporter index DIR` catching up what a killed run leaves
               (the newest runs deleted), and `exporter index DIR --rebuild`

Scratch files go under `--workdir` (default bench-out/scale, gitignored); the archive is kept
between invocations with the same parameters (`--rebuild-archive` makes it again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import MB, ROOT, BenchError, verdict
from benchmarks.harness import Setup
from benchmarks.measure import ProcessResult, run_measured, tail
from exporter.archive.layout import index_run_span
from exporter.archive.writer import Archive, RunRequest
from exporter.config import ArchiveSettings
from exporter.offline.get import Found, Getter

PREFIX = "s-"
PER_COMMIT = 1000


def scale_id(number: int) -> str:
    return f"{PREFIX}{number:08d}"


def reordered(count: int, spread: int, rng: random.Random) -> Iterator[int]:
    """0..count-1 in the order a run with `spread` requests in flight finishes them: out of order
    locally (each done at random among those in flight), never far from its place."""
    window: list[int] = []
    for number in range(count):
        window.append(number)
        if len(window) > spread:
            yield window.pop(rng.randrange(len(window)))
    rng.shuffle(window)
    yield from window


def build(archive: Path, manifest: Path, *, total: int, archived: int, spread: int, seed: int) -> float:
    """Write the manifest (every id, in order) and commit the first `archived` ids; seconds taken."""
    shutil.rmtree(archive, ignore_errors=True)
    with open(manifest, "w", encoding="ascii") as handle:
        for start in range(0, total, 100_000):
            handle.write("".join(f"{scale_id(n)}\n" for n in range(start, min(total, start + 100_000))))
    started = time.monotonic()
    request = RunRequest(started_at="bench", refetch=False, manifest=str(manifest), shard=None)
    writer = Archive.open(ArchiveSettings(out_dir=archive, compress="zstd"), request)
    try:
        batch: list[tuple[str, bytes]] = []
        for number in reordered(archived, spread, random.Random(seed)):
            record_id = scale_id(number)
            batch.append((record_id, b'{"id":"%s","n":%d}' % (record_id.encode(), number)))
            if len(batch) == PER_COMMIT:
                writer.commit(batch)
                batch = []
        writer.commit(batch)
        writer.end_run(at="bench", exit_code=0, status="complete", counts={"exported": archived})
    finally:
        writer.close()
    return time.monotonic() - started


#: The share of the ids `shuffled.txt` lists a second time.
REPEATED = 0.05


def write_shuffled(path: Path, *, total: int, seed: int) -> int:
    """The manifest's ids in random order, 5% of them twice (far apart); the number of repeats."""
    rng = random.Random(seed)
    numbers = list(range(total))
    repeats = rng.sample(numbers, int(total * REPEATED))
    numbers += repeats
    rng.shuffle(numbers)
    with open(path, "w", encoding="ascii") as handle:
        for start in range(0, len(numbers), 100_000):
            handle.write("".join(f"{scale_id(n)}\n" for n in numbers[start : start + 100_000]))
    return len(repeats)


class FirstRequest:
    """A loopback API answering every recording with a tiny body, noting when the first request came."""

    def __init__(self) -> None:
        self.first_epoch: float | None = None
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FirstRequest:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.first_epoch, self.requests = None, 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                if self.first_epoch is None:
                    self.first_epoch = time.time()
                self.requests += 1
                target = head.split(b" ", 2)[1]
                record_id = target.rsplit(b"/", 1)[-1].split(b"?", 1)[0]
                body = b'{"data":{"id":"%s"}}' % record_id
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                await writer.drain()
        writer.close()


def _env(workdir: Path) -> dict[str, str]:
    """The commands run as installed: with their bytecode cached (in the work directory, if this
    environment asks Python not to write it next to the sources), not compiled at every start."""
    env = {**os.environ, "EXPORTER_TOKEN": "bench-token"}
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        env.setdefault("PYTHONPYCACHEPREFIX", str(workdir / "pycache"))
    return env


def _measure(argv: list[str], log: Path) -> ProcessResult:
    return run_measured(argv, env=_env(log.parent.parent), log_path=log)


def _row(result: ProcessResult, **extra: Any) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "maxrss_mb": round(result.maxrss_bytes / MB, 1),
        **extra,
    }


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows if row[key] is not None))


def run(args: argparse.Namespace, exporter: str, workdir: Path) -> tuple[bool, dict[str, Any]]:
    """Build (or reuse) the archive, measure everything; (targets met, figures)."""
    total, archived = args.scale_ids, int(args.scale_ids * args.archived_fraction)
    scratch = workdir / f"scale-{total}-{archived}-{args.reorder}"
    scratch.mkdir(parents=True, exist_ok=True)
    archive, manifest, stamp = scratch / "archive", scratch / "ids.txt", scratch / "built.json"
    results: dict[str, Any] = {"ids": total, "archived": archived, "reorder": args.reorder}
    print(f"\n== scale: {total:,}-id manifest over an archive of {archived:,} (zstd, {PER_COMMIT} a commit)")
    if args.rebuild_archive or not stamp.exists():
        stamp.unlink(missing_ok=True)
        (scratch / "shuffled.txt").unlink(missing_ok=True)
        built_s = build(
            archive, manifest, total=total, archived=archived, spread=args.reorder, seed=args.seed
        )
        stamp.write_text(json.dumps({"built_s": built_s}))
    built_s = json.loads(stamp.read_text())["built_s"]
    index_files = [p for p in archive.iterdir() if index_run_span(p.name) is not None]
    index_bytes = sum(p.stat().st_size for p in index_files)
    checkpoint_bytes = (archive / "checkpoint.ndjson").stat().st_size
    results["build"] = {
        "seconds": round(built_s, 1),
        "index_bytes": index_bytes,
        "checkpoint_bytes": checkpoint_bytes,
    }
    print(
        f"  built by the writer in {built_s:,.0f} s (index kept as it went); "
        f"checkpoint {checkpoint_bytes / MB:,.0f} MB, index {index_bytes / MB:,.0f} MB "
        f"in {len(index_files)} runs: {index_bytes / archived:.1f} bytes an id"
    )
    ok = True
    ok &= _dry_runs(args, exporter, scratch, archive, manifest, results, total, archived)
    ok &= _resumes(args, exporter, scratch, archive, manifest, results)
    ok &= _gets(args, exporter, scratch, archive, results, archived)
    _index_times(args, exporter, scratch, archive, results)
    return ok, results


def _dry_runs(
    args: argparse.Namespace,
    exporter: str,
    scratch: Path,
    archive: Path,
    manifest: Path,
    results: dict[str, Any],
    total: int,
    archived: int,
) -> bool:
    ok = True
    shuffled = scratch / "shuffled.txt"
    if not shuffled.exists():
        write_shuffled(shuffled, total=total, seed=args.seed)
    for label, listed, out, expect, limit_s in (
        ("with the archive", manifest, archive, {"to_fetch": total - archived}, 20.0),
        ("fresh", manifest, scratch / "none", {"to_fetch": total, "duplicates": 0}, 15.0),
        (
            "shuffled, 5% repeated, fresh",
            shuffled,
            scratch / "none",
            {"to_fetch": total, "duplicates": int(total * REPEATED)},
            15.0,
        ),
    ):
        rows = []
        for repetition in range(args.repeat):
            log = scratch / f"dry-{label.split()[0].strip(',')}-{repetition}.log"
            argv = [
                exporter,
                "export",
                str(listed),
                "--base-url",
                "http://127.0.0.1:9",
                "--out",
                str(out),
                "--dry-run",
                "--json",
            ]
            result = _measure(argv, log)
            report = json.loads(log.read_text().splitlines()[-1]) if result.exit_code == 0 else {}
            rows.append(_row(result, right=report | expect == report))
            print(
                f"  dry run {label} {repetition + 1}: {rows[-1]} {'' if rows[-1]['right'] else tail(log)}",
                flush=True,
            )
        wall, rss = _median(rows, "wall_s"), max(row["maxrss_mb"] for row in rows)
        met = wall < limit_s and rss < args.scale_memory_limit_mb and all(row["right"] for row in rows)
        ok &= met
        print(
            f"  target: dry run {label} under {limit_s:g} s and {args.scale_memory_limit_mb} MB "
            f"(median {wall:.2f} s, "
            f"peak {rss:.0f} MB): {verdict(met)}"
        )
        results[f"dry_run_{label.split()[0].strip(',')}"] = rows
    return ok


def _resumes(
    args: argparse.Namespace,
    exporter: str,
    scratch: Path,
    archive: Path,
    manifest: Path,
    results: dict[str, Any],
) -> bool:
    ok = True
    limit = 1.0 if args.scale_ids <= 1_000_000 else 3.0
    with FirstRequest() as server:
        for label, out in (("resume", scratch / "resumed"), ("fresh run", scratch / "fresh")):
            rows = []
            for repetition in range(args.repeat):
                shutil.rmtree(out, ignore_errors=True)
                if label == "resume":  # on a copy: the run archives what it fetches
                    _copy_archive(archive, out)
                server.reset()
                log = scratch / f"{label.split()[0]}-{repetition}.log"
                argv = [
                    exporter,
                    "export",
                    str(manifest),
                    "--base-url",
                    f"http://127.0.0.1:{server.port}",
                    "--out",
                    str(out),
                    "--rate",
                    "0",
                    "--max-requests",
                    str(args.scale_requests),
                    "--quiet",
                    "--no-progress",
                ]
                result = _measure(argv, log)
                first = (
                    None
                    if server.first_epoch is None
                    else round(server.first_epoch - result.started_epoch, 3)
                )
                rows.append(_row(result, first_request_s=first, requests=server.requests))
                print(
                    f"  {label} {repetition + 1}: {rows[-1]} {'' if result.exit_code == 5 else tail(log)}",
                    flush=True,
                )
            first_s, rss = _median(rows, "first_request_s"), max(row["maxrss_mb"] for row in rows)
            if label == "resume":
                met = first_s < limit and rss < args.scale_memory_limit_mb
                ok &= met
                print(
                    f"  target: the resume's first request within {limit:g} s (median {first_s:.2f} s), "
                    f"peak RSS under {args.scale_memory_limit_mb} MB ({rss:.0f} MB): {verdict(met)}"
                )
            results[label.replace(" ", "_")] = rows
    return ok


def _copy_archive(archive: Path, copy: Path) -> None:
    """A copy a run may change: files copied, but index runs (never changed once written) linked."""
    copy.mkdir()
    for path in archive.iterdir():
        if path.is_file() and index_run_span(path.name) is not None:
            os.link(path, copy / path.name)
        elif path.is_file():
            shutil.copy2(path, copy / path.name)


def _gets(
    args: argparse.Namespace,
    exporter: str,
    scratch: Path,
    archive: Path,
    results: dict[str, Any],
    archived: int,
) -> bool:
    rng = random.Random(args.seed + 1)
    wanted = [scale_id(rng.randrange(archived)) for _ in range(200)]
    latencies = []
    with Getter([archive]) as getter:
        for record_id in wanted:
            started = time.perf_counter()
            (answer,) = getter.get([record_id])
            latencies.append(time.perf_counter() - started)
            if not isinstance(answer, Found):
                raise BenchError(f"{record_id} was not found: {answer}")
    latencies.sort()
    warm = {
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 2),
    }
    rows = []
    for repetition in range(max(5, args.repeat)):
        log = scratch / f"get-{repetition}.log"
        result = _measure([exporter, "get", str(archive), "--id", wanted[repetition]], log)
        rows.append(_row(result))
    cold = _median(rows, "wall_s")
    met = warm["median_ms"] < 50 and cold < 0.5
    print(
        f"  get, in this process: median {warm['median_ms']} ms, p95 {warm['p95_ms']} ms a record; "
        f"cold command: median {cold:.3f} s ({[r['wall_s'] for r in rows]})"
    )
    print(f"  target: under 50 ms a record and 0.5 s a cold command: {verdict(met)}")
    results["get"] = {"in_process": warm, "cold": rows}
    return met


def _index_times(
    args: argparse.Namespace, exporter: str, scratch: Path, archive: Path, results: dict[str, Any]
) -> None:
    runs = sorted((p for p in archive.iterdir() if index_run_span(p.name) is not None), key=lambda p: p.name)
    newest = sorted(runs, key=lambda p: index_run_span(p.name) or (0, 0))[1:]
    for path in newest:  # as a run killed before its last flush would leave it (or later)
        path.unlink()
    catch_up = _measure([exporter, "index", str(archive), "--json"], scratch / "index-catch-up.log")
    rebuild = _measure(
        [exporter, "index", str(archive), "--rebuild", "--json"], scratch / "index-rebuild.log"
    )
    report = json.loads((scratch / "index-rebuild.log").read_text().splitlines()[-1])
    results["index"] = {
        "catch_up": _row(catch_up, runs_removed=len(newest)),
        "rebuild": _row(rebuild),
        "bytes_per_id": report["bytes_per_id"],
        "index_bytes": report["index_bytes"],
    }
    print(
        f"  index: catching up after {len(newest)} newest run(s) removed: {catch_up.wall_s:.2f} s; "
        "rebuilt from "
        f"the checkpoint: {rebuild.wall_s:.1f} s, {rebuild.maxrss_bytes / MB:.0f} MB; "
        f"{report['bytes_per_id']} bytes an id"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario's options (also under `bench.py --scenario scale`)."""
    group = parser.add_argument_group("--scenario scale")
    group.add_argument(
        "--scale-ids",
        dest="scale_ids",
        type=int,
        default=10_000_000,
        help="manifest length (default: %(default)s)",
    )
    group.add_argument(
        "--archived-fraction", type=float, default=0.9, help="share archived (default: %(default)s)"
    )
    group.add_argument(
        "--reorder",
        type=int,
        default=64,
        help="requests in flight of the run the archive's order imitates (default: %(default)s)",
    )
    group.add_argument(
        "--scale-requests",
        type=int,
        default=500,
        help="--max-requests of each measured run (default: %(default)s)",
    )
    group.add_argument(
        "--rebuild-archive", action="store_true", help="build the archive again even if one is there"
    )
    group.add_argument(
        "--scale-memory-limit-mb",
        dest="scale_memory_limit_mb",
        type=int,
        default=400,
        help="the RSS target (default: %(default)s)",
    )


def scale_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """bench.py's hook: run with bench.py's exporter, workdir and --repeat."""
    ok, figures = run(setup.args, setup.exporter, setup.workdir / "scale")
    results["scale"] = figures
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_scale.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument(
        "--ids", dest="scale_ids", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each measurement; medians (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "scale")
    parser.add_argument("--exporter", default=str(ROOT / ".venv" / "bin" / "exporter"))
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    args = parser.parse_args(argv)
    try:
        ok, figures = run(args, args.exporter, args.workdir)
    except BenchError as exc:
        print(f"scripts/bench_scale.py: {exc}", file=sys.stderr)
        return exc.code
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1
