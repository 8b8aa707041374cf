"""A fake recordings API: the server the demo, the test-suite and the benchmarks talk to.

It serves the one endpoint the exporter reads, ``GET {base}/v1/core/recordings/{id}``, over
real HTTP on loopback, and misbehaves on purpose, deterministically when asked, so every
failure the exporter must survive can be produced on demand.

One module per concern, pure core first and the aiohttp shell last:

    config      ServerConfig, frozen settings; merge_config() applies a JSON patch to one
    records     make_record / success_body: deterministic records, a function of (id, seed) and
                toggles; edge_record / edge_body: the values an archive must keep exactly
                (big ints, -0.0, U+2028); sized_body: records of an exact size (the benchmark's)
    faults      choose_fault: which fault, if any, a request gets (a pure function); how each is served
    limits      TokenBucket (the server-side rate limit, arithmetic on an injectable clock),
                FixedWindowQuota announced by quota_headers, OutageSchedule (all pure)
    state       Stats, what the tests assert on (GET /_stats); ServerState, the live state
    app         build_app: the aiohttp app (the gate, the answer, the control endpoints), start_server
    inprocess   running_server / FakeServerHandle: a server on its own thread, for tests and the bench
    cli         main: the command line (`scripts/fake_api.py` is its entry)

Tests import it as `fakeapi` (pytest's `pythonpath` puts scripts/ on the path; see pyproject);
the names in `__all__` are the package's public face.

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

from fakeapi.app import parse_recording_path, quote_id
from fakeapi.cli import build_parser, config_from_args, main
from fakeapi.config import API_PATH, FAULT_KINDS, TOGGLES, ServerConfig, config_to_json, merge_config
from fakeapi.faults import choose_fault
from fakeapi.inprocess import FakeServerHandle, running_server
from fakeapi.limits import FixedWindowQuota, OutageSchedule, TokenBucket, quota_headers
from fakeapi.records import (
    deep_record,
    edge_body,
    edge_record,
    is_large,
    make_record,
    sized_body,
    success_body,
)
from fakeapi.state import ServerState, Stats

__all__ = [
    "API_PATH",
    "FAULT_KINDS",
    "TOGGLES",
    "FakeServerHandle",
    "FixedWindowQuota",
    "OutageSchedule",
    "ServerConfig",
    "ServerState",
    "Stats",
    "TokenBucket",
    "build_parser",
    "choose_fault",
    "config_from_args",
    "config_to_json",
    "deep_record",
    "edge_body",
    "edge_record",
    "is_large",
    "main",
    "make_record",
    "merge_config",
    "parse_recording_path",
    "quota_headers",
    "quote_id",
    "running_server",
    "sized_body",
    "success_body",
]
