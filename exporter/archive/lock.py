"""The archive's lock: one export writes an archive at a time; the read-only commands only look.

An export holds an exclusive `flock` on `.lock` (with its pid written in it)
for as long as its process has the archive open; a second export exits 4.
`verify` and `status` ask whether it is held without ever keeping it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import ArchiveError, ArchiveLocked

from .layout import LOCK_NAME
from .safe_fs import SafeDir, open_regular_fd, os_error


def locked_directory(path: Path) -> tuple[SafeDir, int]:
    """The archive directory `path` (created 0700 when missing), opened, and its lock's descriptor."""
    directory = SafeDir.open_archive(path)
    try:
        return directory, take_lock(directory)
    except BaseException:
        directory.close()
        raise


def take_lock(directory: SafeDir) -> int:
    """Hold the archive's lock for this process's lifetime (released on close or exit); its descriptor."""
    path = directory.path / LOCK_NAME
    fd = directory.open(LOCK_NAME, os.O_RDWR, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        os.close(fd)
        raise ArchiveLocked(
            f"another exporter (pid {holder}) is writing to {directory.path}; wait for it to finish, "
            "or stop it: it can be resumed later by running the same command"
        ) from None
    except OSError as exc:  # e.g. ENOLCK: a file system without locks
        os.close(fd)
        raise os_error(path, exc, "lock") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise os_error(path, exc, "write") from exc
    return fd


@dataclass(frozen=True, slots=True)
class LockState:
    """Whether an export holds the archive's lock; `held` None when it cannot be told."""

    held: bool | None
    pid: int | None = None


def probe_lock(root: Path) -> LockState:
    """Whether a run holds `root`'s lock right now, without ever keeping it.

    The lock file is opened read-only (never created) and a shared lock asked
    for without waiting: refused means an export holds its exclusive lock;
    granted is dropped at once, so a run starting in that microsecond is the
    only one that could notice (it would exit 4, "locked", and can be rerun).
    flock locks belong to the open file, so this works in the holder's own
    process too.
    """
    path = root / LOCK_NAME
    if not os.path.lexists(path):
        return LockState(held=False)
    try:
        fd = open_regular_fd(path)
    except ArchiveError:
        return LockState(held=None)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return LockState(held=True, pid=int(text) if text.isdigit() else None)
        except OSError:
            return LockState(held=None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState(held=False)
    finally:
        os.close(fd)
