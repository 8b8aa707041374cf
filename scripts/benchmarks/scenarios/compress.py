"""Plain vs gzip vs zstd against the fake API's bodies of exact sizes: records/s, bytes stored, CPU."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.bodies import recording_ids, write_manifest
from benchmarks.common import MB, child_env, verdict
from benchmarks.harness import Setup, fake_api_server
from benchmarks.measure import machine_busy_s, process_cpu_s, run_measured, tail
from benchmarks.results import Table, record_tables

#: Ids of a --rate 0 compression run: --compress-mb of records, within these bounds.
COMPRESS_IDS_MIN: Final = 20
COMPRESS_IDS_MAX: Final = 20_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompressRun:
    """One exporter run of the compression scenario, as the user would see it and as stored."""

    codec: str
    """`none`, `gzip`, `zstd`, or with a level: `gzip:1`, and --compress-threads: `gzip/1`."""
    record_bytes: int
    """Each body as the fake API serves it (`--record-bytes`); the archive keeps its data member."""
    rate: float
    """--rate; 0 for no limit."""
    concurrency: int
    repetition: int
    ids: int
    exported: int
    exit_code: int
    wall_s: float
    cpu_s: float
    stored_bytes: int
    """What the records files hold, as stored (compressed or not)."""
    raw_bytes: int
    """The same records as plain NDJSON lines."""
    frames: int
    """Commits: each one gzip member or zstd frame when compressed."""
    api_cpu_s: float = 0.0
    """CPU the fake API spent serving this run: on this machine it competes for the same cores."""
    others_cpu_s: float = 0.0
    """CPU the rest of the machine spent meanwhile (other people's work)."""

    @property
    def records_per_s(self) -> float:
        return self.exported / self.wall_s if self.wall_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "records_per_s": self.records_per_s}


def _codecs(text: str) -> list[str]:
    """`none,gzip,zstd,gzip:1,gzip/1`: --compress values, with :--compress-level and /--compress-threads."""
    codecs = [part.strip() for part in text.split(",") if part.strip()]
    for codec in codecs:
        name, level, threads = _codec_parts(codec)
        if (
            name not in ("none", "gzip", "zstd")
            or any(part and not part.isdigit() for part in (level, threads))
            or (name == "none" and (level or threads))
        ):
            raise argparse.ArgumentTypeError(
                f"{codec!r}: choose none, gzip or zstd, optionally :LEVEL and /THREADS (gzip:6/1)"
            )
    if not codecs or codecs[0] != "none":
        raise argparse.ArgumentTypeError(f"{text!r}: start with none, the baseline, e.g. none,gzip,zstd")
    return codecs


def _codec_parts(codec: str) -> tuple[str, str, str]:
    """`gzip:6/1` -> ("gzip", "6", "1"): --compress, --compress-level, --compress-threads ("": not given)."""
    spec, _, threads = codec.partition("/")
    name, _, level = spec.partition(":")
    return name, level, threads


def archive_figures(out: Path) -> tuple[int, int, int]:
    """(stored bytes, raw NDJSON bytes, commits) of an archive, from its checkpoint and files."""
    from exporter.archive import checkpoint, framing
    from exporter.archive.layout import CHECKPOINT_NAME

    with open(out / CHECKPOINT_NAME, "rb") as handle:
        frames = sum(1 for _ in checkpoint.commits(handle))
    stored = raw = 0
    for path in sorted(out.glob("records-*")):
        stored += path.stat().st_size
        with open(path, "rb") as handle:
            raw += sum(map(len, framing.decompressed_lines(handle, framing.codec_of_file(path.name))))
    return stored, raw, frames


