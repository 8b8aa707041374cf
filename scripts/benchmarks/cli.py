"""The command line: `python scripts/bench.py --help`."""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks.common import CONTENDERS, LOOPS, NGINX_INSTALL, RESULTS_COMMANDS, ROOT, SCRIPTS, BenchError
from benchmarks.harness import Setup
from benchmarks.loops import floor_main
from benchmarks.nginx import find_nginx
from benchmarks.results import default_path
from benchmarks.results import main as results_main
from benchmarks.results import write as write_results
from benchmarks.scenarios import SCENARIOS, needs_nginx


def _contenders(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(CONTENDERS)}, comma-separated")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark the exporter against a minimal aiohttp loop, curl and aria2c on nginx.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        + next(p for p in (benchmarks.__doc__ or "").split("\n\n") if ".venv/bin/python" in p),
    )
    add = parser.add_argument
    add(
        "--scenario",
        choices=[*(s.name for s in SCENARIOS), "all"],
        default="throughput",
        help="what to measure (default: %(default)s; all = every one in turn)",
    )
    add("--ids", type=int, default=20_000, help="ids per throughput run (default: %(default)s)")
    add(
        "--concurrency",
        type=int,
        default=64,
        help="requests in flight, every contender (default: %(default)s)",
    )
    add(
        "--repeat",
        type=int,
        default=3,
        help="interleaved repetitions; medians are quoted (default: %(default)s)",
    )
    add(
        "--large-fraction",
        type=float,
        default=0.005,
        help="share of bodies of --large-bytes (default: %(default)s)",
    )
    add("--large-bytes", type=int, default=3_000_000, help="size of a large body (default: %(default)s)")
    add("--seed", type=int, default=0, help="seeds the bodies (default: %(default)s)")
    add(
        "--contenders",
        type=_contenders,
        default=list(CONTENDERS),
        help=f"comma-separated, in run order (default: {','.join(CONTENDERS)})",
    )
    add("--smoke", action="store_true", help="2,000 ids, one repetition, the throughput scenario (for CI)")
    add(
        "--json",
        type=Path,
        metavar="PATH",
        help="write the results here (default: WORKDIR/results-SCENARIO-TIME.json)",
    )
    add(
        "--workdir",
        type=Path,
        default=ROOT / "bench-out",
        help="scratch and body cache (default: bench-out/)",
    )
    add("--exporter", help="the exporter console script (default: .venv/bin/exporter)")
    add("--nginx-workers", default="1", help="nginx worker_processes (default: %(default)s)")
    for scenario in SCENARIOS:
        if scenario.add_arguments is not None:
            scenario.add_arguments(parser)
    return parser  # fmt: skip


def exporter_revision() -> str:
    """The commit the exporter was measured at, and which of its files differed from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "exporter"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not changed:
        return f"commit {commit}"
    return f"commit {commit} + uncommitted changes to {', '.join(line[3:] for line in changed)}"


def _versions(tools: dict[str, str], nginx: str) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "?"
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "?",
    )  # fmt: skip
    versions = {
        "machine": f"{os.cpu_count()} CPUs, {cpu}, Linux {platform.release()}",
        "python": platform.python_version(),
        "exporter": exporter_revision(),
    }
    if nginx:
        versions["nginx"] = first_line([nginx, "-v"])
    for name, path in tools.items():
        versions[name] = first_line([path, "--version"])
    return versions


def resolve_setup(args: argparse.Namespace) -> Setup:
    nginx = find_nginx()
    if nginx is None and needs_nginx(args.scenario):
        raise BenchError(f"nginx is not installed; install it with: {NGINX_INSTALL}", 2)
    exporter = args.exporter or next(
        (
            str(p)
            for p in (ROOT / ".venv/bin/exporter", Path(sys.executable).parent / "exporter")
            if p.exists()
        ),
        shutil.which("exporter"),
    )
    if exporter is None:
        raise BenchError("no exporter console script: run ./scripts/test or pip install -e . first", 2)
    tools = {name: path for name in ("curl", "aria2c") if (path := shutil.which(name))}
    workdir = args.workdir.resolve()
    runs = workdir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    # Two benchmarks in one workdir would delete each other's files (and spoil each other's
    # timings anyway). The lock lives as long as this process; contenders do not inherit it.
    lock = os.open(workdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise BenchError(
            f"another bench.py is running in {workdir}: wait for it to finish, or pass --workdir DIR "
            "(two at once also make each other's figures worthless)",
            2,
        ) from None
    return Setup(
        args=args,
        nginx=nginx or "",
        exporter=exporter,
        tools=tools,
        workdir=workdir,
        cache=workdir / "cache",
        runs=runs,
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in LOOPS:
        return floor_main(argv[0], argv[1:])
    if argv[:1] and argv[0] in RESULTS_COMMANDS:
        return results_main(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so nginx and the fake API are stopped on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.smoke:
        args.ids, args.repeat, args.scenario = 2_000, 1, "throughput"
    if not (args.pacing_scale > 0 and args.pacing_latency_ms >= 0):
        print("bench.py: --pacing-scale must be > 0 and --pacing-latency-ms >= 0", file=sys.stderr)
        return 2
    if min(args.ids, args.concurrency, args.repeat, args.memory_ids, args.burst) < 1 or args.rate <= 0:
        print(
            "bench.py: --ids, --concurrency, --repeat, --memory-ids, --burst and --rate must be > 0",
            file=sys.stderr,
        )
        return 2
    if not all(0 <= f <= 1 for f in (args.large_fraction, args.memory_large_fraction, args.resume_fraction)):
        print(
            "bench.py: --large-fraction, --memory-large-fraction and --resume-fraction are between 0 and 1",
            file=sys.stderr,
        )
        return 2
    try:
        setup = resolve_setup(args)
    except BenchError as exc:
        print(f"bench.py: {exc}", file=sys.stderr)
        return exc.code
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    command = shlex.join([os.path.relpath(sys.executable), os.path.relpath(SCRIPTS / "bench.py"), *argv])
    versions = _versions(setup.tools, setup.nginx)
    print(f"command: {command}")
    print(
        "settings: " + " ".join(
            f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in sorted(vars(args).items()) if k not in ("json", "workdir", "exporter", "smoke")
        )
    )  # fmt: skip
    for name, version in versions.items():
        print(f"{name}: {version}")
    results: dict[str, Any] = {"command": command, "settings": {k: str(v) for k, v in vars(args).items()}}
    results["versions"] = versions
    chosen = [s for s in SCENARIOS if args.scenario in (s.name, "all")]
    ok = True
    try:
        for scenario in chosen:
            ok = scenario.run(setup, results) and ok
    except BenchError as exc:
        print(f"bench.py: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("bench.py: interrupted; the servers and the running contender were stopped", file=sys.stderr)
        return 130
    finally:
        results_path = args.json or default_path(setup.workdir, args.scenario, started)
        write_results(results_path, results)
        print(f"results: {os.path.relpath(results_path)} (bench.py report / compare read it)")
    print(f"\ncommand: {command}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
