"""The command line: argv and the environment in, one ExportConfig out, an exit code back.

The only module that reads the environment (`EXPORTER_TOKEN`, `HTTPS_PROXY`,
`NO_PROXY`, `JOB_COMPLETION_INDEX`) or argv; the library below it takes an
`ExportConfig` and nothing else. Library errors
become one line on stderr and the exit code their type carries.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from . import __version__, index_command
from .archive.layout import FAILED_NAME
from .config import (
    DEFAULT_COMPRESS_BATCH_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    INCLUDE_PARAMS,
    MAX_COMPRESS_THREADS,
    ArchiveSettings,
    Budgets,
    ExportConfig,
    HttpSettings,
    LimitSettings,
    ManifestSource,
    MetricsSettings,
    ProgressMode,
    ProxySettings,
    RemoteSettings,
    RetrySettings,
    Secret,
    Shard,
    TlsSettings,
)
from .display import escape
from .errors import ExitCode, ExporterError, UsageError
from .logs import JsonFormatter, TextFormatter, TextOnly, event
from .offline import get, status, verify
from .remote import options as remote_options
from .remote.location import is_remote
from .remote.options import REFETCH_REMOTE
from .signals import ProcessSignals

if TYPE_CHECKING:
    from .pipeline import RunOutcome
    from .transport.proxy_env import ProxyChoice

# What only `export` needs (the pipeline, the transport, metrics, the progress bar) is imported
# where it is used, so `get`, `status`, `verify` and `index` start in half the time.

TOKEN_ENV = "EXPORTER_TOKEN"  # noqa: S105 - the variable's name, not a token
SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"
#: As curl reads them: the lower-case name first.
HTTPS_PROXY_ENV = ("https_proxy", "HTTPS_PROXY")
NO_PROXY_ENV = ("no_proxy", "NO_PROXY")

log = logging.getLogger("exporter")

EXIT_CODES_HELP = """\
exit codes:
  0    every id of the manifest is in the archive
  1    the run finished, but some ids failed, were not found or were invalid
       (listed with the reason in DIR/failed.ndjson)
  2    usage or configuration error (bad option, no token, unreadable manifest, a
       secret file that is not a regular file, --metrics-file inside the archive,
       a proxy wanting credentials (407), an API wanting a client certificate)
  3    the API refused the token (401/403) and --token-file, read again, holds
       no other; what was fetched before is kept
  4    the archive cannot be used (locked by another run, damaged, a link or another
       user's directory where the archive writes, read-only, disk full); this code
       wins over any other reason the run stopped for, Ctrl-C included
  5    a budget was reached (--max-duration, --max-requests): what was fetched is kept;
       run the same command again to continue
  6    the API (or the proxy on the way) was unavailable for longer than --max-outage,
       or asked to wait longer than 15 minutes: what was fetched is kept
  130  interrupted by SIGINT (Ctrl-C): what was fetched is kept; run the same command to resume
  143  interrupted by SIGTERM: likewise
"""

EXPORT_EPILOG = f"""\
examples:
  EXPORTER_TOKEN=... exporter export ids.txt --base-url https://api.example.com --out archive/
  exporter export ids.csv.gz --base-url https://api.example.com --out archive/ \\
      --token-file ~/.config/exporter/token --rate 20 --concurrency 32 --include photos
  zcat nightly-ids.gz | exporter export - --base-url https://api.example.com --out archive/ --quiet
  exporter export ids.txt --base-url https://api.example.com --out s3://bucket/exports/q4 \\
      --object-lock compliance --retain-days 2557

the token:
  from the environment variable {TOKEN_ENV}, or from the file named by --token-file
  (one line; keep it mode 0600). Never on the command line, where `ps` shows it.
  It is sent only to the --base-url origin: redirects are not followed, a proxy
  only relays TLS it cannot read, and an https server must present a
  certificate the system (or --ca-cert) trusts. When the API refuses it
  (401/403), --token-file is read again once: a new token there is used and the
  refused requests are made again; SIGHUP re-reads it too.

in a company network:
  with no --proxy, https_proxy/HTTPS_PROXY and no_proxy/NO_PROXY are used as
  curl uses them, for an https --base-url only; --proxy none ignores them.
  Proxy credentials: http://USER:PASSWORD@HOST:PORT in HTTPS_PROXY, or
  --proxy-auth-file. A private CA: --ca-cert. Mutual TLS: --client-cert and
  --client-key.

unattended runs:
  --metrics-file /var/lib/node_exporter/textfile/exporter.prom --metrics-label job=nightly
      Prometheus metrics, rewritten every 15 s and at the end (node_exporter's
      textfile collector); --metrics-push http://pushgateway:9091 pushes them at the end
  --log-format json   one JSON object a line on stderr (start, progress, pause, failed, end ...)
  --dry-run [--json]  what a run would fetch and skip, and how long it takes at least; nothing
      is sent or written, and it works while another run holds the archive

resuming:
  run the same command again: ids already in the archive are not fetched again;
  a new manifest over an existing archive fetches only the ids it does not hold
  (nightly cron jobs), and ids that failed before are tried again, except those
  found missing (404) or invalid unless --retry-failed. --refetch starts over.

{EXIT_CODES_HELP}"""

# Numbers are read in ASCII digits only, and not too many of them: int() and float() also take
# other scripts' digits ('٣' is 3), refuse some that str.isdigit() accepts ('²'), turn 400
# digits into infinity and refuse 4,300 (the int max str digits limit), each a traceback.
_DECIMAL = r"([0-9]{1,15}(?:\.[0-9]{1,9})?)"
_SIZE = re.compile(rf"\s*{_DECIMAL}\s*([kmgt]?i?b?)?\s*", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}  # fmt: skip
_WHOLE = re.compile(r"\s*([0-9]{1,18})\s*", re.ASCII)
_NUMBER = re.compile(rf"\s*{_DECIMAL}\s*", re.ASCII)
#: The longest duration any option takes: beyond it no date can be shown.
MAX_DURATION_S = 3650 * 86400
#: Workers, each with its connection.
MAX_CONCURRENCY = 10_000


def _quoted(text: str) -> str:
    """User input quoted in a message: its repr (which escapes), and no more than 40 characters of it."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_size(text: str) -> int:
    """`512MB`, `1GiB`, `100k`, `1048576` -> bytes (decimal units, binary with `i`)."""
    match = _SIZE.fullmatch(text)
    unit = (match.group(2) or "").lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a size such as 512MB, 1GiB or 1000000")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return size


_DURATION = re.compile(rf"\s*{_DECIMAL}\s*(ms|s|m|h|d)?\s*", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`45s`, `90m`, `6h`, `1d`, `30` (seconds) -> seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a duration such as 45s, 90m or 6h")
    seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]
    if not 0 < seconds <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"{_quoted(text)}: the duration must be more than 0 and at most {MAX_DURATION_S // 86400}d"
        )
    return seconds


