"""The command line: `python scripts/fake_api.py --help`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from fakeapi.app import base_url, start_server
from fakeapi.config import (
    OUTAGE_MODES,
    RESET_STYLES,
    FaultKind,
    ServerConfig,
    as_kinds,
    normalize_prefix,
    parse_fault_kind,
)
from fakeapi.state import ServerState


def _fail_first_arg(text: str) -> tuple[str, tuple[FaultKind, int]]:
    """Parse PREFIX=KIND:COUNT, e.g. flaky-=503:2."""
    prefix, sep, rule = text.rpartition("=")
    kind, sep2, count = rule.partition(":")
    if not sep or not sep2 or not count.isdigit():
        message = f"expected PREFIX=KIND:COUNT like flaky-=503:2, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    try:
        return prefix, (parse_fault_kind(kind), int(count))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _kinds_arg(text: str) -> tuple[FaultKind, ...]:
    """Parse a comma-separated list of fault kinds."""
    try:
        return as_kinds("--fault-kinds", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_CLI_EPILOG: Final = """\
special ids (by prefix):
  missing-*    404 with a JSON error
  edge-*       every value an archive must keep exactly (big ints, -0.0, U+2028, ...)
  deep-*       data nested 300 levels
  pretty-*     a pretty-printed body

fault kinds:
  500 502 503 504  JSON error    429      Retry-After seconds + X-RateLimit-*
  429date      Retry-After date  429bare  Retry-After seconds only (a flaky gateway)
  reset        half the body, then TCP RST
  truncate     half the body, then close (short of Content-Length)
  html         200 text/html     badjson  200 invalid JSON
  empty        200 empty body    wrongid  200, data.id is another id
  redirect     302 to http://127.0.0.2:PORT/redirected/...
  slow         sleep --slow-s, then answer
  nodata       200 JSON without "data"

limits and outages:
  --rate-limit-rps/--rate-limit-burst   token bucket: 429 + Retry-After + X-RateLimit-*
  --quota-limit N --quota-window-s S    N per S-second window; every answer carries
      X-RateLimit-Limit/-Remaining/-Reset, RateLimit-Policy: "default";q=N;w=S and
      RateLimit: "default";r=LEFT;t=SECONDS; over it: 429, Retry-After = seconds to reset
  --outage-s S [--outage-after-s A] [--outage-mode 503|refuse]
      for S seconds every API request gets 503, or the port refuses connections (the
      listening socket is closed, the control endpoints' too, and open connections are
      closed; it reopens on the same port); live: POST /_config
      {"outage_s": 30, "outage_mode": "refuse"} starts one now

control endpoints (no auth): GET /_stats, GET /_stats/responses?since=N ((clock, status)
  per response, from response N on), POST /_reset, GET|POST /_config

