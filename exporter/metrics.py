"""Prometheus metrics of a run: the exposition text, the textfile, and the Pushgateway push.

`render` is a pure function of a `Snapshot` (plain numbers the pipeline reads
off its counters), in the text format 0.0.4 that node_exporter's textfile
collector and the Pushgateway read. Every labelled family lists all its label
values, zeros included, so `rate()` and `increase()` see a series from the
start rather than from its first non-zero value.

`write_file` replaces the file atomically: a new file of an unpredictable,
hidden name that does not end in `.prom` (the collector reads only `*.prom`,
so it never sees a half-written one), created exclusively and without
following links, then renamed over the target. The file is outside the
archive and holds no ids and no token, so it is world-readable (0644), as the
collector's directory usually is.

`push` sends the same text to a Pushgateway with PUT (the group's metrics are
replaced, as `prometheus_client.push_to_gateway` does), under a grouping key
made of the labels; it returns what went wrong instead of raising, because a
push that fails must never fail the export. The push has one deadline for
all of it (connect, send, the whole answer), not one per read: a gateway that
trickles its answer a byte at a time cannot keep a finished export alive. It
runs on the event loop and reads the answer with the exporter's own bounded
HTTP/1.1 reader (`transport/http1.py`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from .errors import Reason
from .outcomes import ANSWER_CLASSES
from .pacing import PauseReason
from .transport import http1

FILE_MODE = 0o644
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The labels the exporter's own families use; --metrics-label may not take them.
RESERVED_LABELS = frozenset({"code", "reason"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: --metrics-label is bounded like any input: a grouping key is part of a URL path.
MAX_LABEL_VALUE = 256
MAX_LABELS = 16
#: A Pushgateway's answer body is read this far at most (it is a few bytes of error text).
_MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """The run's counters at one moment."""

    labels: tuple[tuple[str, str], ...] = ()
    exported: int
    #: Answers by class (`outcomes.ANSWER_CLASSES`).
    answers: Mapping[str, int]
    retries: int
    #: Ids failed in this run, by reason (failed.ndjson's reasons).
    failed: Mapping[str, int]
    bytes_written: int
    #: The pace allowed now, requests per second; math.inf when nothing limits it.
    rate_limit_per_s: float
    paused_s: Mapping[str, float]
    in_flight: int
    start_epoch: float
    #: Set only in the last snapshot of a run.
    end_epoch: float | None = None
    exit_code: int | None = None