_SHARD = re.compile(r"\s*([0-9]{1,9}|INDEX)\s*/\s*([0-9]{1,9})\s*", re.ASCII)


def parse_shard(text: str) -> Shard:
    """`K/N` (K from 0 to N-1), or `INDEX/N` to take K from $JOB_COMPLETION_INDEX later."""
    match = _SHARD.fullmatch(text)
    if match is None or int(match.group(2)) < 1:
        raise argparse.ArgumentTypeError(
            f"{_quoted(text)} is not K/N, e.g. 0/4 (or INDEX/4 for Kubernetes), N at most 9 digits"
        )
    count = int(match.group(2))
    index = -1 if match.group(1) == "INDEX" else int(match.group(1))
    if index >= count:
        raise argparse.ArgumentTypeError(f"shard {index} does not exist in {count} shards (0..{count - 1})")
    return Shard(index=index, count=count)


def resolve_shard(shard: Shard | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard to run: K given, or taken from $JOB_COMPLETION_INDEX for `INDEX/N`."""
    if shard is None or shard.index >= 0:
        return shard
    raw = environ.get(SHARD_INDEX_ENV)
    match = None if raw is None else re.fullmatch(r"\s*([0-9]{1,9})\s*", raw, re.ASCII)
    if match is None:
        given = "is not set" if raw is None else f"is {_quoted(raw)}, not a number in 0-9 digits"
        raise UsageError(
            f"--shard INDEX/{shard.count} takes the shard from ${SHARD_INDEX_ENV}, which {given}: "
            f"set it to 0..{shard.count - 1} (a Kubernetes Indexed Job does), or give --shard K/{shard.count}"
        )
    index = int(match.group(1))
    if index >= shard.count:
        raise UsageError(f"${SHARD_INDEX_ENV}={index} is not a shard of {shard.count} (0..{shard.count - 1})")
    return Shard(index=index, count=shard.count)


def _out_dir(out: str, shard: Shard | None) -> Path:
    """--out, with `{shard}` replaced by the shard's index (one archive per shard)."""
    if "{shard}" not in out:
        return Path(out)
    if shard is None:
        raise UsageError("--out contains {shard} but no --shard was given")
    return Path(out.replace("{shard}", str(shard.index)))


def _archive_settings(
    args: argparse.Namespace, shard: Shard | None, environ: Mapping[str, str]
) -> tuple[ArchiveSettings, RemoteSettings | None]:
    """Where the archive goes: a directory, or (s3://) object storage staged in --work-dir."""
    remote = None
    if is_remote(args.out):
        remote = remote_options.settings_from(args, args.out, shard, environ)
    else:
        remote_options.check_unused(args)
    limit = args.max_file_bytes
    if remote is not None:  # pieces are sealed at --upload-bytes at the latest
        limit = remote.upload_bytes if limit is None else min(limit, remote.upload_bytes)
    settings = ArchiveSettings(
        out_dir=remote.work_dir / "stage" if remote is not None else _out_dir(args.out, shard),
        max_file_bytes=limit,
        compress=args.compress,
        compress_level=args.compress_level,
        compressed_commit_bytes=args.compress_batch,
        compress_threads=args.compress_threads,
    )
    return settings, remote


def _size_or_zero(text: str) -> int | None:
    """A --max-file-bytes value: a size, or 0 for no limit."""
    return None if text.strip() in ("0", "none") else parse_size(text)


def _positive_int(text: str) -> int:
    match = _WHOLE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a whole number (0-9, at most 18 digits)")
    value = int(match.group(1))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _thread_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_COMPRESS_THREADS:
        raise argparse.ArgumentTypeError(f"{value} threads: at most {MAX_COMPRESS_THREADS}")
    return value


def _concurrency(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_CONCURRENCY:,} requests in flight")
    return value


def _compress_level(text: str) -> int:
    match = re.fullmatch(r"\s*(-?[0-9]{1,6})\s*", text, re.ASCII)
    if match is None:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a compression level such as 3 or 19")
    return int(match.group(1))


def _non_negative_float(text: str) -> float:
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a number >= 0 such as 10 or 2.5")
    return float(match.group(1))


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _query_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _metrics_label(text: str) -> tuple[str, str]:
    try:
        from . import metrics

        return metrics.parse_label(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _push_url(text: str) -> str:
    try:
        from . import metrics

        return metrics.check_push_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _include_name(text: str) -> str:
    names = {name: param for name, param in INCLUDE_PARAMS.items()}
    names.update({param.lower(): param for param in INCLUDE_PARAMS.values()})
    if text.lower() == "all":
        return "all"
    param = names.get(text.lower())
    if param is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of: all, {', '.join(INCLUDE_PARAMS)} "
            "(any other parameter: --query KEY=VALUE)"
        )
    return param


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages escaped: they quote what was typed, which may be anything."""

    def error(self, message: str) -> NoReturn:
        super().error(escape(message))


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="exporter",
        description="Export call recordings from the recordings API into an exact, resumable NDJSON archive.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"exporter {__version__}")
    # The subcommands' parsers are _Parser too (argparse makes them of the parent's class).
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    _add_export(commands)
    verify.add_parser(commands)
    status.add_parser(commands)
    index_command.add_parser(commands)
    get.add_parser(commands)
    return parser


def _add_export(commands: Any) -> None:
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
    pace = export.add_argument_group("pace")
    pace.add_argument(
        "--concurrency",
        type=_concurrency,
        default=8,
        metavar="N",
        help="requests in flight at once (default: 8)",
    )
    pace.add_argument(
        "--rate",
        type=_non_negative_float,
        default=10.0,
        metavar="R",
        help="requests per second, all workers together, at most; 0 for no ceiling (default: 10). "
        "Below it the pool finds and holds the rate the API accepts when it answers 429, spreads "
        "quotas the API announces (RateLimit / X-RateLimit headers) over their window, and "
        "waits out a Retry-After longer than 1 s together",
    )
    pace.add_argument(
        "--burst",
        type=_positive_int,
        default=None,
        metavar="B",
        help="requests that may start back to back after a pause (default: the rate, at least 1)",
    )
    pace.add_argument(
        "--max-attempts",
        type=_positive_int,
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
        type=_positive_int,
        default=None,
        metavar="N",
        help="send at most N requests, retries included (a daily quota); the ones in flight finish",
    )
    pace.add_argument(
        "--timeout",
        type=_positive_float,
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

    what = export.add_argument_group("what to fetch")
    what.add_argument(
        "--include",
        type=_include_name,
        action="append",
        default=[],
        metavar="NAME",
        help=f"ask for an optional part of each recording; repeatable: all, {', '.join(INCLUDE_PARAMS)}",
    )
    what.add_argument(
        "--query",
        type=_query_pair,
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

    archive = export.add_argument_group("archive")
    archive.add_argument(
        "--max-file-bytes",
        type=_size_or_zero,
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
        type=_compress_level,
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
        type=_thread_count,
        default=None,
        metavar="N",
        help="with --compress gzip, threads that deflate a commit of 1MiB or more in pieces, at once "
        "(default: one per CPU; 1: the writer thread alone)",
    )
    archive.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="K/N",
        help="export only slice K of N (0-based) of the manifest's ids, by a stable hash of the id, so N "
        f"machines can split one export; INDEX/N takes K from ${SHARD_INDEX_ENV} (Kubernetes Indexed Job). "
        "--rate applies per shard",
    )

    output = export.add_argument_group("output")
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only when stderr is a terminal)",
    )
    output.add_argument(
        "--progress-interval",
        type=_positive_float,
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
        type=_metrics_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label on every metric, e.g. job=nightly or shard=3; repeatable. With --metrics-push, "
        "the labels are the grouping key (job: `job`, else 'exporter')",
    )
    output.add_argument(
        "--metrics-push",
        type=_push_url,
        metavar="URL",
        help="push the metrics to this Prometheus Pushgateway (http(s)://HOST:PORT) at the end of the "
        "run; a failed push is a warning, never a failed export",
    )
    output.add_argument(
        "--dry-run",
        action="store_true",
        help="read the manifest and the archive and say what a run would do (fetch, skip, how long at "
        "--rate); sends nothing, writes nothing, needs no token, takes no lock",
    )
    output.add_argument("--json", action="store_true", help="with --dry-run: print one JSON object")
    remote_options.add_arguments(
        export, parse_duration=parse_duration, parse_size=parse_size, positive_int=_positive_int
    )
    export.set_defaults(handler=_export_command)


def read_token(token_file: Path | None, environ: Mapping[str, str]) -> Secret:
    """The token from --token-file or $EXPORTER_TOKEN; UsageError saying how to give it."""
    from .transport.credentials import check_token, read_token_file, warn_if_shared

    if token_file is not None:
        token = read_token_file(token_file)
        warn_if_shared(token_file, "--token-file")
        return token
    text = environ.get(TOKEN_ENV, "")
    if not text.strip():
        raise UsageError(f"no API token: set {TOKEN_ENV}, or pass --token-file PATH")
    return check_token(text, TOKEN_ENV)


def _first_set(environ: Mapping[str, str], names: Sequence[str]) -> tuple[str, str] | None:
    """The first of `names` set to something, with its value."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def proxy_from(args: argparse.Namespace, environ: Mapping[str, str], base_url: str) -> ProxyChoice:
    """--proxy, else $HTTPS_PROXY minus $NO_PROXY (`proxy_env`), with --proxy-auth-file's credentials."""
    from .transport.credentials import read_proxy_auth_file, warn_if_shared
    from .transport.proxy_env import ProxyChoice, choose_proxy, with_credentials

    if args.proxy_auth_file is not None and args.proxy is not None and args.proxy.strip().lower() == "none":
        raise UsageError("--proxy-auth-file is for a proxy, but --proxy none says not to use one")
    choice = choose_proxy(
        base_url=base_url,
        option=args.proxy,
        environment=_first_set(environ, HTTPS_PROXY_ENV),
        no_proxy=_first_set(environ, NO_PROXY_ENV),
    )
    if args.proxy_auth_file is None:
        return choice
    credentials = read_proxy_auth_file(args.proxy_auth_file)
    warn_if_shared(args.proxy_auth_file, "--proxy-auth-file")
    if choice.proxy is None:
        return choice
    proxy = with_credentials(choice.proxy, credentials, f"--proxy-auth-file {args.proxy_auth_file}")
    return ProxyChoice(proxy, choice.note)


def tls_from(args: argparse.Namespace) -> TlsSettings:
    """--ca-cert, --client-cert and --client-key, checked now so that a bad file stops nothing half-done.

    OpenSSL reads them by name, and would block on a FIFO: each must first be
    a regular file of sane size (`check_pem_file`).
    """
    from .transport import tls
    from .transport.credentials import check_pem_file, warn_if_shared

    for option, path in (
        ("--ca-cert", args.ca_cert),
        ("--client-cert", args.client_cert),
        ("--client-key", args.client_key),
    ):
        if path is not None:
            check_pem_file(path, option)
    settings = TlsSettings(
        ca_cert=args.ca_cert,
        ca_cert_only=args.ca_cert_only,
        client_cert=args.client_cert,
        client_key=args.client_key,
    )
    tls.client_context(settings)
    if settings.client_key is not None:
        warn_if_shared(settings.client_key, "--client-key")
    return settings


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ExportConfig:
    """Build the run's configuration from parsed arguments and the environment."""
    from .transport.client import check_base_url

    token = read_token(args.token_file, environ)
    base_url = check_base_url(args.base_url, allow_insecure_http=args.allow_insecure_http)
    proxy = proxy_from(args, environ, base_url)
    if proxy.note:
        log.info("%s", proxy.note)
    includes: list[str] = []
    for param in args.include:
        for name in INCLUDE_PARAMS.values() if param == "all" else [param]:
            if name not in includes:
                includes.append(name)
    query = tuple((name, "true") for name in includes) + tuple(args.query)
    burst = args.burst if args.burst is not None else max(1, int(args.rate))
    shard = resolve_shard(args.shard, environ)
    _check_compress_level(args.compress, args.compress_level)
    archive, remote = _archive_settings(args, shard, environ)
    progress: ProgressMode = "auto" if args.progress is None else ("on" if args.progress else "off")
    return ExportConfig(
        metrics=metrics_from(args, archive.out_dir),
        progress_interval_s=args.progress_interval,
        log_format=args.log_format,
        manifest=ManifestSource(
            path=None if args.manifest == "-" else Path(args.manifest), format=args.format
        ),
        http=HttpSettings(
            base_url=base_url,
            token=token,
            token_file=args.token_file,
            timeout_s=args.timeout,
            query=query,
            max_response_bytes=args.max_response_bytes,
            proxy=proxy.proxy,
            tls=tls_from(args),
        ),
        archive=archive,
        remote=remote,
        shard=shard,
        retry=RetrySettings(max_attempts=args.max_attempts, max_outage_s=args.max_outage),
        limits=LimitSettings(concurrency=args.concurrency, rate_per_s=args.rate, burst=burst),
        budgets=Budgets(max_duration_s=args.max_duration, max_requests=args.max_requests),
        refetch=args.refetch,
        retry_failed=args.retry_failed,
        progress=progress,
        quiet=args.quiet,
    )


_COMPRESS_LEVELS = {"gzip": (0, 9), "zstd": (-(2**17), 22)}


def _check_compress_level(codec: str, level: int | None) -> None:
    """A --compress-level the codec takes (zstd's negative levels are its fastest)."""
    if level is None or codec not in _COMPRESS_LEVELS:
        return
    low, high = _COMPRESS_LEVELS[codec]
    if not low <= level <= high:
        raise UsageError(f"--compress-level {level} is not a {codec} level: {low} to {high}")


def metrics_from(args: argparse.Namespace, out_dir: Path) -> MetricsSettings:
    """--metrics-file, --metrics-label and --metrics-push, checked before anything is written.

    A file in no directory, or in the archive (`out_dir`, after `{shard}`),
    is a usage error now.
    """
    from . import metrics

    try:
        labels = metrics.check_labels(args.metrics_label)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    path: Path | None = args.metrics_file
    if path is not None:
        if path.name in ("", ".", "..") or path.is_dir():
            raise UsageError(
                f"--metrics-file {path} is a directory; name the file, e.g. {path}/exporter.prom"
            )
        if not path.parent.is_dir():
            raise UsageError(f"--metrics-file {path}: the directory {path.parent} does not exist")
        if in_directory(path, out_dir):
            raise UsageError(
                f"--metrics-file {path} is inside the archive {out_dir}, whose files only the exporter "
                "may write (replacing one would break the archive): write the metrics outside it"
            )
    return MetricsSettings(file=path, push_url=args.metrics_push, labels=labels)


def in_directory(path: Path, directory: Path) -> bool:
    """Whether the file `path` names is `directory` or lies anywhere under it.

    The metrics file is renamed over `path`'s name in `path`'s directory, so
    that directory is resolved with every link followed (and `..` applied after
    them, as the kernel does); a link at the name itself is replaced, not
    followed. The directory may not exist yet (a first run creates it). One
    that does is also matched by device and inode, as a bind mount of it
    would be.
    """
    parent = Path(os.path.realpath(path.parent))
    where = parent / path.name
    root = Path(os.path.realpath(directory))
    if where == root or root in where.parents:
        return True
    try:
        root_stat = os.stat(directory)
    except OSError:
        return False
    for ancestor in (parent, *parent.parents):
        try:
            info = os.stat(ancestor)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (root_stat.st_dev, root_stat.st_ino):
            return True
    return False


def _export_command(args: argparse.Namespace) -> int:
    import asyncio

    from .pipeline import run_export
    from .progress import make_progress

    if args.json and not args.dry_run:
        raise UsageError("--json is for --dry-run; for a run's own report read DIR/summary.json")
    if args.dry_run:
        return _dry_run_command(args)
    config = config_from_args(args, os.environ)
    if config.http.proxy is not None:
        log.info("%s", _proxy_line(config.http.proxy))
    progress = make_progress(
        config.progress,
        quiet=config.quiet,
        every_s=config.progress_interval_s,
        json_logs=config.log_format == "json",
    )
    signals: ProcessSignals | None = getattr(args, "signals", None)
    outcome = asyncio.run(run_export(config, progress=progress, signals=signals))
    _report(outcome, config)
    return outcome.exit_code


def _dry_run_command(args: argparse.Namespace) -> int:
    """--dry-run: the options are checked as for a run, but no token is read and nothing is sent."""
    from .transport.client import check_base_url

    check_base_url(args.base_url, allow_insecure_http=args.allow_insecure_http)
    shard = resolve_shard(args.shard, os.environ)
    if is_remote(args.out):
        return _remote_dry_run(args, shard)
    return _print_dry_run(args, shard, _out_dir(args.out, shard))


def _remote_dry_run(args: argparse.Namespace, shard: Shard | None) -> int:
    """--dry-run of an s3:// --out: the same plan, from a private copy of the archive's checkpoint."""
    import tempfile

    from .remote.verify import remote_archive_copy  # the S3 client only for s3:// URLs

    remote = remote_options.settings_from(args, args.out, shard, os.environ)
    if args.refetch:
        raise UsageError(REFETCH_REMOTE)
    with tempfile.TemporaryDirectory(prefix="exporter-dry-run-") as temp:
        copy = Path(temp) / "archive"
        remote_archive_copy(remote.url, copy)
        return _print_dry_run(args, shard, copy, shown=remote.url)


def _print_dry_run(args: argparse.Namespace, shard: Shard | None, out: Path, shown: str | None = None) -> int:
    from .offline import dryrun

    report = dryrun.dry_run(
        dryrun.DryRunRequest(
            manifest=ManifestSource(
                path=None if args.manifest == "-" else Path(args.manifest), format=args.format
            ),
            out_dir=out,
            shard=shard,
            retry_failed=args.retry_failed,
            refetch=args.refetch,
            rate_per_s=args.rate,
            max_requests=args.max_requests,
            max_duration_s=args.max_duration,
        )
    )
    if shown is not None:
        report = replace(report, out=shown)
    if args.json:
        sys.stdout.write(json.dumps(dryrun.to_json(report)) + "\n")
    else:
        sys.stdout.write(dryrun.render_text(report))
    return int(ExitCode.OK)


def _proxy_line(proxy: ProxySettings) -> str:
    """Which proxy the run goes through, once, without its credentials."""
    via = f"through the proxy {proxy.url} (from {proxy.source})"
    if proxy.credentials_from is not None:
        via += f", with credentials from {proxy.credentials_from}"
    return via


def _report(outcome: RunOutcome, config: ExportConfig) -> None:
    """The last word of a run: one error line, and unless --quiet one line of counts."""
    summary = outcome.summary
    run = summary.run if summary else None
    for note in outcome.notes:
        log.error("%s", note, extra=event("error", run=run))
    if outcome.message and outcome.exit_code not in (ExitCode.SIGINT, ExitCode.SIGTERM):
        log.error("%s", outcome.message, extra=event("error", run=run))
    if config.quiet:
        return
    counts = dict(summary.counts) if summary else {}
    out: Path | str = config.remote.url if config.remote is not None else config.archive.out_dir
    exported = counts.get("exported", 0)
    if summary is None:
        # The reports could not be written (the error is above); the records committed can be counted.
        exported = outcome.exported
        timing = "(summary.json not written)"
    else:
        timing = f"in {summary.elapsed_s:.1f}s ({summary.records_per_s:.1f}/s)"
    parts = [f"exported {exported} recording{'' if exported == 1 else 's'} to {out} {timing}"]
    extras = [
        f"{counts[key]} {label}"
        for key, label in (
            ("already_archived", "already archived"),
            ("duplicates", "repeated in the manifest"),
            ("not_found", "not found"),
            ("invalid", "invalid"),
            ("failed", "failed"),
            ("not_attempted", "not attempted"),
        )
        if counts.get(key)
    ]
    if extras:
        parts.append(", ".join(extras))
    if counts.get("not_found") or counts.get("invalid") or counts.get("failed"):
        parts.append(f"see {config.archive.out_dir / FAILED_NAME}")
    fields = event(
        "end",
        status=summary.status if summary else None,
        exit_code=outcome.exit_code,
        elapsed_s=summary.elapsed_s if summary else None,
        records_per_s=summary.records_per_s if summary else None,
        counts=counts,
        failed_by_reason=dict(summary.failed_by_reason) if summary else {},
        paused_s=summary.pacing.get("paused_s", {}) if summary else {},
    )
    log.info("%s", "; ".join(parts), extra=fields)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.INFO
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif getattr(args, "verbose", False):
        level = logging.DEBUG
    handler: logging.Handler
    if getattr(args, "log_format", "text") == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        if getattr(args, "command", None) == "export":
            from .progress import BarSafeHandler  # writes around the progress bar

            handler = BarSafeHandler(sys.stderr)
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter())
        handler.addFilter(TextOnly())
    root = logging.getLogger("exporter")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `exporter` console script and `python -m exporter`.

    The signal handlers go in first and stay until the end (`signals.py`):
    no SIGHUP kills the process at any moment of a command.
    """
    with ProcessSignals().installed() as signals:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.signals = signals  # for the export command's run
        _setup_logging(args)
        try:
            code: int = args.handler(args)
        except ExporterError as exc:
            log.error("%s", exc)
            return int(exc.exit_code)
        except KeyboardInterrupt:
            return int(ExitCode.SIGINT)
        return code
