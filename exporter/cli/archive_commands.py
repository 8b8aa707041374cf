"""The options of the commands over archives, which send no request: `verify`, `status`, `index`, `get`.

Each command's module (`offline/verify.py`, `offline/status.py`,
`index_command.py`, `offline/get.py`) is imported only when that command runs,
so none of them loads what another needs, and takes plain values, not
argparse's namespace.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exporter.config import ManifestSource
from exporter.errors import UsageError

from .help import GET_EPILOG, INDEX_EPILOG, STATUS_EPILOG, VERIFY_EPILOG


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


def add_index_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter index`."""
    parser = commands.add_parser(
        "index",
        help="bring an archive's index up to date, or rebuild it from the checkpoint",
        description=(
            "Bring the index of each archive up to date with its checkpoint (what every export run\n"
            "does by itself at its start), or with --rebuild build it again from the checkpoint.\n"
            "Takes the archive's lock: not while an export runs on it."
        ),
        epilog=INDEX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="archive directories (the --out of export runs)"
    )
    parser.add_argument("--rebuild", action="store_true", help="remove the index and build it again")
    parser.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    parser.set_defaults(handler=_index)


def _index(args: argparse.Namespace) -> int:
    from exporter.index_command import index_command

    return index_command(args.dirs, rebuild=args.rebuild, as_json=args.json)


def add_get_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `exporter get`."""
    parser = commands.add_parser(
        "get",
        help="print archived records by id, exactly as stored",
        description=(
            "Print the archived record of each id, exactly as stored (one NDJSON line), from one or\n"
            "more archives (shards), found through the archives' index: one commit read and\n"
            "decompressed per record, not the whole archive."
        ),
        epilog=GET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="archive directories (the --out of export runs), or s3://BUCKET/PREFIX for archives in "
        "object storage",
    )
    parser.add_argument("--id", action="append", dest="ids", metavar="ID", help="an id to print; repeatable")
    parser.add_argument(
        "--ids-file",
        metavar="PATH",
        help="a file of ids, one a line (or CSV or NDJSON, as a manifest; .gz/.zst is fine); - for stdin",
    )
    parser.set_defaults(handler=_get)


def _get(args: argparse.Namespace) -> int:
    from exporter.offline.get import get_command

    if (args.ids is None) == (args.ids_file is None):
        raise UsageError("give the ids with --id ID (repeatable) or --ids-file PATH, one of the two")
    ids_file = None
    if args.ids_file is not None:
        ids_file = ManifestSource(path=None if args.ids_file == "-" else Path(args.ids_file))
    return get_command(args.dirs, ids=args.ids, ids_file=ids_file)