def render(snap: Snapshot) -> str:
    """The snapshot in the Prometheus text exposition format (0.0.4)."""
    out: list[str] = []
    base = snap.labels

    def family(
        name: str, kind: str, help_text: str, samples: list[tuple[tuple[tuple[str, str], ...], float]]
    ) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for extra, value in samples:
            out.append(f"{name}{_labels(base + extra)} {_number(value)}")

    family(
        "exporter_records_exported_total",
        "counter",
        "Records committed to the archive by this run.",
        [((), snap.exported)],
    )
    family(
        "exporter_requests_total",
        "counter",
        "Requests answered, by status class (429 apart; error: no answer, e.g. a timeout or reset).",
        [((("code", code),), snap.answers.get(code, 0)) for code in ANSWER_CLASSES],
    )
    family(
        "exporter_retries_total",
        "counter",
        "Requests made again after a retryable answer.",
        [((), snap.retries)],
    )
    family(
        "exporter_failed_ids",
        "gauge",
        "Ids this run did not archive, by reason (see failed.ndjson).",
        [((("reason", str(reason)),), snap.failed.get(reason, 0)) for reason in Reason],
    )
    family(
        "exporter_bytes_written_total",
        "counter",
        "Bytes appended to records files by this run, as stored (after compression).",
        [((), snap.bytes_written)],
    )
    family(
        "exporter_rate_limit_per_second",
        "gauge",
        "Requests per second the pacer allows now (+Inf: no limit).",
        [((), snap.rate_limit_per_s)],
    )
    family(
        "exporter_paused_seconds_total",
        "counter",
        "Seconds every worker was held, by reason.",
        [((("reason", str(reason)),), snap.paused_s.get(reason, 0.0)) for reason in PauseReason],
    )
    family("exporter_in_flight", "gauge", "Requests sent and not yet answered.", [((), snap.in_flight)])
    family(
        "exporter_run_start_timestamp_seconds",
        "gauge",
        "When the run started (Unix time).",
        [((), snap.start_epoch)],
    )
    if snap.end_epoch is not None:
        family(
            "exporter_run_end_timestamp_seconds",
            "gauge",
            "When the run ended (Unix time).",
            [((), snap.end_epoch)],
        )
    if snap.exit_code is not None:
        family(
            "exporter_run_success",
            "gauge",
            "1 if the run ended with exit code 0, else 0.",
            [((), 1 if snap.exit_code == 0 else 0)],
        )
        family("exporter_run_exit_code", "gauge", "The exit code the run ended with.", [((), snap.exit_code)])
    return "\n".join(out) + "\n"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _escape(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(round(value, 6))


def parse_label(text: str) -> tuple[str, str]:
    """`KEY=VALUE` of --metrics-label, or ValueError saying what a label may be."""
    name, sep, value = text.partition("=")
    if not sep or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise ValueError(
            f"{text[:80]!r} is not KEY=VALUE with KEY a Prometheus label name "
            "(letters, digits, _; not starting with a digit or __)"
        )
    if name in RESERVED_LABELS:
        raise ValueError(f"the label {name!r} is the exporter's own; choose another name")
    if len(value) > MAX_LABEL_VALUE or any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise ValueError(
            f"the value of {name!r} must be at most {MAX_LABEL_VALUE} characters, with no control characters"
        )
    return name, value


def check_labels(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The --metrics-label pairs, each name once, at most MAX_LABELS."""
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--metrics-label {repeated[0]} is given twice; give each label once")
    if len(pairs) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} --metrics-label")
    return tuple(pairs)


# --- the textfile -------------------------------------------------------------------------------


def write_file(path: Path, text: str) -> None:
    """Replace `path` with `text`, atomically for readers; OSError when it cannot.

    The temporary file is created in `path`'s own directory (a rename does not
    cross file systems), exclusively and with O_NOFOLLOW, so a link or file
    planted under its name is never written through; the rename replaces a
    link at `path` itself rather than writing where it points.
    """
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        temp = f".{path.name}.tmp-{secrets.token_hex(8)}"
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            FILE_MODE,
            dir_fd=directory,
        )
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
            os.replace(temp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory)
            raise
    finally:
        os.close(directory)


# --- the Pushgateway ----------------------------------------------------------------------------


def check_push_url(text: str) -> str:
    """A Pushgateway base URL (`http(s)://host[:port][/path]`), or ValueError saying what to fix."""
    try:
        parts = urlsplit(text.strip())
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ValueError(f"--metrics-push {text[:200]!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"--metrics-push {text[:200]!r}: give http(s)://HOST[:PORT], the Pushgateway's address"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("--metrics-push: credentials in the URL would show in `ps`; the push sends none")
    if parts.query or parts.fragment:
        raise ValueError(
            "--metrics-push: the URL takes no query or fragment; the grouping key comes from the labels"
        )
    return text.strip().rstrip("/")


def grouping_path(labels: tuple[tuple[str, str], ...]) -> str:
    """`/metrics/job/<job>/<label>/<value>...`: the group the push replaces.

    `job` is the `job` label, else `exporter`. A value that would not survive
    as one path segment goes base64url-encoded (`<label>@base64/<value>`), as
    the Pushgateway's API asks: one holding `/`, the empty one, and `.` and
    `..`, which clients and proxies resolve as "this" and "the parent"
    segment (`job=..` would otherwise push to `/metrics`). Others are
    percent-encoded.
    """
    given = dict(labels)
    pairs = [("job", given.get("job", "exporter")), *((k, v) for k, v in labels if k != "job")]
    path = "/metrics"
    for name, value in pairs:
        if value in ("", ".", "..") or "/" in value:
            encoded = base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii") or "="
            path += f"/{name}@base64/{encoded}"
        else:
            path += f"/{name}/{quote(value, safe='')}"
    return path


async def push(url: str, labels: tuple[tuple[str, str], ...], text: str, *, timeout_s: float) -> str | None:
    """PUT `text` to the Pushgateway at `url` under the labels' grouping key; what failed, or None.

    `timeout_s` bounds the whole exchange, whatever the gateway does.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = parts.path.rstrip("/") + grouping_path(labels)
    body = text.encode("utf-8")
    authority = f"[{host}]" if ":" in host else host
    head = (
        f"PUT {target}".encode("ascii")
        + http1.head_after_target(
            {
                "Host": authority if parts.port is None else f"{authority}:{parts.port}",
                "Content-Type": CONTENT_TYPE,
                "Content-Length": str(len(body)),
                "Connection": "close",
            }
        )
        + body
    )
    loop = asyncio.get_running_loop()
    connection: http1.Connection | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, connection = await loop.create_connection(
                lambda: http1.Connection(_MAX_ANSWER_BYTES),
                host,
                port,
                ssl=ssl.create_default_context() if https else None,
                server_hostname=host if https else None,
            )
            answer = await connection.request(head)
    except TimeoutError:
        return f"cannot push the metrics to {url}: no complete answer within {timeout_s:g} s"
    except (OSError, http1.ConnectionClosed, http1.ProtocolError, http1.Refused) as exc:
        return f"cannot push the metrics to {url}: {exc or type(exc).__name__}"
    finally:
        if connection is not None:
            connection.abort()  # nothing more to say or hear, even from a gateway still trickling
    if not 200 <= answer.status < 300:
        said = answer.body.decode("utf-8", "replace").strip().splitlines()[:1]
        return f"the Pushgateway at {url} answered {answer.status}" + (f": {said[0][:200]}" if said else "")
    return None
