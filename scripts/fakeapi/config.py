"""The fake API's settings: a frozen ServerConfig, its JSON form, and the kinds of faults."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, get_args

FaultKind = Literal[
    "500",
    "502",
    "503",
    "504",
    "429",
    "429date",
    "429bare",
    "reset",
    "truncate",
    "html",
    "badjson",
    "empty",
    "wrongid",
    "redirect",
    "slow",
    "nodata",
]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

ResetStyle = Literal["delta", "epoch"]
RESET_STYLES: Final[tuple[ResetStyle, ...]] = get_args(ResetStyle)
OutageMode = Literal["503", "refuse"]
OUTAGE_MODES: Final[tuple[OutageMode, ...]] = get_args(OutageMode)


API_PATH: Final = "/v1/core/recordings/"

#: Query toggle -> the record field it adds. The reference names the toggles only by
#: description; these camelCase names are the ones the exporter assumes (see docs/api.md).
TOGGLES: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "includePhotos": "images",
        "includeCrmOpportunities": "crmOpportunities",
        "includeMediaOpportunities": "mediaOpportunities",
        "includeEvaluation": "evaluation",
        "includeMultimediaEvents": "multimediaEvents",
        "includeMobileEvents": "mobileEvents",
        "includeFollowups": "followups",
        "includeCrmAccounts": "crmCustomer",
    }
)

#: How many request timestamps (and as many (time, status) responses), distinct query strings
#: and unknown paths /_stats keeps.
REQUEST_TIMES_LIMIT: Final = 100_000
QUERIES_LIMIT: Final = 1_000
UNKNOWN_PATHS_LIMIT: Final = 1_000

#: X-RateLimit-Limit sent with a 429 *fault* when no rate limiter is configured.
NOMINAL_RATE_LIMIT: Final = 60
#: The longest outage (and delay before one) a config may ask for: a day.
MAX_OUTAGE_S: Final = 86_400.0
#: The largest record_bytes: a body is built in memory for every request.
MAX_RECORD_BYTES: Final = 256_000_000
#: The name of the quota policy in the IETF RateLimit-Policy and RateLimit fields.
QUOTA_POLICY: Final = "default"


def parse_fault_kind(text: str) -> FaultKind:
    """Turn user text into a FaultKind, naming the valid kinds when it is not one."""
    for kind in FAULT_KINDS:
        if kind == text:
            return kind
    raise ValueError(f"unknown fault kind {text!r}; choose from {', '.join(FAULT_KINDS)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything that shapes the fake API's answers; replaced whole, never mutated.

    A handler reads the config once per request, so a POST /_config mid-request never
    gives one response a mix of old and new settings.
    """

    token: str = "test-token"
    """The bearer token accepted; anything else (but previous_token) gets 401."""
    previous_token: str | None = None
    """Also accepted while a rotation overlaps (set it to the old token, then back to None)."""
    path_prefix: str = ""
    """Base path before /v1/..., '' or like '/api' (leading slash, no trailing slash)."""
    seed: int = 0
    """Seeds record contents, which ids are large, random faults and jitter."""
    revoke_after: int | None = None
    """After this many API requests in total (since the last reset) every one gets 403."""
    large_fraction: float = 0.0
    """Fraction (0..1) of ids, chosen by hash, whose transcript is large_bytes long."""
    large_bytes: int = 3_000_000
    """Transcript length in characters (about bytes: mostly ASCII) of a large record."""
    record_bytes: int | None = None
    """Serve every ordinary record as a body of exactly this many bytes (at least the ~200 of
    a compact record: id, date, duration, title, a transcript filling the rest), instead of
    the realistic mix (1-20 KB, and large_fraction of large_bytes); None: the mix."""
    latency_ms: float = 0.0
    """Delay added to every API response, in milliseconds."""
    jitter_ms: float = 0.0
    """Extra delay, uniform in [0, jitter_ms] milliseconds, added to latency_ms."""
    fault_rate: float = 0.0
    """Probability (0..1) that a request gets a random fault from fault_kinds."""
    fault_kinds: tuple[FaultKind, ...] = ("500", "502", "503", "429", "reset")
    """The kinds fault_rate draws from, uniformly."""
    fault_attempts: int | None = None
    """Random faults only on each id's first this many requests (None: on every request), as
    an API whose first tries fail and whose retries work."""
    fail_first: Mapping[str, tuple[FaultKind, int]] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """Id prefix -> (kind, k): the first k requests for each matching id get that fault.
    The longest matching prefix wins; after k requests the id is served normally."""
    retry_after_s: int = 1
    """Retry-After, in whole seconds, sent with 429 and 429date faults; 0 is allowed."""
    slow_s: float = 5.0
    """How long a 'slow' fault sleeps before answering, in seconds."""
    rate_limit_rps: float | None = None
    """Server-side token bucket refill rate in requests per second; None disables it."""
    rate_limit_burst: int | None = None
    """Token bucket capacity in requests; None means one second's worth, ceil(rps)."""
    quota_limit: int | None = None
    """Fixed-window quota: requests accepted per window; None disables it. Every API answer
    then announces it (X-RateLimit-* and the IETF RateLimit-Policy / RateLimit fields)."""
    quota_window_s: int = 10
    """The quota's window in whole seconds; windows are aligned to the server's start (or reset)."""
    quota_reset_style: ResetStyle = "delta"
    """X-RateLimit-Reset of the quota: "delta" (seconds until the window resets) or "epoch"
    (the Unix time it resets, as GitHub sends it)."""
    outage_s: float = 0.0
    """Length of an outage in seconds; 0 for none. Setting it (flag, POST /_config) schedules one."""
    outage_after_s: float | None = None
    """Start the outage this long after the first API request that follows the setting (or a
    reset); None starts it at once."""
    outage_mode: OutageMode = "503"
    """During an outage: "503" to every API request, or "refuse": the listening socket is
    closed, so connect() gets ECONNREFUSED, and open connections are closed."""

    def __post_init__(self) -> None:
        """Reject impossible settings early, with the fix in the message."""
        _check_prefix(self.path_prefix)
        _check_range("large_fraction", self.large_fraction, 0.0, 1.0)
        _check_range("fault_rate", self.fault_rate, 0.0, 1.0)
        for name in ("large_bytes", "latency_ms", "jitter_ms", "retry_after_s", "slow_s"):
            _check_range(name, getattr(self, name), 0.0, math.inf)
        if self.quota_limit is not None and self.quota_limit < 1:
            raise ValueError("quota_limit must be >= 1; use None to disable the quota")
        if self.quota_window_s < 1:
            raise ValueError(
                f"quota_window_s must be a whole number of seconds >= 1, got {self.quota_window_s}"
            )
        _check_choice("quota_reset_style", self.quota_reset_style, RESET_STYLES)
        _check_choice("outage_mode", self.outage_mode, OUTAGE_MODES)
        _check_range("outage_s", self.outage_s, 0.0, MAX_OUTAGE_S)
        if self.outage_after_s is not None:
            _check_range("outage_after_s", self.outage_after_s, 0.0, MAX_OUTAGE_S)
        if self.revoke_after is not None:
            _check_range("revoke_after", self.revoke_after, 0.0, math.inf)
        if self.record_bytes is not None:
            _check_range("record_bytes", self.record_bytes, 1.0, MAX_RECORD_BYTES)
        if self.fault_attempts is not None and self.fault_attempts < 1:
            raise ValueError("fault_attempts must be >= 1; use None to fault every request")
        if self.rate_limit_rps is not None and not self.rate_limit_rps > 0:
            raise ValueError("rate_limit_rps must be > 0; use None to disable the rate limit")
        if self.rate_limit_burst is not None and self.rate_limit_burst < 1:
            raise ValueError("rate_limit_burst must be >= 1 (or None for ceil(rps))")
        for kind in self.fault_kinds:
            parse_fault_kind(kind)
        for prefix, (kind, count) in self.fail_first.items():
            parse_fault_kind(kind)
            if count < 0:
                raise ValueError(f"fail_first[{prefix!r}] count must be >= 0, got {count}")
        # A read-only view, so the frozen config cannot be changed through this field.
        object.__setattr__(self, "fail_first", types.MappingProxyType(dict(self.fail_first)))

    @property
    def effective_burst(self) -> int:
        """The token bucket capacity actually used."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1, math.ceil(self.rate_limit_rps or 1.0))


def _check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise a ValueError naming the field when value is outside [low, high]."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise a ValueError naming the field and the valid values when value is not one."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_prefix(prefix: str) -> None:
    """Insist on one spelling of the prefix so URL building never doubles a slash."""
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(
            f"path_prefix must be '' or start with '/' and not end with '/', got {prefix!r}; "
            "for example '/api'"
        )


def normalize_prefix(prefix: str) -> str:
    """Accept 'api', '/api/' or '/api' from a user and return '/api' ('' for '' or '/')."""
    stripped = prefix.strip("/")
    return f"/{stripped}" if stripped else ""


def _as_int(name: str, value: object) -> int:
    """Read a JSON integer, refusing bools (which Python counts as ints)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _as_float(name: str, value: object) -> float:
    """Read a JSON number as a float, refusing bools."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _as_str(name: str, value: object) -> str:
    """Read a JSON string."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _as_text(name: str, value: object) -> str:
    """Read a JSON string, or an integer as its digits (so outage_mode may be 503 or "503")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _as_str(name, value)


def as_kinds(name: str, value: object) -> tuple[FaultKind, ...]:
    """Read fault kinds from a JSON list or a comma-separated string."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list of fault kinds, got {value!r}")
    return tuple(parse_fault_kind(str(kind).strip()) for kind in value)


