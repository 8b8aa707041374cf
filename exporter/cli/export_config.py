"""An `ExportConfig` from the export command's options and the environment, every value checked first.

The one place that reads the token ($EXPORTER_TOKEN or --token-file) and the
proxy variables (https_proxy/HTTPS_PROXY, no_proxy/NO_PROXY); the archive's
place is `target.py`'s. Each check that can fail does so here, before a file
is written or a request sent. The transport and the metrics are imported in
the functions that use them, so that the offline commands never load them.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.config import (
    INCLUDE_PARAMS,
    ArchiveSettings,
    Budgets,
    ExportConfig,
    HttpSettings,
    LimitSettings,
    MetricsSettings,
    ProgressMode,
    RetrySettings,
    Secret,
    TlsSettings,
)
from exporter.errors import UsageError

from .target import Target, resolve_target

if TYPE_CHECKING:
    from exporter.transport.proxy_env import ProxyChoice

TOKEN_ENV = "EXPORTER_TOKEN"  # noqa: S105 - the variable's name, not a token
#: As curl reads them: the lower-case name first.
HTTPS_PROXY_ENV = ("https_proxy", "HTTPS_PROXY")
NO_PROXY_ENV = ("no_proxy", "NO_PROXY")

log = logging.getLogger("exporter")


def read_token(token_file: Path | None, environ: Mapping[str, str]) -> Secret:
    """The token from --token-file or $EXPORTER_TOKEN; UsageError saying how to give it."""
    from exporter.transport.credentials import check_token, read_token_file, warn_if_shared

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


def proxy_from(
    args: argparse.Namespace, environ: Mapping[str, str], base_url: str, *, read_secrets: bool = True
) -> ProxyChoice:
    """--proxy, else $HTTPS_PROXY minus $NO_PROXY (`proxy_env`), with --proxy-auth-file's credentials.

    `read_secrets=False` (a dry run, which reads no secret) checks the choice and leaves the file unread.
    """
    from exporter.transport.credentials import read_proxy_auth_file, warn_if_shared
    from exporter.transport.proxy_env import ProxyChoice, choose_proxy, with_credentials

    if args.proxy_auth_file is not None and args.proxy is not None and args.proxy.strip().lower() == "none":
        raise UsageError("--proxy-auth-file is for a proxy, but --proxy none says not to use one")
    choice = choose_proxy(
        base_url=base_url,
        option=args.proxy,
        environment=_first_set(environ, HTTPS_PROXY_ENV),
        no_proxy=_first_set(environ, NO_PROXY_ENV),
    )
    if args.proxy_auth_file is None or not read_secrets:
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
    from exporter.transport import tls
    from exporter.transport.credentials import check_pem_file, warn_if_shared

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
    from exporter.transport.client import check_base_url

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
    target = resolve_target(args, environ)
    _check_compress_level(args.compress, args.compress_level)
    archive = _archive_settings(args, target)
    progress: ProgressMode = "auto" if args.progress is None else ("on" if args.progress else "off")
    return ExportConfig(
        metrics=metrics_from(args, target),
        progress_interval_s=args.progress_interval,
        log_format=args.log_format,
        manifest=target.manifest,
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
        remote=target.remote,
        shard=target.shard,
        retry=RetrySettings(max_attempts=args.max_attempts, max_outage_s=args.max_outage),
        limits=LimitSettings(concurrency=args.concurrency, rate_per_s=args.rate, burst=burst),
        budgets=Budgets(max_duration_s=args.max_duration, max_requests=args.max_requests),
        refetch=args.refetch,
        retry_failed=args.retry_failed,
        progress=progress,
        quiet=args.quiet,
    )


def _archive_settings(args: argparse.Namespace, target: Target) -> ArchiveSettings:
    """The records files: in --out, or (s3://) staged in --work-dir and sealed by --upload-bytes."""
    limit = args.max_file_bytes
    if target.remote is not None:
        limit = target.remote.upload_bytes if limit is None else min(limit, target.remote.upload_bytes)
    return ArchiveSettings(
        out_dir=target.out_dir,
        max_file_bytes=limit,
        compress=args.compress,
        compress_level=args.compress_level,
        compressed_commit_bytes=args.compress_batch,
        compress_threads=args.compress_threads,
    )


_COMPRESS_LEVELS = {"gzip": (0, 9), "zstd": (-(2**17), 22)}


def _check_compress_level(codec: str, level: int | None) -> None:
    """A --compress-level the codec takes (zstd's negative levels are its fastest)."""
    if level is None or codec not in _COMPRESS_LEVELS:
        return
    low, high = _COMPRESS_LEVELS[codec]
    if not low <= level <= high:
        raise UsageError(f"--compress-level {level} is not a {codec} level: {low} to {high}")


def metrics_from(args: argparse.Namespace, target: Target) -> MetricsSettings:
    """--metrics-file, --metrics-label and --metrics-push, checked before anything is written.

    A file in no directory, or in the archive (`target.out_dir`, after
    `{shard}`; for s3:// the stage in the work dir), is a usage error now.
    """
    from exporter import metrics

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
        if in_directory(path, target.out_dir):
            raise UsageError(
                f"--metrics-file {path} is inside {target.out_named}, whose files only the exporter "
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
