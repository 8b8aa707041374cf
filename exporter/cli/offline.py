"""The offline commands' options: `verify` and `status`, which send no request and write nothing.

Each command's module (`offline/verify.py`, `offline/status.py`) is imported
only when that command runs, and takes plain values, not argparse's namespace.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exporter.config import ManifestSource
from exporter.errors import UsageError

from .help import STATUS_EPILOG, VERIFY_EPILOG


def add_verify_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter verify`."""
    parser = commands.add_parser(
        "verify",
        help="prove offline what archives hold, byte by byte and id by id",
        description=(
            "Check one or more archives without the API: the checkpoint replays, every committed\n"
            "byte has its crc32 (and every closed file its sha256), every committed line is a JSON\n"
            "object whose id the checkpoint lists at that place, no id is archived twice across\n"
            "the DIRs, and summary.json agrees. With --manifest, also prove that the DIRs together\n"
            "hold every valid id of the manifest (or list it as not_found in a failed.ndjson) and\n"
            "nothing else: the check for an export sharded over several archives."
        ),
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="archive directories (the --out of export runs), or s3://BUCKET/PREFIX archives",
    )
    parser.add_argument(
        "--manifest",
        action="append",
        metavar="M",
        help="the manifest the archives were exported from (once; - for standard input; .gz/.zst is fine)",
    )
    parser.add_argument(
        "--format",
        choices=["auto", "text", "csv", "ndjson"],
        default="auto",
        help="the manifest's format (default: from its name, else guessed from the first line)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="s3:// archives: download every object and check it as a directory is checked (without "
        "it: the checkpoint, and a HEAD of every records file: size, checksum, version)",
    )
    parser.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from exporter.offline.verify import verify_command

    manifests: list[str] = args.manifest or []
    if len(manifests) > 1:
        raise UsageError("--manifest may be given once; to check several manifests, concatenate them")
    if not manifests and args.format != "auto":
        raise UsageError("--format describes the manifest: give it with --manifest M")
    source: ManifestSource | None = None
    if manifests:
        source = ManifestSource(path=None if manifests[0] == "-" else Path(manifests[0]), format=args.format)
    return verify_command(args.dirs, manifest=source, deep=args.deep, quiet=args.quiet)


def add_status_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter status`."""
    parser = commands.add_parser(
        "status",
        help="show an archive's runs, files, failures and whether a run is in progress",
        description=(
            "Summarise an archive offline and quickly (the records are not read): every run with\n"
            "its start, end, exit code, counts and message; the records files with size, lines and\n"
            "hash; failed ids by reason; the last error; whether an export is running now; and\n"
            "generations set aside by --refetch."
        ),
        epilog=STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir", metavar="DIR", help="the archive directory (the --out of export), or s3://BUCKET/PREFIX"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead, for scripts")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from exporter.offline.status import status_command

    return status_command(args.dir, as_json=args.json)
