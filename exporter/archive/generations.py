"""--refetch's generations: the current files set aside under superseded/<stamp>/, crash-safe.

The move is announced first in `.superseding` (naming the target), then every
file of the generation is moved, the checkpoint last, and the marker removed.
A run killed part-way leaves the marker, and the next run's open finishes the
move before anything else; nothing is ever deleted.
"""

from __future__ import annotations

import re
from pathlib import Path

from exporter.errors import ArchiveCorrupt

from .layout import (
    CHECKPOINT_NAME,
    SUPERSEDE_MARKER,
    SUPERSEDED_DIR,
    is_generation_file,
    marker_target,
    marker_text,
)
from .safe_fs import SafeDir

_GENERATION = re.compile(r"[A-Za-z0-9_-]{1,100}")


def supersede(directory: SafeDir, stamp: str) -> Path:
    """Move the current generation aside into superseded/<stamp>/; where it went."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stamp)[:80] or "generation"
    with directory.subdir(SUPERSEDED_DIR) as superseded:
        name = safe
        suffix = 1
        while superseded.lstat(name) is not None:
            suffix += 1
            name = f"{safe}-{suffix}"
        superseded.subdir(name).close()
    directory.write_whole(SUPERSEDE_MARKER, [marker_text(name)])
    finish_superseding(directory, name)
    return directory.path / SUPERSEDED_DIR / name


def interrupted_move(directory: SafeDir) -> str | None:
    """The generation a stopped --refetch was moving into (`superseded/<name>`), or None.

    Only a plain name under superseded/ is accepted: the marker is a file in a
    directory others may have prepared, and it decides where files are moved.
    """
    handle = directory.reader(SUPERSEDE_MARKER)
    if handle is None:
        return None
    with handle:
        text = handle.read(512).decode("utf-8", "replace").strip()
    name = marker_target(text)
    if not _GENERATION.fullmatch(name):
        raise ArchiveCorrupt(
            f"{directory.path / SUPERSEDE_MARKER} names {text[:100]!r}, not a directory under "
            f"{SUPERSEDED_DIR}/: this exporter did not write it; remove it and check the archive "
            "with `exporter verify`"
        )
    return name


def finish_superseding(directory: SafeDir, generation: str) -> None:
    """Move every generation file into superseded/`generation`, the checkpoint last, then drop the marker.

    Idempotent: after a crash part-way, the next open calls it again with the
    marker's target and it moves what is left.
    """
    with (
        directory.subdir(SUPERSEDED_DIR) as superseded,
        superseded.subdir(generation) as target,
    ):
        names = sorted(directory.names())
        movable = [n for n in names if is_generation_file(n)]
        if CHECKPOINT_NAME in names:
            movable.append(CHECKPOINT_NAME)
        for name in movable:
            directory.replace(name, name, into=target)
        target.fsync()
        directory.fsync()
    directory.unlink(SUPERSEDE_MARKER)
    directory.fsync()
