"""A fake recordings API: the server the demo, the test-suite and the benchmarks talk to.

It serves the one endpoint the exporter reads, ``GET {base}/v1/core/recordings/{id}``, over
real HTTP on loopback, and misbehaves on purpose, deterministically when asked, so every
failure the exporter must survive can be produced on demand.

Layout, pure core first and the aiohttp shell last:

    ServerConfig                frozen settings; merge_config() applies a JSON patch to one
    make_record / success_body  deterministic records: a function of (id, seed) and toggles
    edge_record / edge_body     the values an archive must keep exactly (big ints, -0.0, U+2028)
    choose_fault                which fault, if any, a request gets (a pure function)
    TokenBucket                 the server-side rate limit (arithmetic on an injectable clock)
    FixedWindowQuota            a quota per fixed window, announced by quota_headers (pure)
    OutageSchedule              when the API is down (pure)
    Stats                       what the tests assert on (GET /_stats)
    build_app / running_server  the aiohttp app; an in-process server on its own thread
    main                        the command line

Ids are one percent-encoded path segment: ``a%2Fb`` is the id ``a/b``. Prefixes pick
behaviour, so a test chooses it by naming the id:

    missing-*   404 with a JSON error body
    edge-*      edge_body(id): every value an archive must keep exactly
    deep-*      data nested 300 levels (deeper than orjson can write)
    pretty-*    a normal record, pretty-printed over many lines

Fault kinds (``fail_first`` for "each flaky-* id fails twice, then works"; ``fault_rate``
for load tests, with ``fault_attempts`` to fault only each id's first requests): 500 502 503
504; 429 (Retry-After seconds + X-RateLimit-*); 429date
(Retry-After as an HTTP date); reset (half the body, then a TCP RST); truncate (half the
body, then a clean close, short of Content-Length); html (200 text/html error page);
badjson (200, invalid JSON); empty (200, no body); wrongid (200, data.id is another id);
redirect (302 to another origin, http://127.0.0.2:PORT/...); slow (sleep slow_s first);
nodata (200, JSON without "data"); 429bare (Retry-After seconds only, no X-RateLimit-*: a
flaky gateway). A kind listed twice in fault_kinds is drawn twice as often.

Limits real APIs have, each optional: a token bucket (rate_limit_rps, rate_limit_burst: 429
with Retry-After and X-RateLimit-*); a fixed-window quota (quota_limit per quota_window_s,
windows aligned to the start or the last reset) that the API's own answers (200, 404, its 429s)
announce with X-RateLimit-Limit/-Remaining/-Reset (reset as delta seconds or a Unix time,
quota_reset_style) and the IETF draft's RateLimit-Policy and RateLimit fields, and refuses with
429 and Retry-After until the window resets; and an outage (outage_s, from now or
outage_after_s after the next API request) during which every API request gets 503 or, in
outage_mode "refuse", connections are refused (the listening socket is closed and reopened on
the same port; open connections are closed).

Control endpoints, no auth, at the root whatever the path prefix: ``GET /_stats``,
``GET /_stats/responses?since=N`` (the (clock, status) timeline, for polling), ``POST /_reset``
(clears stats, fail_first counts, the rate limiter and the quota, schedules the outage anew;
keeps config), ``GET /_config`` and ``POST /_config`` (a JSON object merged into the current
config).

Run ``python scripts/fake_api.py --help`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import itertools
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import types
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args

import orjson
from aiohttp import web

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

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

_T = TypeVar("_T")

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


def _as_kinds(name: str, value: object) -> tuple[FaultKind, ...]:
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
    "fault_kinds": _as_kinds,
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


# ---------------------------------------------------------------------------------------------
# Records (pure, deterministic in (id, seed))
# ---------------------------------------------------------------------------------------------

_FIRST_NAMES: Final = (
    "Ana", "José", "Zoë", "Liam", "Priya", "Mateo", "Chen", "Olivia", "Kwame", "Sofía",
    "Noah", "Aisha", "Lukas", "Mei", "Omar", "Grace", "Tomás", "Ingrid", "Ravi", "Chloé",
)  # fmt: skip
_LAST_NAMES: Final = (
    "García", "Smith", "Nguyen", "Okafor", "Müller", "Patel", "Kowalski", "O'Brien",
    "Johansson", "Rossi", "Kim", "Dubois", "Haddad", "Silva", "Tanaka", "Brown",
)  # fmt: skip
_ORGS: Final = (
    "Acme Roofing", "Brightside Solar", "Cascade Windows & Doors", "Summit HVAC",
    "Evergreen Landscaping", "Keystone Siding", "Bluewater Pools", "Northstar Insulation",
)  # fmt: skip
_CITIES: Final = (
    ("Austin", "TX", "78701"), ("Denver", "CO", "80202"), ("Tampa", "FL", "33602"),
    ("Phoenix", "AZ", "85004"), ("Columbus", "OH", "43215"), ("Raleigh", "NC", "27601"),
)  # fmt: skip
_WORDS: Final = (
    "roof", "estimate", "warranty", "shingles", "financing", "install", "inspection",
    "gutters", "quote", "monthly", "payment", "solar", "panels", "energy", "bill", "savings",
    "windows", "siding", "schedule", "Tuesday", "morning", "crew", "permit", "square", "feet",
    "price", "discount", "today", "honestly", "okay", "yeah", "so", "um", "right", "the", "a",
    "we", "you", "your", "our", "is", "that", "this", "it", "and", "but", "for", "with", "on",
    "house", "attic", "leak", "storm", "damage", "insurance", "claim", "adjuster", "deductible",
    "contract", "signature", "deposit", "neighbor", "referral", "review", "company", "years",
    "lifetime", "labor", "materials", "color", "sample", "brochure", "follow", "up", "call",
    "think", "about", "spouse", "decide", "week", "budget", "cost", "expensive", "value",
    "café", "naïve", "señor", "façade", "don’t", "it’s", "we’re", "—", "…", "25-year", "$9,800",
)  # fmt: skip
_TRANSCRIPTION_STATUSES: Final = (
    "COMPLETE", "COMPLETE", "COMPLETE", "SECONDARY_TRANSCRIPTION_COMPLETE", "TRANSCRIBING",
    "UPLOADED", "ERROR",
)  # fmt: skip
_PROCESSING_STATUSES: Final = ("complete", "complete", "complete", "in-progress", "error")
_STAGES: Final = ("done", "done", "processing", "uploading")
_CONVERSATION_TYPES: Final = ("in-person", "phone", "virtual", "door-knock")
_LANGUAGES: Final = ("en", "en", "en", "es", "fr")
_OUTCOMES: Final = ("CLOSED", "NOT_CLOSED")
_CEFR: Final = ("A2", "B1", "B2", "C1", "C2")
_TAG_TYPES: Final = ("objection", "pricing", "close-attempt", "rapport", "next-steps")
_OSES: Final = (("ios", "17.4.1", "iPhone15,2"), ("android", "14", "Pixel 8"), ("web", "", "web"))

_EPOCH_2023: Final = 1_672_531_200
_TWO_YEARS_S: Final = 2 * 365 * 24 * 3600
_MIN_TRANSCRIPT: Final = 512
_MAX_TRANSCRIPT: Final = 16_384


def _iso(epoch_ms: int) -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as the API writes dates."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _hex(rng: random.Random, digits: int = 20) -> str:
    """A random lowercase hex id, the shape of the API's document ids."""
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _phrase(rng: random.Random, low: int, high: int) -> str:
    """A few words, for titles, tag texts and notes."""
    return " ".join(rng.choices(_WORDS, k=rng.randint(low, high)))


