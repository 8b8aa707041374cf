"""What an export reads and where it writes: MANIFEST, --out and --shard, read once for a run and a dry run.

A run and its --dry-run must agree on which ids and which archive they mean,
so both take the `Target` that `resolve_target` makes: the manifest, the
shard (K taken from $JOB_COMPLETION_INDEX for `INDEX/N`), and the archive
directory (--out with `{shard}` replaced), or for `--out s3://...` the
`RemoteSettings` and the directory in the work dir where pieces are staged.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.config import ManifestSource, RemoteSettings, Shard
from exporter.errors import UsageError
from exporter.remote import options as remote_options
from exporter.remote.location import is_remote, staged_copy

from .values import quoted

SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """The manifest, the shard and the archive of one export command."""

    manifest: ManifestSource
    shard: Shard | None
    #: The archive directory; for object storage, where pieces are staged in the work dir.
    out_dir: Path
    #: For `--out s3://...`: the bucket, prefix and upload options, every one checked.
    remote: RemoteSettings | None

    @property
    def out_named(self) -> str:
        """`out_dir` as a message names it: "the archive DIR", or the staged copy of the s3:// archive."""
        if self.remote is None:
            return f"the archive {self.out_dir}"
        return staged_copy(self.out_dir, self.remote.url)


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    """The `Target` of `exporter export` (with or without --dry-run); UsageError for a bad combination.

    The object-storage options are refused with a directory --out, and
    checked (Object Lock, retention, encryption) with an s3:// one.
    """
    shard = resolve_shard(args.shard, environ)
    manifest = ManifestSource(path=None if args.manifest == "-" else Path(args.manifest), format=args.format)
    if is_remote(args.out):
        remote = remote_options.settings_from(args, args.out, shard, environ)
        return Target(manifest=manifest, shard=shard, out_dir=remote.work_dir / "stage", remote=remote)
    remote_options.check_unused(args)
    return Target(manifest=manifest, shard=shard, out_dir=_out_dir(args.out, shard), remote=None)


def resolve_shard(shard: Shard | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard to run: K given, or taken from $JOB_COMPLETION_INDEX for `INDEX/N`."""
    if shard is None or shard.index >= 0:
        return shard
    raw = environ.get(SHARD_INDEX_ENV)
    match = None if raw is None else re.fullmatch(r"\s*([0-9]{1,9})\s*", raw, re.ASCII)
    if match is None:
        given = "is not set" if raw is None else f"is {quoted(raw)}, not a number in 0-9 digits"
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
