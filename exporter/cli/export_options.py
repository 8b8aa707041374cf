"""`exporter export`'s options: one function per help group, in the order `--help` shows them.

Each option's value is checked by its `type=` (`values.py`); what needs more
than one option, the environment or a file is checked when the command runs
(`target.py`, `export_config.py`). The object-storage group is
`remote/options.py`'s, beside the `RemoteSettings` it makes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from exporter.config import (
    DEFAULT_COMPRESS_BATCH_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    INCLUDE_PARAMS,
)
from exporter.errors import ExitCode
from exporter.remote import options as remote_options

from .export_config import TOKEN_ENV
from .help import EXPORT_EPILOG
from .target import SHARD_INDEX_ENV
from .values import (
    compress_level,
    concurrency,
    include_name,
    metrics_label,
    non_negative_float,
    parse_duration,
    parse_shard,
    parse_size,
    positive_float,
    positive_int,
    push_url,
    query_pair,
    size_or_zero,
    thread_count,
)


class _RefuseToken(argparse.Action):
    """`--token VALUE` would show in `ps` and shell history: refuse it with the alternative."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: Any,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        parser.exit(
            ExitCode.USAGE,
            f"exporter: the token is not accepted on the command line (`ps` would show it); "
            f"set {TOKEN_ENV} or use --token-file PATH\n",
        )


