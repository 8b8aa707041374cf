"""Everything a run needs to know, built once by `cli/` and passed down.

Frozen, keyword-only dataclasses: no module reads the environment or a global,
so a test builds exactly the configuration it means and nothing leaks between
runs. Units are in the field names (`_s` seconds, `_per_s` per second,
`_bytes` bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import __version__

ManifestFormat = Literal["auto", "text", "csv", "ndjson"]

DEFAULT_MAX_FILE_BYTES = 1 << 30
DEFAULT_COMPRESS_BATCH_BYTES = 1 << 20
#: --compress-threads: more would only cost memory (each deflating thread holds a piece and its state).
MAX_COMPRESS_THREADS = 64
#: Far above any recording (the largest are a few MB), low enough that a runaway body cannot eat RAM.
DEFAULT_MAX_RESPONSE_BYTES = 256 << 20
Compression = Literal["none", "gzip", "zstd"]
ProgressMode = Literal["auto", "on", "off"]
LogFormat = Literal["text", "json"]

#: The eight response toggles of the API reference, by the short name `--include`
#: takes, mapped to the query parameter the exporter assumes (docs/api.md: the reference gives no names).
INCLUDE_PARAMS: dict[str, str] = {
    "photos": "includePhotos",
    "crm-opportunities": "includeCrmOpportunities",
    "media-opportunities": "includeMediaOpportunities",
    "evaluation": "includeEvaluation",
    "multimedia-events": "includeMultimediaEvents",
    "mobile-events": "includeMobileEvents",
    "followups": "includeFollowups",
    "crm-accounts": "includeCrmAccounts",
}


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential whose repr and str never show it, so it cannot leak into a log line."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The credential itself, for the one place that puts it in a header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, kw_only=True, slots=True)
class ManifestSource:
    """Where the ids come from: a file (plain, `.gz` or `.zst`) or standard input."""

    path: Path | None
    format: ManifestFormat = "auto"

    @property
    def display(self) -> str:
        """The name to show in messages: the path, or `-` for standard input."""
        return "-" if self.path is None else str(self.path)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProxySettings:
    """An HTTP proxy to tunnel through (CONNECT), from --proxy or $HTTPS_PROXY."""

    host: str
    port: int
    #: `user:password` for Basic `Proxy-Authorization`, sent on the CONNECT only.
    credentials: Secret | None = None
    #: Where the proxy came from (`--proxy`, `HTTPS_PROXY`, ...), for the log line.
    source: str = "--proxy"
    #: Where the credentials came from (the proxy URL's variable, `--proxy-auth-file PATH`).
    credentials_from: str | None = None

    @property
    def authority(self) -> str:
        """`host:port`, an IPv6 address in brackets; never the credentials."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy as a URL without credentials: what summary.json records."""
        return f"http://{self.authority}"


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsSettings:
    """Whom to trust and who we are on https connections (PEM files, checked by `tls.py`)."""

    #: A CA bundle trusted in addition to the system store (instead of it with `ca_cert_only`).
    ca_cert: Path | None = None
    ca_cert_only: bool = False
    #: A client certificate (and its key, unless the certificate file holds it) for mutual TLS.
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpSettings:
    """How to reach the API: one origin, one token, one per-request timeout."""

    base_url: str
    token: Secret
    #: The file the token came from: read again on a 401/403 and on SIGHUP (`credentials.py`).
    token_file: Path | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 15.0
    #: Extra query parameters sent with every request, in order, already validated.
    query: tuple[tuple[str, str], ...] = ()
    user_agent: str = f"exporter/{__version__}"
    #: A larger body (after decompression) fails its id: see DEFAULT_MAX_RESPONSE_BYTES.
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: An HTTP proxy to tunnel through (CONNECT), chosen by `proxy_env.choose_proxy`.
    proxy: ProxySettings | None = None
    tls: TlsSettings = TlsSettings()


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrySettings:
    """When to try an id again and how long to wait first (exponential, full jitter)."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    #: A Retry-After longer than this is not waited for: the id fails as rate_limited.
    retry_after_max_s: float = 900.0
    #: The API down (refused, timing out, 5xx for everyone) for longer than this ends the run (exit 6).
    max_outage_s: float = 600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitSettings:
    """How hard the exporter may push the API."""

    concurrency: int = 8
    #: Requests per second across all workers; 0 means no client-side limit.
    rate_per_s: float = 10.0
    #: Requests that may start back to back after an idle spell.
    burst: int = 10
    #: The rate never drops below this, however many 429s arrive.
    min_rate_per_s: float = 0.2


@dataclass(frozen=True, kw_only=True, slots=True)
class Budgets:
    """Limits a run sets itself (a nightly window, a daily quota); reaching one ends it with exit 5."""

    #: Seconds from the start after which no request starts and the run ends; None: no limit.
    max_duration_s: float | None = None
    #: Requests sent at most, retries included; None: no limit.
    max_requests: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveSettings:
    """Where and how records are stored."""

    out_dir: Path
    #: Close a records file once it holds this many bytes (as stored); None: never.
    #: A resumed run re-reads the open file once to continue its sha256, so this
    #: also bounds what a resume reads.
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
    compress: Compression = "none"
    #: Codec level; None takes the codec's default (gzip 6, zstd 3).
    compress_level: int | None = None
    #: With --compress, each commit is its own gzip member or zstd frame, and small
    #: frames compress poorly (zstd-3 on ~9 KB records: 2.6x with one record a frame,
    #: 10x with 1 MiB frames). So a compressed commit gathers this many bytes of
    #: records (--compress-batch), or what 5 s brought, or 4,096 records
    #: (`batches.commit_policy`); a kill -9 costs at most that batch and the one
    #: being written fetched again, never a duplicate.
    compressed_commit_bytes: int = DEFAULT_COMPRESS_BATCH_BYTES
    #: Threads that deflate a large gzip commit in pieces (`framing.GZIP_MIN_PIECE_BYTES`);
    #: None: one per CPU this process may run on; 1: the writer thread alone, in one piece.
    compress_threads: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CommitPolicy:
    """When the writer takes the workers' results as one group commit (`batches.CommitQueue`)."""

    #: A batch never holds more than this many results or bytes (but always one): workers
    #: wait meanwhile, which bounds memory and what a crash can cost. A full batch goes at
    #: once, so workers wait only while the writer is busy with the previous commit.
    max_items: int
    max_bytes: int
    #: A batch this large goes at once...
    enough_items: int
    enough_bytes: int
    #: ...a smaller one waits for company until this long after the previous commit
    #: began, so a slow trickle of records costs a few fsyncs a second, not one each.
    wait_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Shard:
    """Slice K of N (0-based K) of the id space, by a stable hash of the id."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsSettings:
    """Prometheus metrics of the run (`metrics.py`): a textfile and/or a push at the end."""

    #: Rewritten atomically every `interval_s` and at the end; None: no file.
    file: Path | None = None
    #: A Pushgateway's base URL, pushed to once at the end; None: no push.
    push_url: str | None = None
    #: (name, value) pairs put on every sample (--metrics-label), already checked.
    labels: tuple[tuple[str, str], ...] = ()
    interval_s: float = 15.0
    push_timeout_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.file is not None or self.push_url is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteSettings:
    """`--out s3://BUCKET/PREFIX`: where the archive goes, how it is staged, locked and encrypted.

    The local archive is staged in `work_dir` and shipped in sealed pieces
    (`exporter/remote/`); credentials, region and endpoint come from the AWS
    chain itself (environment, config files, web identity, instance metadata).
    """

    bucket: str
    #: Keys are PREFIX/NAME ("" for the bucket's top level).
    prefix: str
    #: Where the pieces are staged before they are shipped (created 0700).
    work_dir: Path
    #: Seal the open records file and ship it after this long, or this many bytes, whichever first.
    upload_every_s: float = 300.0
    upload_bytes: int = 64 << 20
    #: Files up to this size go in one PutObject; larger ones in parts of at least `part_bytes`.
    multipart_threshold_bytes: int = 16 << 20
    part_bytes: int = 8 << 20
    #: Object Lock: None (the bucket's default retention, if any), "GOVERNANCE" or "COMPLIANCE".
    object_lock: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    #: Retention: this many days from each object's upload, or until this instant (ISO 8601, UTC).
    retain_days: int | None = None
    retain_until: str | None = None
    legal_hold: bool = False
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    #: Tries per S3 request for resets, 5xx, SlowDown, expired credentials, BadDigest.
    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 20.0
    #: Sealed pieces waiting to be shipped before commits wait for the store (bounds the work dir).
    max_pending_pieces: int = 4

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportConfig:
    """One `exporter export` run."""

    manifest: ManifestSource
    http: HttpSettings
    archive: ArchiveSettings
    retry: RetrySettings = RetrySettings()
    limits: LimitSettings = LimitSettings()
    budgets: Budgets = Budgets()
    #: Fetch ids again even when the archive holds them (starts a new generation).
    refetch: bool = False
    #: Also retry ids an earlier run found missing (404) or invalid.
    retry_failed: bool = False
    shard: Shard | None = None
    progress: ProgressMode = "auto"
    #: Seconds between progress lines (or JSON `progress` events) when there is no bar.
    progress_interval_s: float = 30.0
    #: `json`: stderr carries one JSON object a line (`logs.py`), with per-id `failed` events.
    log_format: LogFormat = "text"
    quiet: bool = False
    metrics: MetricsSettings = MetricsSettings()
    #: `--out s3://...`: the archive lives in object storage, staged in `archive.out_dir`.
    remote: RemoteSettings | None = None