def _as_fail_first(name: str, value: object) -> dict[str, tuple[FaultKind, int]]:
    """Read {"prefix": ["kind", count]} from JSON."""
    if not isinstance(value, Mapping):
        raise ValueError(f'{name} must be an object like {{"flaky-": ["503", 2]}}, got {value!r}')
    rules: dict[str, tuple[FaultKind, int]] = {}
    for prefix, rule in value.items():
        if not isinstance(rule, list | tuple) or len(rule) != 2:
            raise ValueError(f'{name}[{prefix!r}] must be ["kind", count], got {rule!r}')
        rules[str(prefix)] = (parse_fault_kind(str(rule[0])), _as_int(name, rule[1]))
    return rules


def _optional(read: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    """Let a field reader also accept JSON null, for fields where None means 'off'."""

    def read_optional(name: str, value: object) -> Any:
        return None if value is None else read(name, value)

    return read_optional


def _as_prefix(name: str, value: object) -> str:
    """Read a path prefix, forgiving a missing leading or an extra trailing slash."""
    return normalize_prefix(_as_str(name, value))


_FIELD_READERS: Final[Mapping[str, Callable[[str, object], Any]]] = {
    "token": _as_str,
    "previous_token": _optional(_as_str),
    "path_prefix": _as_prefix,
    "seed": _as_int,
    "revoke_after": _optional(_as_int),
    "large_fraction": _as_float,
    "large_bytes": _as_int,
    "record_bytes": _optional(_as_int),
    "latency_ms": _as_float,
    "jitter_ms": _as_float,
    "fault_rate": _as_float,
    "fault_kinds": as_kinds,
    "fault_attempts": _optional(_as_int),
    "fail_first": _as_fail_first,
    "retry_after_s": _as_int,
    "slow_s": _as_float,
    "rate_limit_rps": _optional(_as_float),
    "rate_limit_burst": _optional(_as_int),
    "quota_limit": _optional(_as_int),
    "quota_window_s": _as_int,
    "quota_reset_style": _as_str,
    "outage_s": _as_float,
    "outage_after_s": _optional(_as_float),
    "outage_mode": _as_text,
}

#: Fields whose setting schedules the outage anew (from now, or from the next API request).
OUTAGE_FIELDS: Final = frozenset({"outage_s", "outage_after_s"})


def merge_config(base: ServerConfig, changes: Mapping[str, object]) -> ServerConfig:
    """Return base with changes applied; changes are JSON-shaped (lists, plain numbers).

    This is what POST /_config and FakeServerHandle.configure() do, so both validate the
    same way. Raises ValueError naming the bad field.
    """
    unknown = sorted(set(changes) - set(_FIELD_READERS))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(_FIELD_READERS)}")
    read = {name: _FIELD_READERS[name](name, value) for name, value in changes.items()}
    return dataclasses.replace(base, **read)


def config_to_json(config: ServerConfig) -> dict[str, Any]:
    """The config as JSON-ready data, in the shape merge_config() accepts back."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "fail_first":
            value = {prefix: [kind, count] for prefix, (kind, count) in value.items()}
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out