def run_compress_case(
    setup: Setup, url: str, manifest: Path, ids: int, *, codec: str, record_bytes: int, rate: float,
    concurrency: int, repetition: int, api_pid: int,
) -> CompressRun:  # fmt: skip
    """One exporter run, fresh --out, as a user runs it; figures from its summary and archive.

    The CPU the fake API (`api_pid`) and the rest of the machine spent meanwhile
    are taken too: where all of it adds up to the machine's cores, a codec
    cannot go faster however it is threaded.
    """
    name, level, threads = _codec_parts(codec)
    run_dir = setup.runs / "compress" / f"{name}{level}t{threads}-{record_bytes}-{rate:g}-{repetition}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = run_dir / "out"
    argv = [
        setup.exporter, "export", str(manifest), "--base-url", url, "--out", str(out),
        "--rate", f"{rate:g}", "--concurrency", str(concurrency), "--compress", name, "--quiet",
        *(["--compress-level", level] if level else []),
        *(["--compress-threads", threads] if threads else []),
    ]  # fmt: skip
    api_before, machine_before = process_cpu_s(api_pid), machine_busy_s()
    result = run_measured(argv, env=child_env(), log_path=run_dir / "output.log")
    api_cpu_s = process_cpu_s(api_pid) - api_before
    others_cpu_s = max(0.0, machine_busy_s() - machine_before - api_cpu_s - result.cpu_s)
    summary_path = out / "summary.json"
    exported = 0
    if summary_path.exists():
        exported = int(json.loads(summary_path.read_text())["counts"]["exported"])
    if result.exit_code != 0 or exported != ids:
        print(f"    {codec}: exit {result.exit_code}, {exported} of {ids}: {tail(run_dir / 'output.log')}")
    stored, raw, frames = archive_figures(out) if exported else (0, 0, 0)
    shutil.rmtree(run_dir, ignore_errors=True)
    return CompressRun(
        codec=codec, record_bytes=record_bytes, rate=rate, concurrency=concurrency,
        repetition=repetition, ids=ids, exported=exported, exit_code=result.exit_code,
        wall_s=result.wall_s, cpu_s=result.cpu_s, stored_bytes=stored, raw_bytes=raw, frames=frames,
        api_cpu_s=api_cpu_s, others_cpu_s=others_cpu_s,
    )  # fmt: skip


def _size_text(size: float) -> str:
    """300 B, 2 KB, 20 KB, 3 MB."""
    for unit, name in ((MB, "MB"), (1000, "KB")):
        if size >= unit:
            return f"{size / unit:.3g} {name}"
    return f"{size:.0f} B"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompressCase:
    """One record size at one rate: every codec runs it --repeat times, interleaved."""

    record_bytes: int
    rate: float
    concurrency: int
    ids: int


