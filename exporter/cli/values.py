"""What each option's value may be: argparse `type=` functions, each refusing a bad value with what to type.

Numbers are read in ASCII digits only, and not too many of them: int() and
float() also take other scripts' digits ('٣' is 3), refuse some that
str.isdigit() accepts ('²'), turn 400 digits into infinity and refuse 4,300
(the int max str digits limit), each a traceback.
"""

from __future__ import annotations

import argparse
import re

from exporter.config import INCLUDE_PARAMS, MAX_COMPRESS_THREADS, Shard

_DECIMAL = r"([0-9]{1,15}(?:\.[0-9]{1,9})?)"
_SIZE = re.compile(rf"\s*{_DECIMAL}\s*([kmgt]?i?b?)?\s*", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}  # fmt: skip
_WHOLE = re.compile(r"\s*([0-9]{1,18})\s*", re.ASCII)
_NUMBER = re.compile(rf"\s*{_DECIMAL}\s*", re.ASCII)
#: The longest duration any option takes: beyond it no date can be shown.
MAX_DURATION_S = 3650 * 86400
#: Workers, each with its connection.
MAX_CONCURRENCY = 10_000


def quoted(text: str) -> str:
    """User input quoted in a message: its repr (which escapes), and no more than 40 characters of it."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_size(text: str) -> int:
    """`512MB`, `1GiB`, `100k`, `1048576` -> bytes (decimal units, binary with `i`)."""
    match = _SIZE.fullmatch(text)
    unit = (match.group(2) or "").lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a size such as 512MB, 1GiB or 1000000")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return size


_DURATION = re.compile(rf"\s*{_DECIMAL}\s*(ms|s|m|h|d)?\s*", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`45s`, `90m`, `6h`, `1d`, `30` (seconds) -> seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a duration such as 45s, 90m or 6h")
    seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]
    if not 0 < seconds <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"{quoted(text)}: the duration must be more than 0 and at most {MAX_DURATION_S // 86400}d"
        )
    return seconds


_SHARD = re.compile(r"\s*([0-9]{1,9}|INDEX)\s*/\s*([0-9]{1,9})\s*", re.ASCII)


def parse_shard(text: str) -> Shard:
    """`K/N` (K from 0 to N-1), or `INDEX/N` to take K from $JOB_COMPLETION_INDEX later."""
    match = _SHARD.fullmatch(text)
    if match is None or int(match.group(2)) < 1:
        raise argparse.ArgumentTypeError(
            f"{quoted(text)} is not K/N, e.g. 0/4 (or INDEX/4 for Kubernetes), N at most 9 digits"
        )
    count = int(match.group(2))
    index = -1 if match.group(1) == "INDEX" else int(match.group(1))
    if index >= count:
        raise argparse.ArgumentTypeError(f"shard {index} does not exist in {count} shards (0..{count - 1})")
    return Shard(index=index, count=count)


def size_or_zero(text: str) -> int | None:
    """A --max-file-bytes value: a size, or 0 for no limit."""
    return None if text.strip() in ("0", "none") else parse_size(text)


def positive_int(text: str) -> int:
    match = _WHOLE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number (0-9, at most 18 digits)")
    value = int(match.group(1))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def thread_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_COMPRESS_THREADS:
        raise argparse.ArgumentTypeError(f"{value} threads: at most {MAX_COMPRESS_THREADS}")
    return value


def concurrency(text: str) -> int:
    value = positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_CONCURRENCY:,} requests in flight")
    return value


def compress_level(text: str) -> int:
    match = re.fullmatch(r"\s*(-?[0-9]{1,6})\s*", text, re.ASCII)
    if match is None:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a compression level such as 3 or 19")
    return int(match.group(1))


def non_negative_float(text: str) -> float:
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a number >= 0 such as 10 or 2.5")
    return float(match.group(1))


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def query_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def metrics_label(text: str) -> tuple[str, str]:
    from exporter import metrics  # the Prometheus client only when the option is given

    try:
        return metrics.parse_label(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def push_url(text: str) -> str:
    from exporter import metrics

    try:
        return metrics.check_push_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def include_name(text: str) -> str:
    names = {name: param for name, param in INCLUDE_PARAMS.items()}
    names.update({param.lower(): param for param in INCLUDE_PARAMS.values()})
    if text.lower() == "all":
        return "all"
    param = names.get(text.lower())
    if param is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of: all, {', '.join(INCLUDE_PARAMS)} "
            "(any other parameter: --query KEY=VALUE)"
        )
    return param