examples:
  FAKE_API_TOKEN=t python scripts/fake_api.py --port 0 --port-file /tmp/fake-url
  python scripts/fake_api.py --token t --fail-first flaky-=503:2 --fail-first cut-=reset:1
  python scripts/fake_api.py --token t --fault-rate 0.05 --fault-kinds 503,reset,429 \\
      --rate-limit-rps 200 --latency-ms 20 --jitter-ms 10 --large-fraction 0.01
  python scripts/fake_api.py --token t --quota-limit 100 --quota-window-s 10 \
      --outage-s 30 --outage-after-s 15 --outage-mode refuse
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line: a flag for every ServerConfig field, defaults from ServerConfig."""
    d = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="fake_api.py",
        description="Serve a fake recordings API, GET {base}/v1/core/recordings/{id}, for the\n"
        "exporter's demo, tests and benchmarks. Prints 'listening on URL' once ready;\n"
        "SIGTERM or SIGINT stops it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_CLI_EPILOG,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)")
    add("--port-file", type=Path, help="also write the base URL to this file once listening")
    add("--token", help="the accepted bearer token (default: $FAKE_API_TOKEN; one is required)")
    add(
        "--previous-token",
        help="also accept this token, as during a rotation's overlap; "
        'POST /_config {"previous_token": null} ends it (default: none)',
    )
    add("--path-prefix", default="", help="base path before /v1, e.g. /api (default: none)")
    add(
        "--seed",
        type=int,
        default=d.seed,
        help="seeds records, faults, jitter (default: %(default)s)",
    )
    add(
        "--revoke-after",
        type=int,
        metavar="N",
        help="answer 403 to every request after the first N (default: never)",
    )
    add(
        "--large-fraction",
        type=float,
        default=d.large_fraction,
        metavar="F",
        help="share of ids (0..1) with a --large-bytes transcript (default: %(default)s)",
    )
    add(
        "--large-bytes",
        type=int,
        default=d.large_bytes,
        metavar="N",
        help="length of a large transcript, in characters (default: %(default)s)",
    )
    add(
        "--record-bytes",
        type=int,
        metavar="N",
        help="serve every ordinary record as a compact body of exactly N bytes (default: the "
        "realistic mix of 1-20 KB and --large-fraction)",
    )
    add(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        metavar="MS",
        help="delay added to every API response (default: %(default)s)",
    )
    add(
        "--jitter-ms",
        type=float,
        default=d.jitter_ms,
        metavar="MS",
        help="extra delay, uniform in [0, MS] (default: %(default)s)",
    )
    add(
        "--fault-rate",
        type=float,
        default=d.fault_rate,
        metavar="P",
        help="probability (0..1) of a random fault per request (default: %(default)s)",
    )
    add(
        "--fault-kinds",
        type=_kinds_arg,
        default=d.fault_kinds,
        metavar="K1,K2",
        help=f"kinds --fault-rate draws from (default: {','.join(d.fault_kinds)})",
    )
    add(
        "--fault-attempts",
        type=int,
        default=d.fault_attempts,
        metavar="N",
        help="random faults only on each id's first N requests (default: every request)",
    )
    add(
        "--fail-first",
        type=_fail_first_arg,
        action="append",
        default=[],
        metavar="PREFIX=KIND:COUNT",
        help="the first COUNT requests of each id starting with PREFIX get KIND; repeatable",
    )
    add(
        "--retry-after-s",
        type=int,
        default=d.retry_after_s,
        metavar="S",
        help="Retry-After seconds on injected 429/429date faults (default: %(default)s)",
    )
    add(
        "--slow-s",
        type=float,
        default=d.slow_s,
        metavar="S",
        help="how long a 'slow' fault sleeps (default: %(default)s)",
    )
    add(
        "--rate-limit-rps",
        type=float,
        metavar="RPS",
        help="server-side token bucket, requests per second (default: off)",
    )
    add(
        "--rate-limit-burst",
        type=int,
        metavar="N",
        help="token bucket capacity (default: ceil(RPS))",
    )
    add(
        "--quota-limit",
        type=int,
        metavar="N",
        help="fixed-window quota: N requests per --quota-window-s, announced in every answer (default: off)",
    )
    add(
        "--quota-window-s",
        type=int,
        default=d.quota_window_s,
        metavar="S",
        help="the quota's window, aligned to the server's start (default: %(default)s)",
    )
    add(
        "--quota-reset-style",
        choices=RESET_STYLES,
        default=d.quota_reset_style,
        help="X-RateLimit-Reset as seconds (delta) or a Unix time (epoch) (default: %(default)s)",
    )
    add(
        "--outage-s",
        type=float,
        default=d.outage_s,
        metavar="S",
        help="an outage this long, from the start or --outage-after-s (default: none)",
    )
    add(
        "--outage-after-s",
        type=float,
        metavar="S",
        help="start the outage S seconds after the first API request (default: at once)",
    )
    add(
        "--outage-mode",
        choices=OUTAGE_MODES,
        default=d.outage_mode,
        help="503 to every API request, or refuse connections (default: %(default)s)",
    )
    return parser  # fmt: skip


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    """Build the ServerConfig from parsed flags; the token falls back to FAKE_API_TOKEN."""
    token = args.token or env.get("FAKE_API_TOKEN")
    if not token:
        raise ValueError("no token: pass --token TOKEN or set FAKE_API_TOKEN")
    return ServerConfig(
        token=token,
        previous_token=args.previous_token,
        path_prefix=normalize_prefix(args.path_prefix),
        seed=args.seed,
        revoke_after=args.revoke_after,
        large_fraction=args.large_fraction,
        large_bytes=args.large_bytes,
        record_bytes=args.record_bytes,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(args.fault_kinds),
        fault_attempts=args.fault_attempts,
        fail_first=dict(args.fail_first),
        retry_after_s=args.retry_after_s,
        slow_s=args.slow_s,
        rate_limit_rps=args.rate_limit_rps,
        rate_limit_burst=args.rate_limit_burst,
        quota_limit=args.quota_limit,
        quota_window_s=args.quota_window_s,
        quota_reset_style=args.quota_reset_style,
        outage_s=args.outage_s,
        outage_after_s=args.outage_after_s,
        outage_mode=args.outage_mode,
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write via a rename, so a script polling for the file never reads half a URL."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def serve(config: ServerConfig, host: str, port: int, port_file: Path | None) -> None:
    """Serve until SIGTERM or SIGINT, announcing the URL once the socket is bound."""
    # Handlers go in before the announcement: a caller may signal as soon as it reads it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = await start_server(ServerState(config), host, port)
    url = base_url(host, serving.port, config.path_prefix)
    if port_file is not None:
        _write_atomically(port_file, url + "\n")
    print(f"listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await serving.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse flags, serve, exit 0 on a signal, 2 on a bad setting."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config, args.host, args.port, args.port_file))
    except OSError as exc:
        print(f"fake_api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
