"""`exporter`: argv parsed, logging set up, the command run, a library error made one line and an exit code.

Only what every command needs is imported here; a command's own modules
(for `export`: the pipeline, the transport, the metrics, the progress bar)
are imported when it runs, so that an offline command starts quickly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn, cast

from exporter import __version__
from exporter.display import escape
from exporter.errors import ExitCode, ExporterError
from exporter.logs import JsonFormatter, TextFormatter, TextOnly
from exporter.signals import ProcessSignals

from .archive_commands import add_get_parser, add_index_parser, add_status_parser, add_verify_parser
from .export_options import add_export_parser
from .help import EXIT_CODES_HELP

log = logging.getLogger("exporter")


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages escaped: they quote what was typed, which may be anything."""

    def error(self, message: str) -> NoReturn:
        super().error(escape(message))


def build_parser() -> argparse.ArgumentParser:
    """`exporter` and its commands, in the order `exporter --help` lists them."""
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
    add_export_parser(commands)
    add_verify_parser(commands)
    add_status_parser(commands)
    add_index_parser(commands)
    add_get_parser(commands)
    return parser


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
        if args.command == "export":
            from exporter.progress import BarSafeHandler  # writes around the progress bar

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
        if sys.stdout is None and (args.command != "export" or args.dry_run):
            # Started with descriptor 1 closed (`>&-`): the command's answer would go nowhere.
            log.error(
                "standard output is closed: `exporter %s` prints its answer there (>/dev/null discards it)",
                args.command,
            )
            return int(ExitCode.USAGE)
        try:
            code: int = args.handler(args)
        except ExporterError as exc:
            log.error("%s", exc)
            return int(exc.exit_code)
        except KeyboardInterrupt:
            return int(ExitCode.SIGINT)
        return code
