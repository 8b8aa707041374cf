"""Where a resumed manifest stops being archived, found without reading the part before it.

A resume's manifest is archived up to about where the last run stopped, and
not after. Planning it in order costs a few hundred nanoseconds a line before the
first request can go out: 2-4 seconds at 9,000,000 archived lines, on a 2-core
machine shared with other work. So the planner (`plan._TextPlan`) asks here for
a *resume point*: a line start in a plain, uncompressed manifest file before
which the manifest is (nearly) all archived and after which it is not, found by
a binary search over the file's bytes that samples a few lines at each step
and looks them up in the archive's index (about 20 steps of 40 lookups).

It is a hint about order, never about what is fetched. The planner plans the
lines from the resume point until it has the first ids to fetch, hands out a
few of them (the first requests), then plans every line before the point (the
archived part, and the ids left over from earlier runs: requests that were in
flight when one was stopped, failures to retry), then the rest. Every line is
planned exactly once, by the same rules, so the counts and the ids fetched are
those of planning in order; only the order of requests changes, and the ids
of the part before the point still go out within the few seconds its plan takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from .digests import id_digest
from .manifest_stream import PlainFile

#: A manifest whose archived part is shorter than this is planned in order: it is planned in
#: well under a second anyway (about 400,000 ids).
MIN_SKIP_BYTES = 4 << 20
#: Bytes sampled at each step of the search, and the share of the ids in them that must be archived.
SAMPLE_BYTES = 1 << 10
_ARCHIVED_SHARE = 0.75
#: The search stops when the boundary is known within this many bytes.
_PRECISION_BYTES = 1 << 16


def resume_offset(
    manifest: PlainFile, archived: Callable[[bytes], bool], *, min_bytes: int | None = None
) -> int:
    """The resume point's offset in `manifest`, a line start; 0 to plan the manifest in order.

    `archived(digest)` says whether the archive holds an id. The manifest's
    start must be archived, and the point at least `min_bytes` (default
    `MIN_SKIP_BYTES`) into it. An OSError reading the file gives 0: the
    manifest's reader meets it again, and reports it.
    """
    floor = MIN_SKIP_BYTES if min_bytes is None else min_bytes
    size = manifest.size
    try:
        if size < floor or not _mostly_archived(manifest, 0, archived):
            return 0
        low, high = 0, size  # the sample at `low` is archived; none is known to be at `high`
        while high - low > _PRECISION_BYTES:
            middle = (low + high) // 2
            if _mostly_archived(manifest, middle, archived):
                low = middle
            else:
                high = middle
        start = manifest.line_start(low)
    except OSError:
        return 0
    return start if start is not None and start >= floor else 0


def _mostly_archived(manifest: PlainFile, offset: int, archived: Callable[[bytes], bool]) -> bool:
    """Whether most ids of the lines sampled at `offset` are archived (a stretch of no ids counts as so)."""
    found = total = 0
    for line in manifest.lines_at(offset, SAMPLE_BYTES):
        text = line.strip()
        if not text or text.startswith(b"#"):
            continue
        total += 1
        with contextlib.suppress(UnicodeDecodeError):  # not an id the archive can hold
            found += archived(id_digest(text.decode("utf-8")))
    return found >= _ARCHIVED_SHARE * total
