"""The command line's object-storage options, and the `RemoteSettings` they make (no S3 client imported).

`cli/export_options.py` adds this group to `exporter export`; `cli/target.py` calls `settings_from`
when --out is an s3:// URL; every check that needs no request is made here,
so a mistyped option stops the run before anything is read or sent.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.config import RemoteSettings, Shard
from exporter.errors import UsageError

from . import location

REFETCH_REMOTE = (
    "--refetch cannot set an archive in object storage aside (nothing there is ever moved or "
    "deleted); export into a new prefix instead"
)

#: What each option is called in messages, and its attribute.
_REMOTE_ONLY = (
    ("--work-dir", "work_dir"),
    ("--upload-every", "upload_every"),
    ("--upload-bytes", "upload_bytes"),
    ("--object-lock", "object_lock"),
    ("--retain-days", "retain_days"),
    ("--retain-until", "retain_until"),
    ("--legal-hold", "legal_hold"),
    ("--sse", "sse"),
    ("--sse-kms-key-id", "sse_kms_key_id"),
)


def add_arguments(
    export: argparse.ArgumentParser,
    *,
    parse_duration: Callable[[str], float],
    parse_size: Callable[[str], int],
    positive_int: Callable[[str], int],
) -> None:
    """The "object storage" group of `exporter export`."""
    group = export.add_argument_group(
        "object storage (--out s3://BUCKET/PREFIX; credentials, region and endpoint from the AWS chain: "
        "AWS_PROFILE, AWS_*, web identity, instance metadata)"
    )
    group.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="stage pieces here before they are shipped (default: a private directory of its own "
        "under $XDG_CACHE_HOME or ~/.cache, one per URL); an empty one is fine: the run resumes "
        "from the bucket",
    )
    group.add_argument(
        "--upload-every",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="seal the open records file and ship it after this long (default: 5m), or --upload-bytes, "
        "whichever first: what a lost machine costs in fetching again",
    )
    group.add_argument(
        "--upload-bytes",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="seal and ship once the open records file holds SIZE (default: 64MiB)",
    )
    group.add_argument(
        "--object-lock",
        choices=["governance", "compliance"],
        help="lock every object (records, checkpoint segments, summaries) in this Object Lock mode; "
        "needs --retain-days or --retain-until, and a bucket with Object Lock and versioning "
        "(checked before the first request)",
    )
    group.add_argument(
        "--retain-days", type=positive_int, metavar="N", help="keep each object N days from its upload"
    )
    group.add_argument(
        "--retain-until",
        type=_future_instant,
        metavar="DATE",
        help="keep every object until DATE (2031-12-31, or an ISO 8601 time with its zone)",
    )
    group.add_argument("--legal-hold", action="store_true", help="also put a legal hold on every object")
    group.add_argument(
        "--sse",
        choices=["AES256", "aws:kms"],
        help="server-side encryption of every object (default: the bucket's)",
    )
    group.add_argument("--sse-kms-key-id", metavar="KEY", help="with --sse aws:kms: the KMS key (id or ARN)")
    # For tests against a local server: S3 itself wants parts of at least 5 MiB.
    group.add_argument("--s3-part-bytes", type=parse_size, default=None, help=argparse.SUPPRESS)
    group.add_argument("--s3-multipart-threshold", type=parse_size, default=None, help=argparse.SUPPRESS)


def check_unused(args: argparse.Namespace) -> None:
    """The object-storage options with a directory --out: a usage error naming the first one."""
    for option, name in _REMOTE_ONLY:
        if getattr(args, name, None) not in (None, False):
            raise UsageError(f"{option} is for an archive in object storage (--out s3://BUCKET/PREFIX)")


def settings_from(
    args: argparse.Namespace, out: str, shard: Shard | None, environ: Mapping[str, str]
) -> RemoteSettings:
    """`RemoteSettings` for `--out s3://...` (with `{shard}` replaced), every option checked."""
    if "{shard}" in out:
        if shard is None:
            raise UsageError("--out contains {shard} but no --shard was given")
        out = out.replace("{shard}", str(shard.index))
    where = location.parse(out)
    lock = args.object_lock.upper() if args.object_lock else None
    if lock is not None and (args.retain_days is None) == (args.retain_until is None):
        raise UsageError(
            "--object-lock needs how long to keep objects: --retain-days N or --retain-until DATE"
        )
    if lock is None and (args.retain_days is not None or args.retain_until is not None):
        raise UsageError("--retain-days and --retain-until need --object-lock governance|compliance")
    if args.sse_kms_key_id is not None and args.sse != "aws:kms":
        raise UsageError("--sse-kms-key-id is for --sse aws:kms")
    defaults = RemoteSettings(bucket=where.bucket, prefix=where.prefix, work_dir=Path())
    changes: dict[str, Any] = {}
    if args.s3_part_bytes is not None:
        changes["part_bytes"] = args.s3_part_bytes
    if args.s3_multipart_threshold is not None:
        changes["multipart_threshold_bytes"] = args.s3_multipart_threshold
    return RemoteSettings(
        bucket=where.bucket,
        prefix=where.prefix,
        work_dir=args.work_dir if args.work_dir is not None else default_work_dir(where.url, environ),
        upload_every_s=args.upload_every if args.upload_every is not None else defaults.upload_every_s,
        upload_bytes=args.upload_bytes if args.upload_bytes is not None else defaults.upload_bytes,
        object_lock=lock,
        retain_days=args.retain_days,
        retain_until=args.retain_until,
        legal_hold=args.legal_hold,
        sse=args.sse,
        sse_kms_key_id=args.sse_kms_key_id,
        **changes,
    )


def default_work_dir(url: str, environ: Mapping[str, str]) -> Path:
    """A private work dir of the URL's own: a rerun on this machine finds what it had not shipped yet."""
    cache = environ.get("XDG_CACHE_HOME") or (
        str(Path(environ["HOME"]) / ".cache") if environ.get("HOME") else ""
    )
    if not cache:
        raise UsageError("no $HOME or $XDG_CACHE_HOME to keep the work dir under: give --work-dir DIR")
    return Path(cache) / "exporter" / "s3" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _future_instant(text: str) -> str:
    """--retain-until: a date (midnight UTC) or an ISO 8601 time with its zone, in the future; ISO UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2031-12-31") from None
    if when.tzinfo is None:
        if len(text.strip()) > 10:
            raise argparse.ArgumentTypeError(f"{text!r}: give the time zone (e.g. 2031-12-31T00:00:00Z)")
        when = when.replace(tzinfo=UTC)
    if when <= datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} is not in the future")
    return when.astimezone(UTC).isoformat()
