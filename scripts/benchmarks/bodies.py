"""Recording bodies, pre-generated once per parameter set and served by nginx as static files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import API_PATH, MB, MEMORY_PLACEHOLDER, MEMORY_PREFIX, MEMORY_TEMPLATES


def recording_ids(count: int, prefix: str = "rec-") -> list[str]:
    """The benchmark's ids: `rec-0000000`, `rec-0000001`, ... (same ids for every contender)."""
    return [f"{prefix}{n:07d}" for n in range(count)]


def _fake_api() -> Any:
    """The fake API's package (scripts/fakeapi/), imported lazily so the floor's process never loads it."""
    import fakeapi

    return fakeapi


def _readable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # nginx workers may run as another user
    return path


@dataclasses.dataclass(frozen=True, kw_only=True)
class BodySet:
    """Static bodies on disk: `root` is nginx's root, so a body is `root/v1/core/recordings/<id>`."""

    root: Path
    ids: tuple[str, ...]
    total_bytes: int
    large_count: int
    large_bytes: int


def ensure_bodies(
    cache: Path, ids: Sequence[str], *, seed: int, large_fraction: float, large_bytes: int
) -> BodySet:
    """Write any missing body for `ids` into the cache dir keyed by the generation parameters.

    Bodies are `fakeapi.success_body`, a pure function of (id, seed, large_fraction,
    large_bytes), so a cache dir never holds a stale body and a bigger `--ids` reuses it.
    """
    fake_api = _fake_api()
    config = fake_api.ServerConfig(seed=seed, large_fraction=large_fraction, large_bytes=large_bytes)
    root = cache / f"bodies-seed{seed}-large{large_fraction:g}x{large_bytes}"
    directory = root / API_PATH.strip("/")
    for parent in (cache, root, root / "v1", root / "v1" / "core", directory):
        _readable_dir(parent)
    total = large = large_total = written = 0
    for record_id in ids:
        path = directory / record_id
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            body = fake_api.success_body(record_id, config)
            tmp = path.with_name(f".{record_id}.tmp")
            tmp.write_bytes(body)
            tmp.replace(path)
            size = len(body)
            written += 1
        total += size
        if size >= MB:
            large += 1
            large_total += size
    if written:
        print(f"  generated {written} bodies in {root}", flush=True)
    return BodySet(root=root, ids=tuple(ids), total_bytes=total, large_count=large, large_bytes=large_total)


def describe_bodies(bodies: BodySet) -> str:
    """`20,000 files, 480 MB: 19,900 of mean 9.0 KB and 100 large (0.50%) of mean 3.0 MB`."""
    count, large = len(bodies.ids), bodies.large_count
    small_bytes = bodies.total_bytes - bodies.large_bytes
    text = f"{count:,} files, {bodies.total_bytes / MB:,.1f} MB: {count - large:,} of mean "
    text += f"{small_bytes / max(1, count - large) / 1000:.1f} KB"
    if large:
        text += f" and {large} large ({100 * large / count:.2f}%)"
        text += f" of mean {bodies.large_bytes / large / MB:.1f} MB"
    return text


def ensure_templates(cache: Path, *, seed: int, large_fraction: float, large_bytes: int) -> Path:
    """The memory scenario's 1,000 template bodies, each carrying MEMORY_PLACEHOLDER as data.id.

    Writing a million ~10 KB files would take 10 GB and minutes, and the exporter insists that
    data.id is the requested id, so nginx serves template `NNN.json` for any `m-xxxxNNN` and its
    sub_filter replaces the placeholder by the requested id (same length, in C, per request).
    """
    fake_api = _fake_api()
    config = fake_api.ServerConfig(seed=seed, large_fraction=large_fraction, large_bytes=large_bytes)
    directory = _readable_dir(cache / f"templates-seed{seed}-large{large_fraction:g}x{large_bytes}")
    _readable_dir(cache)
    for k in range(MEMORY_TEMPLATES):
        path = directory / f"{k:03d}.json"
        if path.exists():
            continue
        real_id = f"{MEMORY_PREFIX}{k:07d}"
        body = fake_api.success_body(real_id, config)
        needle = f'"id":"{real_id}"'.encode()
        assert body.startswith(b'{"data":{' + needle), "data.id is expected to be the first member"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(body.replace(needle, f'"id":"{MEMORY_PLACEHOLDER}"'.encode(), 1))
        tmp.replace(path)
    return directory


def write_manifest(path: Path, ids: Sequence[str]) -> Path:
    """A plain-text manifest (one id a line): the exporter's and the floor's input."""
    with open(path, "w", encoding="ascii") as handle:
        for record_id in ids:
            handle.write(record_id + "\n")
    return path