def _unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts: stable across runs and processes.

    Used where the same inputs must give the same answer however requests interleave
    (which ids are large, which attempt gets a random fault).
    """
    text = "\x1f".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@functools.cache
def _transcript_corpus() -> tuple[str, tuple[int, ...]]:
    """About 64 KB of speaker turns, built once, and the offsets where turns start.

    Transcripts are slices of this (tiled), so a record costs a slice, not a word loop;
    that keeps the server at thousands of requests per second.
    """
    rng = random.Random(20240115)
    turns: list[str] = []
    starts: list[int] = []
    length = 0
    while length < 65_536:
        speaker = "Rep" if len(turns) % 2 == 0 else "Customer"
        turn = f"{speaker}: {_phrase(rng, 4, 40).capitalize()}.\n"
        starts.append(length)
        turns.append(turn)
        length += len(turn)
    return "".join(turns), tuple(starts)


@functools.lru_cache(maxsize=4)
def _tiled_corpus(copies: int) -> str:
    """The corpus repeated, so multi-megabyte transcripts are one slice too."""
    return _transcript_corpus()[0] * copies


def _transcript(rng: random.Random, length: int) -> str:
    """A transcript-like text of exactly length characters, starting at a speaker turn."""
    corpus, starts = _transcript_corpus()
    start = rng.choice(starts)
    copies = 1 + (start + length) // len(corpus) + 1
    return _tiled_corpus(copies)[start : start + length]


def is_large(recording_id: str, config: ServerConfig) -> bool:
    """Whether this id gets a large_bytes transcript (a stable fraction of ids)."""
    return _unit_hash(config.seed, "large", recording_id) < config.large_fraction


def _transcript_length(rng: random.Random, large: bool, large_bytes: int) -> int:
    """Log-uniform in 0.5-16 KB, so most bodies land in 1-20 KB; or large_bytes."""
    if large:
        return large_bytes
    low, high = math.log(_MIN_TRANSCRIPT), math.log(_MAX_TRANSCRIPT)
    return int(math.exp(rng.uniform(low, high)))


def sized_body(recording_id: str, *, seed: int, body_bytes: int) -> bytes:
    """A compact record's body of exactly body_bytes bytes, or the smallest one (empty transcript).

    For measuring what record size does (compression ratios, per-record costs) with
    bodies the exporter accepts; its transcript is a slice of the same corpus.
    """
    rng = random.Random(f"{seed}\x1f{recording_id}\x1fsized")
    created_ms = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000 + rng.randrange(1000)
    record: dict[str, Any] = {
        "id": recording_id,
        "dateCreated": _iso(created_ms),
        "durationInMilliseconds": rng.randint(30_000, 5_400_000),
        "title": f"{_phrase(rng, 2, 5).title()} - {rng.choice(_CITIES)[0]}",
        "redactedTranscript": "",
    }
    envelope = {"data": record, "cursor": None, "pageSize": 1, "limit": 1}
    body = orjson.dumps(envelope)
    state = rng.getstate()
    length = body_bytes - len(body)
    # Newlines and non-ASCII letters take more than one byte each: shorten until it fits,
    # then pad with spaces to the exact size.
    while length > 0:
        rng.setstate(state)
        record["redactedTranscript"] = _transcript(rng, length)
        body = orjson.dumps(envelope)
        if len(body) <= body_bytes:
            record["redactedTranscript"] += " " * (body_bytes - len(body))
            return orjson.dumps(envelope)
        length -= len(body) - body_bytes
    return body


def make_record(
    recording_id: str,
    *,
    seed: int = 0,
    large: bool = False,
    large_bytes: int = 3_000_000,
    include: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The recording served for recording_id: the same dict for the same arguments.

    include holds record field names from TOGGLES' values (e.g. "images"); the other fields
    do not depend on it, so a toggle only ever adds (or, for crmCustomer, fills) a field.
    """
    rng = random.Random(f"{seed}\x1f{recording_id}")
    created_ms = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000 + rng.randrange(1000)
    duration_ms = rng.randint(30_000, 5_400_000)
    org_id, team_id, user_id = _hex(rng), _hex(rng), _hex(rng)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    os_name, os_version, device = rng.choice(_OSES)
    chunks = max(1, duration_ms // 300_000)
    rep_ms = int(duration_ms * rng.uniform(0.3, 0.7))
    record: dict[str, Any] = {
        "id": recording_id,
        "dateCreated": _iso(created_ms),
        "deleted": False,
        "transcriptionStatus": rng.choice(_TRANSCRIPTION_STATUSES),
        "processingStatus": rng.choice(_PROCESSING_STATUSES),
        "processingStage": rng.choice(_STAGES),
        "processingErrors": rng.sample(("bookmarking-failed", "summary-failed"), rng.randint(0, 2)),
        "recordErrors": [] if rng.random() < 0.8 else ["paused-early"],
        "processingError": None,
        "rawAudioPath": f"orgs/{org_id}/recordings/{_hex(rng, 12)}/raw.m4a",
        "processedAudioPath": f"orgs/{org_id}/recordings/{_hex(rng, 12)}/processed.mp3",
        "lastProcessedAudio": _iso(created_ms + duration_ms + 60_000),
        "organizationId": org_id,
        "teamId": team_id,
        "userId": user_id,
        "locked": False,
        "terminatedUngraciously": rng.random() < 0.02,
        "originalDeviceId": _hex(rng, 16),
        "codeVersion": f"4.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        "organizationName": rng.choice(_ORGS),
        "repFirstName": first,
        "repLastName": last,
        "speakerMap": {"0": "rep", "1": "customer"},
        "redactedTranscript": _transcript(rng, _transcript_length(rng, large, large_bytes)),
        "confidence": round(rng.uniform(0.7, 0.99), 4),
        "error": None,
        "jumpToTags": [_jump_to_tag(rng, duration_ms) for _ in range(rng.randint(0, 5))],
        "jumpToTagsWordsOnly": [_phrase(rng, 1, 3) for _ in range(rng.randint(0, 4))],
        "lastUpdatedJumpToTags": _iso(created_ms + duration_ms + 120_000),
        "result": rng.choice(("closed", "not closed", "follow-up")),
        "title": f"{_phrase(rng, 2, 5).title()} - {rng.choice(_CITIES)[0]}",
        "notes": _phrase(rng, 0, 25),
        "durationInMilliseconds": duration_ms,
        "discoverable": rng.random() < 0.5,
        "isPrivate": rng.random() < 0.1,
        "detected_language": rng.choice(_LANGUAGES),
        "trendingScore": round(rng.uniform(0, 100), 3),
        "starCount": rng.randint(0, 12),
        "viewCount": rng.randint(0, 400),
        "uniqueViewCount": rng.randint(0, 60),
        "deletedDate": None,
        "conversationType": rng.choice(_CONVERSATION_TYPES),
        "debriefResponses": {},
        "debriefQuestions": [_debrief_question(rng, i) for i in range(rng.randint(0, 3))],
        "numberOfChunks": chunks,
        "numberOfProcessedChunks": chunks,
        "numberOfComments": rng.randint(0, 8),
        "unreadComments": {},
        "tags": {},
        "outcomeLabel": rng.choice(_OUTCOMES),
        "splitHistory": [],
        "lastSuccessfulSecondaryTranscription": {
            "_seconds": created_ms // 1000 + 900,
            "_nanoseconds": rng.randrange(1_000_000_000),
        },
        "latitude": round(rng.uniform(25.0, 48.0), 6),
        "longitude": round(rng.uniform(-122.0, -71.0), 6),
        "g": {"geohash": _hex(rng, 9), "geopoint": None},
        "conversationTime": duration_ms - rng.randint(0, 20_000),
        "repSpeakingTime": rep_ms,
        "customerSpeakingTime": duration_ms - rep_ms,
        "customerQuestionsCount": rng.randint(0, 40),
        "repQuestionsCount": rng.randint(0, 60),
        "exchangesCount": rng.randint(10, 300),
        "repWordCount": rep_ms // 400,
        "repWordsPerMinute": round(rng.uniform(110, 190), 2),
        "repSpeakerShare": round(rep_ms / duration_ms * 100, 2),
        "interactivityScore": round(rng.uniform(0, 10), 2),
        "repVocabularyLevel": rng.choice(_CEFR),
        "conversationSegmentDates": [
            {
                "dateStarted": _iso(created_ms),
                "dateEnded": _iso(created_ms + duration_ms),
                "conversationType": "in-person",
            }
        ],
        "extractedPrimaryContactPhoneNumber": None
        if rng.random() < 0.5
        else {
            "value": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
            "chunkId": _hex(rng, 12),
            "chunkNumber": rng.randint(0, chunks - 1),
            "startTimeInMilliseconds": rng.randint(0, duration_ms),
            "endTimeInMilliseconds": duration_ms,
            "confidence": round(rng.uniform(0.5, 1.0), 3),
        },
        "processedChunkNumbers": list(range(min(chunks, 40))),
        "audioDurationInMilliseconds": duration_ms,
        "isVideo": False,
        "source": {
            "sdkVersion": f"2.{rng.randint(0, 9)}.0",
            "bundleId": "com.example.recorder",
            "appVersion": f"4.{rng.randint(0, 30)}",
            "appName": "Recorder",
            "sdkType": "iOS" if os_name == "ios" else "Android",
        },
        "transcriptionLanguage": "English",
        "os": os_name,
        "osVersion": os_version,
        "deviceType": device,
        "summaryProcessingStatus": "not-started",
        "conversationQualityTag": "FULL_CONVERSATION",
        "betaFeatures": [],
        "allChunksUploaded": True,
        "recordingSettings": {"mobileChunkCreationMode": "minimized"},
        "crmCustomer": None,
        "seedRecordingId": None,
    }
    for field in sorted(include):
        builder = _TOGGLED_FIELDS.get(field)
        if builder is not None:
            record[field] = builder(random.Random(f"{seed}\x1f{recording_id}\x1f{field}"))
    return record


def _jump_to_tag(rng: random.Random, duration_ms: int) -> dict[str, Any]:
    """One bookmark inside a recording, with the nesting the reference shows."""
    start = rng.randrange(duration_ms)
    kind = rng.choice(_TAG_TYPES)
    return {
        "text": _phrase(rng, 2, 8),
        "timestampInMilliseconds": start,
        "endTimestampInMilliseconds": start + rng.randint(2_000, 60_000),
        "type": kind,
        "types": [kind],
        "preview": _phrase(rng, 6, 20),
        "bookmarkConfigId": _hex(rng),
        "advancedBookmarkConfirmed": rng.random() < 0.5,
        "classificationQuestions": [
            {"text": f"Did the rep {_phrase(rng, 2, 5)}?", "result": rng.random() < 0.5}
        ],
        "speakerTag": rng.choice(("0", "1")),
        "similarityScore": round(rng.random(), 4),
        "llmConfirmed": rng.random() < 0.7,
        "llmJustification": None,
    }


def _debrief_question(rng: random.Random, index: int) -> dict[str, Any]:
    """One post-call question, with its responseConfig and includeIf nesting."""
    return {
        "id": _hex(rng, 12),
        "prompt": f"{_phrase(rng, 3, 8).capitalize()}?",
        "responseType": rng.choice(("DATE_RESPONSE", "FREE_TEXT_RESPONSE", "SELECT_RESPONSE")),
        "responseConfig": {"includeTime": False, "required": rng.random() < 0.5},
        "sortValue": index,
        "includeIf": [],
        "onlyIncludeIfFlagged": False,
        "hideFromResults": False,
    }


def _image_group(rng: random.Random) -> dict[str, Any]:
    """A photo group, as in the reference's images and mediaOpportunities[].images."""
    path = f"https://img.example.com/{_hex(rng, 16)}/photo.jpg"
    return {
        "rawImages": [{"type": "web", "uri": path, "url": path}],
        "linkedImage": f"https://app.example.com/assets/Image/{rng.randint(10**9, 10**10)}",
        "timestamp": (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000,
    }


def _address(rng: random.Random) -> dict[str, str]:
    """A US address for CRM objects."""
    city, state, zip_code = rng.choice(_CITIES)
    street = f"{rng.randint(1, 9999)} {rng.choice(('Main', 'Oak', 'Elm', 'Pine'))} St"
    return {"street": street, "city": city, "state": state, "zip": zip_code, "country": "USA"}


def _crm_opportunities(rng: random.Random) -> list[dict[str, Any]]:
    """includeCrmOpportunities=true."""
    return [
        {
            "opportunityExternalId": f"opp_{rng.randint(10000, 99999)}",
            "accountId": f"acc_{rng.randint(10000, 99999)}",
            "accountName": rng.choice(_LAST_NAMES) + " Residence",
            "disposition": rng.choice(("Closed Won", "Closed Lost", "Open")),
            "closedAt": _iso((_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000),
            "name": _phrase(rng, 2, 5).title(),
            "amount": rng.randint(2_000, 80_000),
            "integrationName": "Salesforce",
            "integrationPlatform": "salesforce",
            "addresses": [_address(rng)],
        }
        for _ in range(rng.randint(1, 2))
    ]


def _media_opportunities(rng: random.Random) -> list[dict[str, Any]]:
    """includeMediaOpportunities=true."""
    return [
        {
            "externalId": f"media_{rng.randint(10000, 99999)}",
            "integrationName": "HubSpot",
            "integrationPlatform": "hubspot",
            "name": _phrase(rng, 2, 4).title(),
            "addresses": [_address(rng)],
            "images": [_image_group(rng)],
        }
    ]


def _evaluation(rng: random.Random) -> dict[str, Any]:
    """includeEvaluation=true."""
    earned = rng.randint(0, 100)
    return {
        "hasScorecard": True,
        "evaluatedNodes": [
            {
                "id": "node_001",
                "name": "Conversation Quality",
                "indexNumber": 1,
                "parentId": "root",
                "nodeType": "SECTION",
                "metadata": {"metricId": "metric_001", "metricType": "CONVERSATION_TIME"},
                "pointsPossible": 100,
                "pointsEarned": earned,
                "color": "GREEN" if earned >= 80 else "YELLOW" if earned >= 50 else "RED",
                "metricValue": rng.randint(0, 3600),
                "unit": "seconds",
                "unitAbbreviated": "sec",
            }
        ],
        "sectionWeights": [{"scorecardNodeId": "node_001", "weight": 25}],
        "evaluationQualified": True,
        "pointsPossible": 100,
        "pointsEarned": earned,
    }


def _multimedia_events(rng: random.Random) -> list[dict[str, Any]]:
    """includeMultimediaEvents=true."""
    start = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000
    return [
        {"storageUrl": f"{_hex(rng, 8)}/{_hex(rng, 8)}", "mimeType": "image/jpeg",
         "timestampInMilliseconds": start + i * 600_000}
        for i in range(rng.randint(1, 3))
    ]  # fmt: skip


def _mobile_events(rng: random.Random) -> list[dict[str, Any]]:
    """includeMobileEvents=true."""
    start = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000
    return [
        {
            "id": f"event_{rng.randint(10000, 99999)}",
            "event": {"name": "recorderStateChange", "value": value, "trigger": "buttonPress"},
            "dateCreatedString": _iso(start + i * 5000)[:19] + "Z",
            "timestampInMilliseconds": start + i * 5000,
            "durationInMilliseconds": 5000,
        }
        for i, value in enumerate(("start", "pause", "resume", "stop"))
    ]


def _followups(rng: random.Random) -> list[dict[str, Any]]:
    """includeFollowups=true."""
    return [
        {
            "followupId": _hex(rng),
            "followupType": rng.choice(("REHASH", "CROSS_SELL")),
            "score": rng.randint(1, 5),
            "followupAction": _phrase(rng, 4, 10),
            "context": [{"header": "MAIN_OBJECTION", "value": _phrase(rng, 3, 9)}],
            "metadata": [{}],
            "starred": False,
            "status": rng.choice(("TO_DO", "IN_PROGRESS", "COMPLETE")),
            "history": [],
        }
    ]


def _crm_customer(rng: random.Random) -> dict[str, Any]:
    """includeCrmAccounts=true fills crmCustomer, which is null otherwise."""
    name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
    return {
        "id": f"acc_{rng.randint(10000, 99999)}",
        "name": name,
        "customerType": "ACCOUNT",
        "externalId": f"ext_{rng.randint(10000, 99999)}",
        "lastActivityAt": _iso((_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000),
        "matchingSource": rng.choice(("DIRECT", "FUZZY")),
        "emailAddress": f"customer{rng.randint(1, 9999)}@example.com",
        "phoneNumber": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "crmUrl": f"https://example.my.salesforce.com/lightning/r/Account/{_hex(rng, 18)}/view",
    }


_TOGGLED_FIELDS: Final[Mapping[str, Callable[[random.Random], Any]]] = {
    "images": lambda rng: [_image_group(rng) for _ in range(rng.randint(1, 3))],
    "crmOpportunities": _crm_opportunities,
    "mediaOpportunities": _media_opportunities,
    "evaluation": _evaluation,
    "multimediaEvents": _multimedia_events,
    "mobileEvents": _mobile_events,
    "followups": _followups,
    "crmCustomer": _crm_customer,
}


def toggled_fields(query: Mapping[str, str]) -> frozenset[str]:
    """The record fields switched on by includeX=true parameters in a query."""
    return frozenset(field for param, field in TOGGLES.items() if query.get(param, "").lower() == "true")


def _envelope_bytes(data_json: str) -> bytes:
    """Wrap already-encoded data in the API's envelope."""
    return f'{{"data":{data_json},"cursor":null,"pageSize":1,"limit":1}}'.encode()


def _nested(depth: int, leaf: Any) -> Any:
    """leaf wrapped in depth containers, alternating list and object."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 == 0 else {"k": value}
    return value


def _int_text(value: int) -> str:
    """Decimal text of any int, even past Python's 4300-digit str() limit."""
    if value < 0:
        return "-" + _int_text(-value)
    chunk = 10**1000
    parts: list[str] = []
    while value >= chunk:
        value, low = divmod(value, chunk)
        parts.append(f"{low:01000d}")
    parts.append(str(value))
    return "".join(reversed(parts))


#: Edge fields written with \\u escapes in the body (the rest are raw UTF-8).
_EDGE_ESCAPED_KEYS: Final = frozenset({"emojiEscaped", "accentEscaped", "lineSeparatorEscaped"})
#: Edge fields whose body text is fixed, to use an escape json.dumps never writes.
_EDGE_LITERALS: Final[Mapping[str, str]] = {"solidusEscaped": '"a\\/b"'}

_HUGE_INT: Final = 10**4999 + 1234567890  # 5000 digits: past Python's default str() limit
_BIG_STRING_BYTES: Final = 2_000_000


def edge_record(recording_id: str) -> dict[str, Any]:
    """The data served for an edge-* id: values an archive must keep exactly.

    json.loads(edge_body(id))["data"] equals this, including key order, -0.0's sign and
    1.0 staying a float. Parsing it needs sys.set_int_max_str_digits(0) (hugeInt has 5000
    digits), and orjson.loads silently turns integers past 64 bits into floats.
    """
    return {
        "id": recording_id,
        "u64Max": 2**64 - 1,
        "twoTo64": 2**64,
        "belowI64Min": -(2**63) - 1,
        "i64Min": -(2**63),
        "tenTo40": 10**40,
        "hugeInt": _HUGE_INT,
        "negativeZero": -0.0,
        "nearMaxFloat": 1e308,
        "maxFloat": 1.7976931348623157e308,
        "minSubnormal": 5e-324,
        "oneAndAHalf": 1.5,
        "oneAsFloat": 1.0,
        "pointOnePlusPointTwo": 0.30000000000000004,
        "smallExponent": 1e-7,
        "nul": "before\u0000after",
        "lineSeparator": "a\u2028b",
        "paragraphSeparator": "a\u2029b",
        "lineSeparatorEscaped": "escaped \u2028 too",
        "emojiRaw": "raw \U0001f600 UTF-8",
        "emojiEscaped": "escaped \U0001f600 as a surrogate pair",
        "accentEscaped": "caf\u00e9",
        "zwjSequence": "\U0001f469\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8",
        "controlChars": "\t\n\r\b\f\u001f\u007f",
        "quotesAndBackslashes": '"quoted" \\ back\\slash',
        "solidusEscaped": "a/b",
        "nested200": _nested(200, "bottom"),
        "bigString": _big_string(),
        "title": None,
        "notes": None,
        "speakerMap": {},
        "jumpToTags": [],
        "emptyString": "",
        "unicodeKeys": {
            "ключ": 1,
            "键": 2,
            "\U0001f511": 3,
            "": "empty key",
            "nul\u0000key": "NUL in a key",
            "\u2028": "line separator key",
        },
    }


@functools.cache
def _big_string() -> str:
    """A 2 MB string full of characters that need escaping, so it is slow to get wrong."""
    unit = 'line with "quotes", a \\ backslash, caf\u00e9 and a tab\t\n'
    return (unit * (_BIG_STRING_BYTES // len(unit) + 1))[:_BIG_STRING_BYTES]


def _edge_value_json(key: str, value: Any) -> str:
    """Encode one edge field, escaped, literal or raw UTF-8 as the field calls for."""
    if key in _EDGE_LITERALS:
        return _EDGE_LITERALS[key]
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return _int_text(value)
    return json.dumps(value, ensure_ascii=key in _EDGE_ESCAPED_KEYS)


@functools.lru_cache(maxsize=16)
def edge_body(recording_id: str) -> bytes:
    """The exact body served for an edge-* id (cached: it holds a 2 MB string)."""
    record = edge_record(recording_id)
    members = (
        f"{json.dumps(key, ensure_ascii=False)}:{_edge_value_json(key, value)}"
        for key, value in record.items()
    )
    return _envelope_bytes("{" + ",".join(members) + "}")


def deep_record(recording_id: str) -> dict[str, Any]:
    """The data served for a deep-* id: nested 300 levels, past orjson's 255 for writing."""
    return {"id": recording_id, "deep": _nested(300, "bottom")}


def success_body(recording_id: str, config: ServerConfig, include: frozenset[str] = frozenset()) -> bytes:
    """The exact body of a normal 200 for recording_id, so tests can compare archives.

    edge-*, deep-* and pretty-* ids have their special bodies; include (record field names,
    see toggled_fields) only affects ordinary and pretty-* records.
    """
    if recording_id.startswith("edge-"):
        return edge_body(recording_id)
    if recording_id.startswith("deep-"):
        return _envelope_bytes(json.dumps(deep_record(recording_id), ensure_ascii=False))
    if config.record_bytes is not None and not recording_id.startswith("pretty-"):
        return sized_body(recording_id, seed=config.seed, body_bytes=config.record_bytes)
    record = make_record(
        recording_id,
        seed=config.seed,
        large=is_large(recording_id, config),
        large_bytes=config.large_bytes,
        include=include,
    )
    envelope = {"data": record, "cursor": None, "pageSize": 1, "limit": 1}
    if recording_id.startswith("pretty-"):
        return json.dumps(envelope, indent=2, ensure_ascii=False).encode()
    return orjson.dumps(envelope)


# ---------------------------------------------------------------------------------------------
# Faults and rate limiting (pure)
# ---------------------------------------------------------------------------------------------


def fail_first_rule(
    rules: Mapping[str, tuple[FaultKind, int]], recording_id: str
) -> tuple[FaultKind, int] | None:
    """The fail_first rule for an id: the longest matching prefix wins."""
    prefix = max((p for p in rules if recording_id.startswith(p)), key=len, default=None)
    return None if prefix is None else rules[prefix]


def choose_fault(config: ServerConfig, recording_id: str, attempt: int) -> FaultKind | None:
    """The fault for the attempt-th request (1-based) for an id, or None to serve it.

    A function of (config, id, attempt) only, not of arrival order, so a run with
    concurrent workers sees the same faults per id every time for the same seed.
    """
    rule = fail_first_rule(config.fail_first, recording_id)
    if rule is not None and attempt <= rule[1]:
        return rule[0]
    if config.fault_attempts is not None and attempt > config.fault_attempts:
        return None
    if config.fault_kinds and _unit_hash(config.seed, "fault", recording_id, attempt) < (config.fault_rate):
        pick = _unit_hash(config.seed, "kind", recording_id, attempt)
        return config.fault_kinds[int(pick * len(config.fault_kinds))]
    return None


def rate_limit_headers(
    *, limit: int, remaining: int, reset_in_s: float, now_epoch_s: float
) -> dict[str, str]:
    """X-RateLimit-* headers; Reset is a Unix time in whole seconds (as GitHub sends it)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(math.ceil(now_epoch_s + reset_in_s)),
    }


def retry_after_value(delay_s: float, *, as_date: bool, now_epoch_s: float) -> str:
    """A Retry-After value: whole seconds rounded up, or an IMF-fixdate HTTP date."""
    if as_date:
        return email.utils.formatdate(now_epoch_s + delay_s, usegmt=True)
    return str(math.ceil(delay_s))


class TokenBucket:
    """A token bucket: capacity tokens, refilled at rate per second, one per request.

    Requests over the limit are refused, not queued: the server answers 429 at once and
    says how long until a token is free, which is how the real API behaves.
    """

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Start full, so a client's first burst of up to capacity requests passes."""
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()

    def _refill(self) -> None:
        """Credit the tokens earned since the last call, up to capacity."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional)."""
        self._refill()
        return self._tokens

    def seconds_until_full(self) -> float:
        """How long until the bucket is back at capacity: the X-RateLimit-Reset window."""
        return (self.capacity - self.tokens) / self.rate

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or take nothing and return seconds until one is due."""
        self._refill()
        # The epsilon forgives float rounding, so a client pacing at exactly `rate` passes.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate}/s capacity={self.capacity} tokens={self.tokens:.3f}>"


class FixedWindowQuota:
    """limit requests per window_s, in windows aligned to when the quota was made (the server's start).

    The common API quota ("100 requests per 10 seconds"): unlike a token bucket it does not
    refill gradually, so a client that spends it early waits for the window to end. Requests
    it refuses do not count against it.
    """

    __slots__ = ("_clock", "_used", "_window", "limit", "origin", "window_s")

    def __init__(self, limit: int, window_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self.origin = clock()
        self._window = 0
        self._used = 0

    def _roll(self) -> float:
        """Start a fresh count when a new window has begun; returns now."""
        now = self._clock()
        window = math.floor((now - self.origin) / self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        return now

    def try_acquire(self) -> bool:
        """Count one request and return True, or return False (counting nothing) when spent."""
        self._roll()
        if self._used >= self.limit:
            return False
        self._used += 1
        return True

    @property
    def remaining(self) -> int:
        """Requests left in the current window."""
        self._roll()
        return self.limit - self._used

    def reset_in_s(self) -> float:
        """Seconds until the current window ends and the quota is whole again (in (0, window_s])."""
        now = self._roll()
        return self.origin + (self._window + 1) * self.window_s - now

    def __repr__(self) -> str:
        left = f"{self.remaining}/{self.limit}"
        return f"<FixedWindowQuota {left} per {self.window_s} s, reset in {self.reset_in_s():.3f} s>"


def quota_headers(
    *, limit: int, remaining: int, reset_in_s: float, window_s: int, style: ResetStyle, now_epoch_s: float
) -> dict[str, str]:
    """A fixed-window quota announced both ways: X-RateLimit-* and the IETF draft's fields.

    draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "default";q=100;w=10` (quota q per
    w seconds) and `RateLimit: "default";r=37;t=4` (r left, t seconds until it resets). Reset
    times are rounded up, so a client that waits them out is never early.
    """
    reset_s = math.ceil(reset_in_s)
    reset = str(reset_s) if style == "delta" else str(math.ceil(now_epoch_s + reset_in_s))
    remaining = max(0, remaining)
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": reset,
        "RateLimit-Policy": f'"{QUOTA_POLICY}";q={limit};w={window_s}',
        "RateLimit": f'"{QUOTA_POLICY}";r={remaining};t={reset_s}',
    }


class OutageSchedule:
    """The one outage window, [start, start + duration_s), on the injectable clock.

    Scheduled with a start of now, or with a delay counted from the next API request (so a
    benchmark can put an outage in the middle of a run without knowing when the run starts).
    """

    __slots__ = ("after_s", "duration_s", "start")

    def __init__(self, duration_s: float, after_s: float | None, now: float) -> None:
        self.duration_s = duration_s
        self.after_s = after_s
        self.start: float | None = now if duration_s > 0 and after_s is None else None

    def on_request(self, now: float) -> bool:
        """Note an API request; True when it is the one that fixes the start."""
        if self.start is None and self.after_s is not None and self.duration_s > 0:
            self.start = now + self.after_s
            return True
        return False

    def remaining_s(self, now: float) -> float:
        """Seconds of outage left at now; 0.0 outside the window."""
        if self.start is None or now < self.start:
            return 0.0
        return max(0.0, self.start + self.duration_s - now)

    def next_change_s(self, now: float) -> float | None:
        """Seconds until the outage begins or ends; None when neither is still to come."""
        if self.start is None:
            return None
        if now < self.start:
            return self.start - now
        end = self.start + self.duration_s
        return end - now if now < end else None

    def __repr__(self) -> str:
        return f"<OutageSchedule {self.duration_s} s start={self.start} after_s={self.after_s}>"


# ---------------------------------------------------------------------------------------------
# Stats and server state
# ---------------------------------------------------------------------------------------------


class Stats:
    """Counters the tests assert on; touched only from the server's event loop."""

    __slots__ = (
        "bad_auth",
        "by_status",
        "faults",
        "in_flight",
        "max_in_flight",
        "per_id",
        "queries",
        "quota_limited",
        "rate_limited",
        "request_times",
        "requests_total",
        "responses",
        "responses_total",
        "unknown_path_requests",
        "unknown_paths",
    )

    def __init__(self) -> None:
        self.requests_total = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.per_id: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bad_auth = 0
        self.rate_limited = 0
        self.quota_limited = 0
        self.faults: collections.Counter[str] = collections.Counter()
        self.queries: collections.Counter[str] = collections.Counter()
        self.request_times: collections.deque[float] = collections.deque(maxlen=REQUEST_TIMES_LIMIT)
        # (clock, status) per API response, so a benchmark can see accepted rate and 429 share
        # over time; responses_total numbers them, for GET /_stats/responses?since=N.
        self.responses: collections.deque[tuple[float, int]] = collections.deque(maxlen=REQUEST_TIMES_LIMIT)
        self.responses_total = 0
        self.unknown_path_requests = 0
        self.unknown_paths: collections.deque[str] = collections.deque(maxlen=UNKNOWN_PATHS_LIMIT)

    def on_arrival(self, recording_id: str, raw_query: str, now: float) -> None:
        """Count an API request as it arrives, before any decision about it."""
        self.requests_total += 1
        self.per_id[recording_id] += 1
        self.request_times.append(now)
        if raw_query and (raw_query in self.queries or len(self.queries) < QUERIES_LIMIT):
            self.queries[raw_query] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def on_response(self, status: int, now: float) -> None:
        """Count an API response as it leaves."""
        self.by_status[status] += 1
        self.responses.append((now, status))
        self.responses_total += 1

    def responses_since(self, since: int) -> dict[str, Any]:
        """The timeline from response number since on (those still kept): for polling."""
        first = self.responses_total - len(self.responses)
        skip = min(len(self.responses), max(0, since - first))
        kept = list(itertools.islice(self.responses, skip, None))
        return {"total": self.responses_total, "first": first + skip, "responses": kept}

    def snapshot(self) -> dict[str, Any]:
        """The JSON served by GET /_stats (status codes become string keys)."""
        return {
            "requests_total": self.requests_total,
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "per_id": dict(self.per_id),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "bad_auth": self.bad_auth,
            "rate_limited": self.rate_limited,
            "quota_limited": self.quota_limited,
            "faults": dict(self.faults),
            "queries": dict(self.queries),
            "request_times": list(self.request_times),
            "responses": [list(entry) for entry in self.responses],
            "responses_total": self.responses_total,
            "unknown_path_requests": self.unknown_path_requests,
            "unknown_paths": list(self.unknown_paths),
        }


class ServerState:
    """The live config plus everything that changes per request; one per app."""

    __slots__ = ("attempts", "bucket", "changed", "clock", "config", "jitter_rng", "outage", "quota", "stats")

    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.config = config
        self.stats = Stats()
        # Requests per id that got past auth and the rate limiter: drives fail_first and
        # fault_rate, so a 401 or a limiter 429 does not use up an id's scripted faults.
        self.attempts: collections.Counter[str] = collections.Counter()
        self.jitter_rng = random.Random(config.seed)
        self.bucket = self._new_bucket(config)
        self.quota = self._new_quota(config)
        self.outage = OutageSchedule(config.outage_s, config.outage_after_s, clock())
        # Set whenever the outage schedule may have moved, to wake the listener's driver.
        self.changed = asyncio.Event()

    def _new_quota(self, config: ServerConfig) -> FixedWindowQuota | None:
        """A fresh quota whose windows start now, or None when the quota is off."""
        if config.quota_limit is None:
            return None
        return FixedWindowQuota(config.quota_limit, config.quota_window_s, self.clock)

    def on_api_request(self) -> None:
        """An API request arrived: it may fix the start of an outage scheduled 'after'."""
        if self.outage.on_request(self.clock()):
            self.changed.set()

    def outage_remaining_s(self) -> float:
        """Seconds of the outage left now (0.0 when the API is up)."""
        return self.outage.remaining_s(self.clock())

    def snapshot(self) -> dict[str, Any]:
        """GET /_stats: the counters, plus the clock the timelines use and where windows start."""
        out = self.stats.snapshot()
        out["clock"] = self.clock()
        out["quota_origin"] = None if self.quota is None else self.quota.origin
        out["outage_start"] = self.outage.start
        return out

    def _new_bucket(self, config: ServerConfig) -> TokenBucket | None:
        """A full bucket for the config's limit, or None when the limit is off."""
        if config.rate_limit_rps is None:
            return None
        return TokenBucket(config.rate_limit_rps, config.effective_burst, self.clock)

    def apply(self, config: ServerConfig, changed: Collection[str] = ()) -> None:
        """Switch to a new config; changed names the fields the caller set.

        The bucket restarts full and the quota's windows restart only if their settings
        changed; naming outage_s or outage_after_s schedules the outage anew, even with the
        same values (that is how a test starts a second one).
        """
        old = self.config
        self.config = config
        limits = (config.rate_limit_rps, config.effective_burst)
        if limits != (old.rate_limit_rps, old.effective_burst):
            self.bucket = self._new_bucket(config)
        if (config.quota_limit, config.quota_window_s) != (old.quota_limit, old.quota_window_s):
            self.quota = self._new_quota(config)
        if config.seed != old.seed:
            self.jitter_rng = random.Random(config.seed)
        if OUTAGE_FIELDS & set(changed):
            self.outage = OutageSchedule(config.outage_s, config.outage_after_s, self.clock())
        self.changed.set()  # a change of outage_mode alone matters to the driver too

    def reset(self) -> None:
        """As if just started with this config: stats, fail_first counts, revocation, the
        bucket's level and the quota's windows are fresh, and the outage is scheduled anew."""
        self.stats = Stats()
        self.attempts.clear()
        self.bucket = self._new_bucket(self.config)
        self.quota = self._new_quota(self.config)
        self.outage = OutageSchedule(self.config.outage_s, self.config.outage_after_s, self.clock())
        self.changed.set()


# ---------------------------------------------------------------------------------------------
# HTTP handlers (the only part that knows aiohttp)
# ---------------------------------------------------------------------------------------------

STATE_KEY: Final = web.AppKey("fake_api_state", ServerState)


def parse_recording_path(raw_target: str, prefix: str) -> str | None:
    """The decoded id from a raw request target, or None if it is not the API path.

    Works on the raw target so an encoded slash stays inside one segment: 'a%2Fb' is the
    id 'a/b', while a literal 'a/b' is not an API path at all.
    """
    raw_path = raw_target.split("?", 1)[0].split("#", 1)[0]
    base = prefix + API_PATH
    if not raw_path.startswith(base):
        return None
    segment = raw_path[len(base) :]
    if not segment or "/" in segment:
        return None
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return None


def quote_id(recording_id: str) -> str:
    """Percent-encode an id as exactly one path segment, the inverse of parse_recording_path.

    Dots are unreserved, so quote() leaves '.' and '..' alone and a client would resolve them
    as dot-segments; encoding them keeps those ids addressable.
    """
    segment = urllib.parse.quote(recording_id, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response with an exact Content-Length (aiohttp sets it from the body)."""
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The API's JSON error shape."""
    return _json_response(status, {"error": {"code": status, "message": message}}, headers)


def _limiter_headers(bucket: TokenBucket) -> dict[str, str]:
    """X-RateLimit-* for the live bucket, after this request took its token (or not)."""
    return rate_limit_headers(
        limit=bucket.capacity,
        remaining=int(bucket.tokens),
        reset_in_s=bucket.seconds_until_full(),
        now_epoch_s=time.time(),
    )


def _quota_headers(quota: FixedWindowQuota, config: ServerConfig) -> dict[str, str]:
    """The quota's announcement for the live window, after this request was counted (or not)."""
    return quota_headers(
        limit=quota.limit,
        remaining=quota.remaining,
        reset_in_s=quota.reset_in_s(),
        window_s=quota.window_s,
        style=config.quota_reset_style,
        now_epoch_s=time.time(),
    )


def _gate(
    request: web.Request, state: ServerState, config: ServerConfig
) -> tuple[web.Response | None, dict[str, str]]:
    """Outage, auth, revocation, the quota and the rate limiter, in that order.

    Returns the refusal (None lets the request on) and the quota's headers, which every
    answer of the API proper carries. A request either limit refuses counts against neither.
    """
    if config.outage_mode == "503" and state.outage_remaining_s() > 0:
        return _error(503, "service unavailable"), {}
    authorization = request.headers.get("Authorization")
    if authorization != f"Bearer {config.token}" and (
        config.previous_token is None or authorization != f"Bearer {config.previous_token}"
    ):
        state.stats.bad_auth += 1
        return _error(401, "missing or invalid bearer token"), {}
    if config.revoke_after is not None and state.stats.requests_total > config.revoke_after:
        return _error(403, "token revoked"), {}
    quota = state.quota
    if quota is not None and quota.remaining <= 0:
        state.stats.quota_limited += 1
        headers = _quota_headers(quota, config)
        headers["Retry-After"] = str(math.ceil(quota.reset_in_s()))
        return _error(429, "quota exceeded", headers), {}
    if state.bucket is not None:
        wait_s = state.bucket.try_acquire()
        if wait_s > 0:
            state.stats.rate_limited += 1
            headers = _limiter_headers(state.bucket)
            if quota is not None:  # X-RateLimit-* describe the quota when there is one
                headers.update(_quota_headers(quota, config))
            headers["Retry-After"] = str(math.ceil(wait_s))
            return _error(429, "rate limit exceeded", headers), {}
    if quota is None:
        return None, {}
    quota.try_acquire()
    return None, _quota_headers(quota, config)


async def _sleep_latency(state: ServerState, config: ServerConfig) -> None:
    """Delay the answer by latency_ms plus up to jitter_ms, like a distant server."""
    delay_ms = config.latency_ms + state.jitter_rng.uniform(0.0, config.jitter_ms)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)


async def _send_partial(request: web.Request, body: bytes, *, reset: bool) -> web.StreamResponse:
    """Promise the full body in Content-Length, send half, then drop the connection.

    reset=True sends a TCP RST (SO_LINGER 0), like a crashed proxy; otherwise a clean FIN,
    like a server that gave up, so the client sees the body end short of Content-Length.
    """
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return response


_Fault = Callable[[web.Request, ServerConfig, str, FaultKind], Awaitable[web.StreamResponse]]


async def _fault_status(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """500, 502, 503 or 504 with the JSON error body."""
    return _error(int(kind), f"injected {kind} for {rid}")


async def _fault_429(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """429 with Retry-After (seconds or an HTTP date) and X-RateLimit-* headers."""
    now = time.time()
    as_date = kind == "429date"
    limit = config.effective_burst if config.rate_limit_rps is not None else NOMINAL_RATE_LIMIT
    headers = rate_limit_headers(limit=limit, remaining=0, reset_in_s=config.retry_after_s, now_epoch_s=now)
    headers["Retry-After"] = retry_after_value(config.retry_after_s, as_date=as_date, now_epoch_s=now)
    return _error(429, f"too many requests (injected for {rid})", headers)


async def _fault_429bare(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """429 with Retry-After seconds and nothing else, as a flaky gateway sends it."""
    return _error(429, "too many requests", {"Retry-After": str(config.retry_after_s)})


async def _fault_reset(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """Headers and half the body, then a TCP reset."""
    return await _send_partial(request, _ok_body(request, config, rid), reset=True)


async def _fault_truncate(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """Headers and half the body, then a clean close short of Content-Length."""
    return await _send_partial(request, _ok_body(request, config, rid), reset=False)


async def _fault_html(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 whose body is a proxy's HTML error page."""
    page = (
        "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        "<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>\n"
    )
    return web.Response(status=200, text=page, content_type="text/html")


async def _fault_badjson(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 application/json body that is not valid JSON (cut mid-string)."""
    body = json.dumps({"data": {"id": rid, "title": "unterminated"}})[:-8].encode()
    return web.Response(status=200, body=body, content_type="application/json")


async def _fault_empty(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 application/json with Content-Length: 0."""
    return web.Response(status=200, body=b"", content_type="application/json")


async def _fault_wrongid(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A valid 200 for a different id, as a mixed-up cache would serve."""
    body = success_body(f"wrong-{rid}", config)
    return web.Response(status=200, body=body, content_type="application/json")


async def _fault_redirect(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """302 to another origin (127.0.0.2, same port), where a client must not send its token.

    The path is not an API path, so if the request does land here it shows up in
    unknown_paths instead of being served.
    """
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if sockname else 80
    target = request.raw_path.split("?", 1)[0]
    location = f"http://127.0.0.2:{port}/redirected{target}"
    return web.Response(status=302, headers={"Location": location})


async def _fault_slow(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """Sleep slow_s, then answer normally: long enough to trip a client timeout."""
    await asyncio.sleep(config.slow_s)
    return web.Response(status=200, body=_ok_body(request, config, rid), content_type="application/json")


async def _fault_nodata(
    request: web.Request, config: ServerConfig, rid: str, kind: FaultKind
) -> web.StreamResponse:
    """A 200 JSON envelope without "data"."""
    return _json_response(200, {"cursor": None, "pageSize": 0, "limit": 1})


_FAULTS: Final[Mapping[FaultKind, _Fault]] = {
    "500": _fault_status,
    "502": _fault_status,
    "503": _fault_status,
    "504": _fault_status,
    "429": _fault_429,
    "429date": _fault_429,
    "429bare": _fault_429bare,
    "reset": _fault_reset,
    "truncate": _fault_truncate,
    "html": _fault_html,
    "badjson": _fault_badjson,
    "empty": _fault_empty,
    "wrongid": _fault_wrongid,
    "redirect": _fault_redirect,
    "slow": _fault_slow,
    "nodata": _fault_nodata,
}


def _ok_body(request: web.Request, config: ServerConfig, rid: str) -> bytes:
    """The success body for this request, honouring its include toggles."""
    return success_body(rid, config, toggled_fields(request.query))


async def _answer(
    request: web.Request, state: ServerState, config: ServerConfig, rid: str
) -> web.StreamResponse:
    """Decide and build the answer to one API request that has arrived."""
    if request.method != "GET":
        return _error(405, "only GET is supported", {"Allow": "GET"})
    refusal, announce = _gate(request, state, config)
    await _sleep_latency(state, config)
    if refusal is not None:
        return refusal
    state.attempts[rid] += 1
    fault = choose_fault(config, rid, state.attempts[rid])
    if fault is not None:
        state.stats.faults[fault] += 1
        return await _FAULTS[fault](request, config, rid, fault)
    if rid.startswith("missing-"):
        return _error(404, f"recording {rid!r} not found", announce)
    response = web.Response(body=_ok_body(request, config, rid), content_type="application/json")
    if state.bucket is not None:
        response.headers.update(_limiter_headers(state.bucket))
    response.headers.update(announce)  # the quota's X-RateLimit-* win over the bucket's
    return response


async def _handle_any(request: web.Request) -> web.StreamResponse:
    """Every request that is not a control endpoint: the API, or an unknown path."""
    state = request.app[STATE_KEY]
    config = state.config
    rid = parse_recording_path(request.raw_path, config.path_prefix)
    if rid is None:
        state.stats.unknown_path_requests += 1
        state.stats.unknown_paths.append(request.raw_path)
        return _error(
            404,
            f"no such path {request.path!r}; the API is at {config.path_prefix}{API_PATH}{{id}}",
        )
    stats = state.stats  # reset mid-request must not make in_flight negative
    stats.on_arrival(rid, request.rel_url.raw_query_string, state.clock())
    state.on_api_request()
    try:
        response = await _answer(request, state, config, rid)
    finally:
        stats.in_flight -= 1
    stats.on_response(response.status, state.clock())
    return response


async def _handle_stats(request: web.Request) -> web.Response:
    """GET /_stats."""
    return _json_response(200, request.app[STATE_KEY].snapshot())


async def _handle_responses(request: web.Request) -> web.Response:
    """GET /_stats/responses?since=N: the (clock, status) timeline from response N on."""
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        return _error(400, "since must be a whole number (a responses_total seen before)")
    return _json_response(200, request.app[STATE_KEY].stats.responses_since(since))


async def _handle_reset(request: web.Request) -> web.Response:
    """POST /_reset."""
    request.app[STATE_KEY].reset()
    return _json_response(200, {"reset": True})


async def _handle_get_config(request: web.Request) -> web.Response:
    """GET /_config."""
    return _json_response(200, config_to_json(request.app[STATE_KEY].config))


async def _handle_post_config(request: web.Request) -> web.Response:
    """POST /_config: merge a JSON object into the live config; 400 names a bad field."""
    state = request.app[STATE_KEY]
    try:
        changes = orjson.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object of config fields")
        state.apply(merge_config(state.config, changes), changes.keys())
    except (ValueError, TypeError) as exc:
        return _error(400, str(exc))
    return _json_response(200, config_to_json(state.config))


def build_app(state: ServerState) -> web.Application:
    """The aiohttp app: control endpoints first, then one catch-all for everything else.

    The catch-all parses the raw path itself (see parse_recording_path), which is what
    keeps %2F inside an id and lets unknown paths be counted.
    """
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_get("/_stats", _handle_stats)
    app.router.add_get("/_stats/responses", _handle_responses)
    app.router.add_post("/_reset", _handle_reset)
    app.router.add_get("/_config", _handle_get_config)
    app.router.add_post("/_config", _handle_post_config)
    app.router.add_route("*", "/{tail:.*}", _handle_any)
    return app


class Listener:
    """The listening socket, which a refuse-mode outage closes and reopens on the same port."""

    __slots__ = ("_runner", "_site", "host", "port")

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._site: web.TCPSite | None = None
        self.host = host
        self.port = port

    @property
    def is_open(self) -> bool:
        return self._site is not None

    async def open(self) -> None:
        """Listen on host:port (the first time port 0 picks one, kept from then on)."""
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self._site = site
        if self.port == 0:
            self.port = int(self._runner.addresses[-1][1])

    async def close(self) -> None:
        """Stop listening (connect() is refused from now on) and close every open connection."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        server = self._runner.server
        if server is not None:
            for handler in server.connections:
                handler.force_close()


async def _drive_outages(state: ServerState, listener: Listener) -> None:
    """Keep the listener closed exactly while a refuse-mode outage lasts.

    Sleeps until the schedule's next start or end, or until the state says it moved
    (a POST /_config, a reset, the request that fixes an 'after' start).
    """
    while True:
        state.changed.clear()
        now = state.clock()
        refusing = state.config.outage_mode == "refuse" and state.outage.remaining_s(now) > 0
        delay = state.outage.next_change_s(now)
        try:
            if refusing and listener.is_open:
                await listener.close()
            elif not refusing and not listener.is_open:
                await listener.open()
        except OSError as exc:  # the port was taken meanwhile: say so and try again soon
            print(f"fake_api: cannot listen again on port {listener.port}: {exc}", file=sys.stderr)
            delay = 0.5
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.changed.wait(), delay)


class Serving:
    """A started server: its runner, its listener and the task that drives outages."""

    __slots__ = ("_driver", "listener", "runner")

    def __init__(self, runner: web.AppRunner, listener: Listener, driver: asyncio.Task[None]) -> None:
        self.runner = runner
        self.listener = listener
        self._driver = driver

    @property
    def port(self) -> int:
        """The bound port, the same across outages."""
        return self.listener.port

    async def cleanup(self) -> None:
        """Stop the driver, then the server (sites, connections, handlers)."""
        self._driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._driver
        await self.runner.cleanup()


async def start_server(state: ServerState, host: str = "127.0.0.1", port: int = 0) -> Serving:
    """Bind and start serving; the returned Serving knows the bound port and how to stop."""
    runner = web.AppRunner(
        build_app(state),
        access_log=None,  # an access line per request would halve throughput
        handler_cancellation=True,  # a client timeout ends a 'slow' handler, not the test
        shutdown_timeout=1.0,
    )
    await runner.setup()
    listener = Listener(runner, host, port)
    try:
        await listener.open()
    except BaseException:
        await runner.cleanup()
        raise
    driver = asyncio.get_running_loop().create_task(_drive_outages(state, listener), name="fake-api-outages")
    return Serving(runner, listener, driver)


def base_url(host: str, port: int, prefix: str) -> str:
    """The base URL a client should use, prefix included."""
    if host in ("0.0.0.0", ""):  # a wildcard bind is dialled on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{prefix}"


# ---------------------------------------------------------------------------------------------
# In-process server for tests
# ---------------------------------------------------------------------------------------------


class FakeServerHandle:
    """A fake API served from a background thread with its own event loop.

    Its own loop means sync tests and async tests (on their own loop) can both use it; the
    methods below hop onto the server's loop, so they are safe from any thread.
    """

    __slots__ = ("_loop", "_runner", "_state", "_thread", "host", "port")

    def __init__(
        self,
        config: ServerConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start serving; returns once the socket accepts connections.

        clock drives the limits, the quota and outages (a test may pass a virtual one; a
        refuse-mode outage's reopening then waits for the next configure() or reset()).
        """
        self.host = host
        self._state = ServerState(config, clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="fake-api", daemon=True)
        self._thread.start()
        self._runner: Serving | None = None
        try:
            self._runner = self._call(start_server(self._state, host, port))
            self.port = self._runner.port
        except BaseException:
            self.stop()  # e.g. the port is taken: do not leave the thread behind
            raise

    def _run_loop(self) -> None:
        """The server thread: run the loop until stop(), then close it."""
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _call(self, coro: Awaitable[_T], timeout_s: float = 30.0) -> _T:
        """Run a coroutine on the server's loop and wait for its result."""

        async def wrapper() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout_s)

    @property
    def url(self) -> str:
        """Base URL for the exporter, path prefix included (e.g. http://127.0.0.1:PORT/api)."""
        return base_url(self.host, self.port, self._state.config.path_prefix)

    @property
    def root_url(self) -> str:
        """Base URL without the prefix: where /_stats and friends live."""
        return base_url(self.host, self.port, "")

    @property
    def config(self) -> ServerConfig:
        """The live config."""
        return self._state.config

    def recording_url(self, recording_id: str, query: str = "") -> str:
        """The already-encoded URL of one recording (give it to aiohttp as URL(u, encoded=True))."""
        url = f"{self.url}{API_PATH}{quote_id(recording_id)}"
        return f"{url}?{query}" if query else url

    def stats(self) -> dict[str, Any]:
        """A snapshot of GET /_stats (same shape, status codes as string keys)."""

        async def snapshot() -> dict[str, Any]:
            return self._state.snapshot()

        return self._call(snapshot())

    def reset(self) -> None:
        """Like POST /_reset: clear stats, fail_first counts and the rate limiter."""

        async def reset() -> None:
            self._state.reset()

        self._call(reset())

    def configure(self, **changes: Any) -> ServerConfig:
        """Like POST /_config: merge changes (JSON-shaped values) and return the new config."""

        async def apply() -> ServerConfig:
            self._state.apply(merge_config(self._state.config, changes), changes.keys())
            return self._state.config

        return self._call(apply())

    def stop(self) -> None:
        """Stop serving and end the thread; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._call(runner.cleanup())
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"<FakeServerHandle {self.url} running={self._runner is not None}>"


@contextlib.contextmanager
def running_server(
    config: ServerConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[FakeServerHandle]:
    """Serve the fake API on a background thread for the duration of a with block."""
    handle = FakeServerHandle(config or ServerConfig(), host=host, port=port, clock=clock)
    try:
        yield handle
    finally:
        handle.stop()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _fail_first_arg(text: str) -> tuple[str, tuple[FaultKind, int]]:
    """Parse PREFIX=KIND:COUNT, e.g. flaky-=503:2."""
    prefix, sep, rule = text.rpartition("=")
    kind, sep2, count = rule.partition(":")
    if not sep or not sep2 or not count.isdigit():
        message = f"expected PREFIX=KIND:COUNT like flaky-=503:2, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    try:
        return prefix, (parse_fault_kind(kind), int(count))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _kinds_arg(text: str) -> tuple[FaultKind, ...]:
    """Parse a comma-separated list of fault kinds."""
    try:
        return _as_kinds("--fault-kinds", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_CLI_EPILOG: Final = """\
special ids (by prefix):
  missing-*    404 with a JSON error
  edge-*       every value an archive must keep exactly (big ints, -0.0, U+2028, ...)
  deep-*       data nested 300 levels
  pretty-*     a pretty-printed body

fault kinds:
  500 502 503 504  JSON error    429      Retry-After seconds + X-RateLimit-*
  429date      Retry-After date  429bare  Retry-After seconds only (a flaky gateway)
  reset        half the body, then TCP RST
  truncate     half the body, then close (short of Content-Length)
  html         200 text/html     badjson  200 invalid JSON
  empty        200 empty body    wrongid  200, data.id is another id
  redirect     302 to http://127.0.0.2:PORT/redirected/...
  slow         sleep --slow-s, then answer
  nodata       200 JSON without "data"

limits and outages:
  --rate-limit-rps/--rate-limit-burst   token bucket: 429 + Retry-After + X-RateLimit-*
  --quota-limit N --quota-window-s S    N per S-second window; every answer carries
      X-RateLimit-Limit/-Remaining/-Reset, RateLimit-Policy: "default";q=N;w=S and
      RateLimit: "default";r=LEFT;t=SECONDS; over it: 429, Retry-After = seconds to reset
  --outage-s S [--outage-after-s A] [--outage-mode 503|refuse]
      for S seconds every API request gets 503, or the port refuses connections (the
      listening socket is closed, the control endpoints' too, and open connections are
      closed; it reopens on the same port); live: POST /_config
      {"outage_s": 30, "outage_mode": "refuse"} starts one now

control endpoints (no auth): GET /_stats, GET /_stats/responses?since=N ((clock, status)
  per response, from response N on), POST /_reset, GET|POST /_config

examples:
  FAKE_API_TOKEN=t python scripts/fake_api.py --port 0 --port-file /tmp/fake-url
  python scripts/fake_api.py --token t --fail-first flaky-=503:2 --fail-first cut-=reset:1
  python scripts/fake_api.py --token t --fault-rate 0.05 --fault-kinds 503,reset,429 \\
      --rate-limit-rps 200 --latency-ms 20 --jitter-ms 10 --large-fraction 0.01
  python scripts/fake_api.py --token t --quota-limit 100 --quota-window-s 10 \
      --outage-s 30 --outage-after-s 15 --outage-mode refuse
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line: a flag for every ServerConfig field, defaults from ServerConfig."""
    d = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="fake_api.py",
        description="Serve a fake recordings API, GET {base}/v1/core/recordings/{id}, for the\n"
        "exporter's demo, tests and benchmarks. Prints 'listening on URL' once ready;\n"
        "SIGTERM or SIGINT stops it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_CLI_EPILOG,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)")
    add("--port-file", type=Path, help="also write the base URL to this file once listening")
    add("--token", help="the accepted bearer token (default: $FAKE_API_TOKEN; one is required)")
    add(
        "--previous-token",
        help="also accept this token, as during a rotation's overlap; "
        'POST /_config {"previous_token": null} ends it (default: none)',
    )
    add("--path-prefix", default="", help="base path before /v1, e.g. /api (default: none)")
    add(
        "--seed",
        type=int,
        default=d.seed,
        help="seeds records, faults, jitter (default: %(default)s)",
    )
    add(
        "--revoke-after",
        type=int,
        metavar="N",
        help="answer 403 to every request after the first N (default: never)",
    )
    add(
        "--large-fraction",
        type=float,
        default=d.large_fraction,
        metavar="F",
        help="share of ids (0..1) with a --large-bytes transcript (default: %(default)s)",
    )
    add(
        "--large-bytes",
        type=int,
        default=d.large_bytes,
        metavar="N",
        help="length of a large transcript, in characters (default: %(default)s)",
    )
    add(
        "--record-bytes",
        type=int,
        metavar="N",
        help="serve every ordinary record as a compact body of exactly N bytes (default: the "
        "realistic mix of 1-20 KB and --large-fraction)",
    )
    add(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        metavar="MS",
        help="delay added to every API response (default: %(default)s)",
    )
    add(
        "--jitter-ms",
        type=float,
        default=d.jitter_ms,
        metavar="MS",
        help="extra delay, uniform in [0, MS] (default: %(default)s)",
    )
    add(
        "--fault-rate",
        type=float,
        default=d.fault_rate,
        metavar="P",
        help="probability (0..1) of a random fault per request (default: %(default)s)",
    )
    add(
        "--fault-kinds",
        type=_kinds_arg,
        default=d.fault_kinds,
        metavar="K1,K2",
        help=f"kinds --fault-rate draws from (default: {','.join(d.fault_kinds)})",
    )
    add(
        "--fault-attempts",
        type=int,
        default=d.fault_attempts,
        metavar="N",
        help="random faults only on each id's first N requests (default: every request)",
    )
    add(
        "--fail-first",
        type=_fail_first_arg,
        action="append",
        default=[],
        metavar="PREFIX=KIND:COUNT",
        help="the first COUNT requests of each id starting with PREFIX get KIND; repeatable",
    )
    add(
        "--retry-after-s",
        type=int,
        default=d.retry_after_s,
        metavar="S",
        help="Retry-After seconds on injected 429/429date faults (default: %(default)s)",
    )
    add(
        "--slow-s",
        type=float,
        default=d.slow_s,
        metavar="S",
        help="how long a 'slow' fault sleeps (default: %(default)s)",
    )
    add(
        "--rate-limit-rps",
        type=float,
        metavar="RPS",
        help="server-side token bucket, requests per second (default: off)",
    )
    add(
        "--rate-limit-burst",
        type=int,
        metavar="N",
        help="token bucket capacity (default: ceil(RPS))",
    )
    add(
        "--quota-limit",
        type=int,
        metavar="N",
        help="fixed-window quota: N requests per --quota-window-s, announced in every answer (default: off)",
    )
    add(
        "--quota-window-s",
        type=int,
        default=d.quota_window_s,
        metavar="S",
        help="the quota's window, aligned to the server's start (default: %(default)s)",
    )
    add(
        "--quota-reset-style",
        choices=RESET_STYLES,
        default=d.quota_reset_style,
        help="X-RateLimit-Reset as seconds (delta) or a Unix time (epoch) (default: %(default)s)",
    )
    add(
        "--outage-s",
        type=float,
        default=d.outage_s,
        metavar="S",
        help="an outage this long, from the start or --outage-after-s (default: none)",
    )
    add(
        "--outage-after-s",
        type=float,
        metavar="S",
        help="start the outage S seconds after the first API request (default: at once)",
    )
    add(
        "--outage-mode",
        choices=OUTAGE_MODES,
        default=d.outage_mode,
        help="503 to every API request, or refuse connections (default: %(default)s)",
    )
    return parser  # fmt: skip


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    """Build the ServerConfig from parsed flags; the token falls back to FAKE_API_TOKEN."""
    token = args.token or env.get("FAKE_API_TOKEN")
    if not token:
        raise ValueError("no token: pass --token TOKEN or set FAKE_API_TOKEN")
    return ServerConfig(
        token=token,
        previous_token=args.previous_token,
        path_prefix=normalize_prefix(args.path_prefix),
        seed=args.seed,
        revoke_after=args.revoke_after,
        large_fraction=args.large_fraction,
        large_bytes=args.large_bytes,
        record_bytes=args.record_bytes,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(args.fault_kinds),
        fault_attempts=args.fault_attempts,
        fail_first=dict(args.fail_first),
        retry_after_s=args.retry_after_s,
        slow_s=args.slow_s,
        rate_limit_rps=args.rate_limit_rps,
        rate_limit_burst=args.rate_limit_burst,
        quota_limit=args.quota_limit,
        quota_window_s=args.quota_window_s,
        quota_reset_style=args.quota_reset_style,
        outage_s=args.outage_s,
        outage_after_s=args.outage_after_s,
        outage_mode=args.outage_mode,
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write via a rename, so a script polling for the file never reads half a URL."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def serve(config: ServerConfig, host: str, port: int, port_file: Path | None) -> None:
    """Serve until SIGTERM or SIGINT, announcing the URL once the socket is bound."""
    # Handlers go in before the announcement: a caller may signal as soon as it reads it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = await start_server(ServerState(config), host, port)
    url = base_url(host, serving.port, config.path_prefix)
    if port_file is not None:
        _write_atomically(port_file, url + "\n")
    print(f"listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await serving.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse flags, serve, exit 0 on a signal, 2 on a bad setting."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config, args.host, args.port, args.port_file))
    except OSError as exc:
        print(f"fake_api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