def compress_cases(args: argparse.Namespace) -> list[CompressCase]:
    """At --compress-rate: records up to --compress-rate-max-bytes; --compress-at; at --rate 0: every size."""
    cases = [
        CompressCase(
            record_bytes=size,
            rate=args.compress_rate,
            concurrency=args.compress_concurrency,
            ids=max(1, int(args.compress_rate * args.compress_seconds)),
        )
        for size in args.compress_sizes
        if size <= args.compress_rate_max_bytes
    ]
    cases += [
        CompressCase(
            record_bytes=size,
            rate=rate,
            concurrency=args.compress_concurrency,
            ids=max(1, int(rate * args.compress_seconds)),
        )
        for size, rate in args.compress_at
        if size in args.compress_sizes and rate > 0
    ]
    for size in args.compress_sizes:
        by_bytes = int(args.compress_mb * MB // size)
        count = min(COMPRESS_IDS_MAX, max(COMPRESS_IDS_MIN, by_bytes))
        cases.append(CompressCase(record_bytes=size, rate=0.0, concurrency=args.concurrency, ids=count))
    return cases


def compress_scenario(setup: Setup, results: dict[str, Any]) -> bool:
    """Plain vs gzip vs zstd at --compress-rate and at --rate 0, by record size: records/s, stored bytes.

    The fake API serves every record as a body of exactly the given size
    (`--record-bytes`). Codecs run interleaved, --repeat times; medians, with
    the range in brackets. The target: every compressed run >= 90% of plain's records/s.
    """
    args = setup.args
    codecs: list[str] = args.compress_codecs
    cases = compress_cases(args)
    print(
        f"\n== compress: {' vs '.join(codecs)}; {', '.join(_size_text(s) for s in args.compress_sizes)} "
        f"records; --rate {args.compress_rate:g} --concurrency {args.compress_concurrency} (records up to "
        f"{_size_text(args.compress_rate_max_bytes)}), "
        f"{', '.join(f'{_size_text(size)} at --rate {rate:g}' for size, rate in args.compress_at)}, "
        f"and --rate 0 --concurrency {args.concurrency}; "
        f"{args.repeat} repetition(s); the fake API serves on this machine too"
    )
    scratch = setup.runs / "compress"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    runs: list[CompressRun] = []
    ok = True
    for size in args.compress_sizes:
        server_dir = scratch / f"server-{size}"
        server_dir.mkdir()
        extra = ["--record-bytes", str(size)]
        with fake_api_server(args, server_dir, latency_ms=0.0, extra=extra) as (url, api_pid):
            for case in (c for c in cases if c.record_bytes == size):
                manifest = write_manifest(scratch / f"ids-{case.ids}.txt", recording_ids(case.ids))
                print(
                    f"  {_size_text(size)} records, --rate {case.rate:g} --concurrency {case.concurrency}, "
                    f"{case.ids:,} ids",
                    flush=True,
                )
                for repetition in range(1, args.repeat + 1):
                    for codec in codecs:
                        run = run_compress_case(
                            setup, url, manifest, case.ids, codec=codec, record_bytes=size, rate=case.rate,
                            concurrency=case.concurrency, repetition=repetition, api_pid=api_pid,
                        )  # fmt: skip
                        ok = ok and run.exit_code == 0 and run.exported == case.ids
                        runs.append(run)
                        print(
                            f"    {codec:<7} {run.records_per_s:>9,.1f} records/s  {run.wall_s:6.2f} s  "
                            f"CPU {run.cpu_s:5.2f} s (API {run.api_cpu_s:5.2f} s, others "
                            f"{run.others_cpu_s:5.2f} s)  stored {run.stored_bytes / MB:8.3f} MB in "
                            f"{run.frames:,} commits",
                            flush=True,
                        )
    rate_rows, size_rows, met = compress_tables(runs, cases, codecs)
    compressed = codecs[1:]
    cpu_rows = compress_cpu_rows(runs, cases, codecs)
    tables = [
        Table(title="records/s by codec", header=("record", "--rate", "concurrency", "ids",
              *(f"{c} records/s" for c in codecs)), rows=_rows(rate_rows)),
        Table(title="bytes stored", header=("record", "stored line", "ids", *(f"{c} stored" for c in codecs),
              *(f"{c} records a frame" for c in compressed)), rows=_rows(size_rows)),
        Table(title="CPU seconds", header=("record", "--rate",
              *(f"{c} CPU s: exporter / API / others" for c in codecs)), rows=_rows(cpu_rows)),
    ]  # fmt: skip
    print("\n markdown (README):\n")
    print("\n\n".join(table.markdown() for table in tables))
    print(f"\n target: every compressed median >= 90% of plain's records/s: {verdict(met)}")
    results["compress"] = {
        "codecs": codecs,
        "cases": [dataclasses.asdict(c) for c in cases],
        "runs": [r.as_json() for r in runs],
        "target_met": met,
    }
    record_tables(results["compress"], tables)
    return ok


def _rows(rows: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(row) for row in rows)


def compress_cpu_rows(
    runs: Sequence[CompressRun], cases: Sequence[CompressCase], codecs: Sequence[str]
) -> list[list[str]]:
    """Median CPU seconds per run of the exporter, the fake API and the rest of the machine, by codec.

    Their sum over the run's wall time is how many of the machine's cores were
    busy: near 2 on this VM, no threading of a codec can make it faster.
    """
    rows = []
    for case in cases:
        mine = [r for r in runs if (r.record_bytes, r.rate) == (case.record_bytes, case.rate)]
        cells = []
        for codec in codecs:
            of_codec = [r for r in mine if r.codec == codec]
            if not of_codec:
                cells.append("-")
                continue
            exporter, api, others, wall = (
                statistics.median(getattr(r, field) for r in of_codec)
                for field in ("cpu_s", "api_cpu_s", "others_cpu_s", "wall_s")
            )
            busy = (exporter + api + others) / wall if wall else 0.0
            cells.append(f"{exporter:.1f} / {api:.1f} / {others:.1f} ({busy:.1f} cores)")
        rows.append([_size_text(case.record_bytes), f"{case.rate:g}", *cells])
    return rows


def compress_tables(
    runs: Sequence[CompressRun], cases: Sequence[CompressCase], codecs: Sequence[str]
) -> tuple[list[list[str]], list[list[str]], bool]:
    """The README's two tables (records/s by case, stored bytes by size) and whether 90% held."""
    rate_rows: list[list[str]] = []
    size_rows: list[list[str]] = []
    met = True
    for case in cases:
        mine = [r for r in runs if (r.record_bytes, r.rate) == (case.record_bytes, case.rate)]
        cells = []
        plain = 0.0
        for codec in codecs:
            rates = [r.records_per_s for r in mine if r.codec == codec]
            if not rates:
                cells.append("-")
                continue
            median = statistics.median(rates)
            plain = plain or median
            share = f" ({median / plain:.2f})" if codec != "none" and plain else ""
            met = met and (codec == "none" or median >= 0.9 * plain)
            digits = 1 if median < 100 else 0
            spread = f" [{min(rates):,.{digits}f}-{max(rates):,.{digits}f}]" if len(rates) > 1 else ""
            cells.append(f"{median:,.1f}{share}{spread}")
        head = [_size_text(case.record_bytes), f"{case.rate:g}", str(case.concurrency), f"{case.ids:,}"]
        rate_rows.append(head + cells)
        if case.rate:
            continue
        first = {c: next((r for r in mine if r.codec == c and r.exported == case.ids), None) for c in codecs}
        base = first[codecs[0]]
        if base is None or not base.stored_bytes:
            continue
        stored = []
        for codec, run in first.items():
            if run is None or not run.stored_bytes:
                stored.append("-")
                continue
            ratio = f" ({base.stored_bytes / run.stored_bytes:.1f}x)" if codec != "none" else ""
            stored.append(f"{_size_text(run.stored_bytes)}{ratio}")
        per_frame = [
            f"{r.exported / r.frames:,.0f}" if r is not None and r.frames else "-"
            for c, r in first.items() if c != "none"
        ]  # fmt: skip
        size_rows.append([_size_text(case.record_bytes), _size_text(base.raw_bytes / base.exported),
                          f"{case.ids:,}", *stored, *per_frame])  # fmt: skip
    return rate_rows, size_rows, met


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes in bytes, comma-separated, e.g. 300,2000")
    return sizes


def _points(text: str) -> list[tuple[int, float]]:
    """`20000@100,3000000@10`: (record bytes, --rate) pairs."""
    points = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        size, _, rate = part.partition("@")
        try:
            points.append((int(size), float(rate)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: SIZE@RATE, e.g. 3000000@10") from None
    return points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--scenario compress` options, in their own help group."""
    group = parser.add_argument_group("--scenario compress")
    group.add_argument(
        "--compress-codecs",
        type=_codecs,
        default=["none", "gzip", "zstd"],
        help="--compress values to compare, none first, each with :--compress-level and /--compress-threads "
        "if wanted, e.g. none,gzip/1,gzip,gzip:1,zstd (default: none,gzip,zstd)",
    )
    group.add_argument(
        "--compress-sizes",
        type=_sizes,
        default=[300, 2_000, 20_000, 3_000_000],
        help="record sizes as served, in bytes, comma-separated (default: 300,2000,20000,3000000)",
    )
    group.add_argument(
        "--compress-rate", type=float, default=50.0, help="the limited runs' --rate (default: %(default)s)"
    )
    group.add_argument(
        "--compress-concurrency",
        type=int,
        default=8,
        help="the limited runs' --concurrency (default: %(default)s; --concurrency for --rate 0)",
    )
    group.add_argument(
        "--compress-seconds",
        type=float,
        default=10.0,
        help="ids of a limited run = --compress-rate x this (default: %(default)s)",
    )
    group.add_argument(
        "--compress-at",
        type=_points,
        default=[(20_000, 100.0), (3_000_000, 10.0)],
        help="more limited runs, SIZE@RATE comma-separated, for the sizes --compress-sizes has; "
        "3 MB at the default --rate 10 is 30 MB/s (default: 20000@100,3000000@10)",
    )
    group.add_argument(
        "--compress-rate-max-bytes",
        type=int,
        default=20_000,
        help="limited runs only for records up to this size (default: %(default)s)",
    )
    group.add_argument(
        "--compress-mb",
        type=float,
        default=100.0,
        help=f"MB of records per --rate 0 run, {COMPRESS_IDS_MIN}-{COMPRESS_IDS_MAX:,} ids "
        "(default: %(default)s)",
    )
