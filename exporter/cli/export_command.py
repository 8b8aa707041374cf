"""`exporter export` as a command: the configuration built, the run (or its dry run), its last line.

Imported only when the command is `export`; the pipeline, the transport and
the progress bar only when it runs, not for --dry-run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.config import ExportConfig, ProxySettings
from exporter.errors import ExitCode, UsageError
from exporter.logs import event
from exporter.remote.options import REFETCH_REMOTE
from exporter.signals import ProcessSignals

from .export_config import config_from_args, proxy_from
from .target import Target, resolve_target

if TYPE_CHECKING:
    from exporter.pipeline import RunOutcome

log = logging.getLogger("exporter")


def export_command(args: argparse.Namespace) -> int:
    """`exporter export`: a run, or with --dry-run what a run would do."""
    if args.json and not args.dry_run:
        raise UsageError("--json is for --dry-run; for a run's own report read DIR/summary.json")
    if args.dry_run:
        return _dry_run_command(args)
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """The run itself; the pipeline, the transport and the progress bar are imported for it alone."""
    import asyncio

    from exporter.pipeline import run_export
    from exporter.progress import make_progress

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
    from exporter.transport.client import check_base_url

    base_url = check_base_url(args.base_url, allow_insecure_http=args.allow_insecure_http)
    proxy_from(args, os.environ, base_url, read_secrets=False)  # a proxy the run refuses: exit 2 here too
    target = resolve_target(args, os.environ)
    if target.remote is None:
        return _print_dry_run(args, target, target.out_dir)
    if args.refetch:
        raise UsageError(REFETCH_REMOTE)
    # The same plan, from a private copy of the archive's checkpoint.
    import tempfile

    from exporter.remote.verify import remote_archive_copy  # the S3 client only for s3:// URLs

    with tempfile.TemporaryDirectory(prefix="exporter-dry-run-") as temp:
        copy = Path(temp) / "archive"
        remote_archive_copy(target.remote.url, copy)
        return _print_dry_run(args, target, copy, shown=target.remote.url)


def _print_dry_run(args: argparse.Namespace, target: Target, out: Path, shown: str | None = None) -> int:
    from exporter.offline import dryrun

    report = dryrun.dry_run(
        dryrun.DryRunRequest(
            manifest=target.manifest,
            out_dir=out,
            shard=target.shard,
            retry_failed=args.retry_failed,
            refetch=args.refetch,
            rate_per_s=args.rate,
            max_requests=args.max_requests,
            max_duration_s=args.max_duration,
            shown=shown,
        )
    )
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
    exported = counts.get("exported", 0)
    if summary is None:
        # The reports could not be written (the error is above); the records committed can be counted.
        exported = outcome.exported
        timing = "(summary.json not written)"
    else:
        timing = f"in {summary.elapsed_s:.1f}s ({summary.records_per_s:.1f}/s)"
    parts = [f"exported {exported} recording{'' if exported == 1 else 's'} to {outcome.archive} {timing}"]
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
        parts.append(f"see {outcome.failed_list}")
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