def add_export_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter export`, its options in groups as `--help` shows them."""
    export = commands.add_parser(
        "export",
        help="fetch every id of a manifest into an archive directory",
        description=(
            "Fetch every recording listed in MANIFEST from GET {base}/v1/core/recordings/{id} and "
            "append it, exactly as served, as one line of NDJSON to the archive in --out. "
            "Interrupted runs resume where they stopped."
        ),
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _what_and_where(export)
    _connection(export)
    _pace(export)
    _budgets(export)
    _what_to_fetch(export)
    _archive(export)
    _output(export)
    _dry_run(export)
    remote_options.add_arguments(
        export, parse_duration=parse_duration, parse_size=parse_size, positive_int=positive_int
    )
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from .export_command import export_command  # the pipeline only for `export`

    return export_command(args)


def _what_and_where(export: argparse.ArgumentParser) -> None:
    """The manifest, the API, the archive and the token: what every run needs."""
    export.add_argument(
        "manifest",
        metavar="MANIFEST",
        help="file of ids, or - for standard input: plain text (one id a line, # comments), "
        "CSV with an 'id' column, or NDJSON objects with an \"id\" key; .gz/.zst compressed is fine",
    )
    export.add_argument(
        "--base-url",
        required=True,
        metavar="URL",
        help="the API's base URL, e.g. https://api.example.com",
    )
    export.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the archive directory (created, mode 0700), or s3://BUCKET/PREFIX for object storage "
        "(see the object storage options)",
    )
    export.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help=f"read the API token from this file instead of ${TOKEN_ENV}; read again when the API "
        "refuses it (401/403) and on SIGHUP, so a rotated token (a Kubernetes Secret) is picked up",
    )
    export.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    export.add_argument(
        "--format",
        choices=["auto", "text", "csv", "ndjson"],
        default="auto",
        help="manifest format (default: from the file name, else guessed from the first line)",
    )


def _connection(export: argparse.ArgumentParser) -> None:
    """How the API is reached: proxy, TLS trust and client certificate."""
    connection = export.add_argument_group("connection")
    connection.add_argument(
        "--proxy",
        metavar="URL",
        help="reach the API through this HTTP proxy (http://HOST:PORT; https --base-url only): a "
        "CONNECT tunnel carries TLS to the API, so the proxy sees its host name, never the token. "
        "Default: $https_proxy/$HTTPS_PROXY unless $no_proxy/$NO_PROXY matches the host (as curl); "
        "'none': no proxy, whatever the environment says",
    )
    connection.add_argument(
        "--proxy-auth-file",
        type=Path,
        metavar="PATH",
        help="the proxy's credentials, user:password on one line (keep it mode 0600), sent as Basic "
        "Proxy-Authorization on the CONNECT only; overrides credentials in $HTTPS_PROXY",
    )
    connection.add_argument(
        "--ca-cert",
        type=Path,
        metavar="PATH",
        help="also trust the CA certificates in this PEM file (a company's private CA)",
    )
    connection.add_argument(
        "--ca-cert-only",
        action="store_true",
        help="trust only --ca-cert, not the system's CA store",
    )
    connection.add_argument(
        "--client-cert",
        type=Path,
        metavar="PATH",
        help="mutual TLS: present this PEM client certificate (with its chain) to the API",
    )
    connection.add_argument(
        "--client-key",
        type=Path,
        metavar="PATH",
        help="the unencrypted PEM key of --client-cert (keep it mode 0600), unless the certificate "
        "file holds it",
    )
    connection.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// base URL to a host other than this machine (sends the token unencrypted)",
    )


def _pace(export: argparse.ArgumentParser) -> None:
    """How fast, how patiently, and how much of one response."""
    pace = export.add_argument_group("pace")
    pace.add_argument(
        "--concurrency",
        type=concurrency,
        default=8,
        metavar="N",
        help="requests in flight at once (default: 8)",
    )
    pace.add_argument(
        "--rate",
        type=non_negative_float,
        default=10.0,
        metavar="R",
        help="requests per second, all workers together, at most; 0 for no ceiling (default: 10). "
        "Below it the pool finds and holds the rate the API accepts when it answers 429, spreads "
        "quotas the API announces (RateLimit / X-RateLimit headers) over their window, and "
        "waits out a Retry-After longer than 1 s together",
    )
    pace.add_argument(
        "--burst",
        type=positive_int,
        default=None,
        metavar="B",
        help="requests that may start back to back after a pause (default: the rate, at least 1)",
    )
    pace.add_argument(
        "--max-attempts",
        type=positive_int,
        default=5,
        metavar="N",
        help="tries per id for 5xx, timeouts, broken or non-JSON bodies (default: 5); "
        "429s and an outage of the whole API do not use them up",
    )
    pace.add_argument(
        "--max-outage",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="when the API is down (connections refused, timeouts, 5xx for every id) the pool "
        "waits together, probing with one request at a time; after this long the run stops "
        "with exit 6, ids not fetched left for the next run (default: 10m)",
    )
    pace.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="seconds per request, body included (default: 60)",
    )
    pace.add_argument(
        "--max-response-bytes",
        type=parse_size,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metavar="SIZE",
        help="fail an id whose response body (decompressed) is larger than SIZE instead of "
        "reading on (default: 256MiB, far above any recording)",
    )


def _budgets(export: argparse.ArgumentParser) -> None:
    """Limits on the whole run; reaching one ends it cleanly (exit 5)."""
    budget = export.add_argument_group("budgets (exit 5 when reached; run again to continue)")
    budget.add_argument(
        "--max-duration",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="stop starting requests after this long (45s, 90m, 6h) and end the run cleanly: "
        "a nightly window",
    )
    budget.add_argument(
        "--max-requests",
        type=positive_int,
        default=None,
        metavar="N",
        help="send at most N requests, retries included (a daily quota); the ones in flight finish",
    )


def _what_to_fetch(export: argparse.ArgumentParser) -> None:
    """Which ids, and what of each."""
    what = export.add_argument_group("what to fetch")
    what.add_argument(
        "--include",
        type=include_name,
        action="append",
        default=[],
        metavar="NAME",
        help=f"ask for an optional part of each recording; repeatable: all, {', '.join(INCLUDE_PARAMS)}",
    )
    what.add_argument(
        "--query",
        type=query_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="send any other query parameter with every request; repeatable",
    )
    what.add_argument(
        "--refetch",
        action="store_true",
        help="fetch every id again into a fresh archive; the current one is moved to DIR/superseded/ "
        "(an interrupted --refetch run resumes when run again)",
    )
    what.add_argument(
        "--retry-failed",
        action="store_true",
        help="also ask again for ids an earlier run found missing (404) or invalid",
    )

    what.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="K/N",
        help="export only slice K of N (0-based) of the manifest's ids, by a stable hash of the id, so N "
        f"machines can split one export; INDEX/N takes K from ${SHARD_INDEX_ENV} (Kubernetes Indexed Job). "
        "--rate applies per shard",
    )


def _archive(export: argparse.ArgumentParser) -> None:
    """The records files: size, compression."""
    archive = export.add_argument_group("archive")
    archive.add_argument(
        "--max-file-bytes",
        type=size_or_zero,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="SIZE",
        help="start a new records file once one holds SIZE bytes (e.g. 512MB, 1GiB; default: 1GiB; "
        "0: never); a full file is closed, hashed and never written again",
    )
    archive.add_argument(
        "--compress",
        choices=["none", "gzip", "zstd"],
        default="none",
        help="compress records files (.ndjson.gz / .ndjson.zst), one frame per commit (default: none)",
    )
    archive.add_argument(
        "--compress-level",
        type=compress_level,
        default=None,
        metavar="N",
        help="compression level (default: gzip 6, zstd 3)",
    )
    archive.add_argument(
        "--compress-batch",
        type=parse_size,
        default=DEFAULT_COMPRESS_BATCH_BYTES,
        metavar="SIZE",
        help="with --compress, gather SIZE of records (or 5 s of them) into each gzip member or zstd "
        "frame (default: 1MiB); larger compresses better, smaller re-fetches less after a kill -9",
    )
    archive.add_argument(
        "--compress-threads",
        type=thread_count,
        default=None,
        metavar="N",
        help="with --compress gzip, threads that deflate a commit of 1MiB or more in pieces, at once "
        "(default: one per CPU; 1: the writer thread alone)",
    )


def _output(export: argparse.ArgumentParser) -> None:
    """What the run shows: progress, logs, metrics."""
    output = export.add_argument_group("output")
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only when stderr is a terminal)",
    )
    output.add_argument(
        "--progress-interval",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds between progress lines when there is no bar (default: 30); with --log-format "
        "json, between `progress` events",
    )
    output.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (for cron)")
    output.add_argument("-v", "--verbose", action="store_true", help="log every retry")
    output.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text (default) for people; json: every stderr line one JSON object with ts, level, "
        "event, run and the event's fields (no progress bar; `progress` events instead)",
    )
    output.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics to PATH (text format, for node_exporter's textfile collector): "
        "replaced atomically every 15 s and at the end of the run; never inside --out",
    )
    output.add_argument(
        "--metrics-label",
        type=metrics_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label on every metric, e.g. job=nightly or shard=3; repeatable. With --metrics-push, "
        "the labels are the grouping key (job: `job`, else 'exporter')",
    )
    output.add_argument(
        "--metrics-push",
        type=push_url,
        metavar="URL",
        help="push the metrics to this Prometheus Pushgateway (http(s)://HOST:PORT) at the end of the "
        "run; a failed push is a warning, never a failed export",
    )


def _dry_run(export: argparse.ArgumentParser) -> None:
    """A run's plan without the run."""
    dry = export.add_argument_group("dry run")
    dry.add_argument(
        "--dry-run",
        action="store_true",
        help="read the manifest and the archive and say what a run would do (fetch, skip, how long at "
        "--rate); sends nothing, writes nothing, needs no token, takes no lock",
    )
    dry.add_argument("--json", action="store_true", help="with --dry-run: print one JSON object")
