"""Opening, writing and replacing files in a directory someone else may have prepared, never fooled by it.

The archive directory can be one another user created first (under /tmp, on a
shared volume) and can still write to, who may plant a symbolic link, a hard
link, a FIFO or a device where an archive file should be. Followed by an
exporter running as root, such a link would overwrite any file on the machine.
So every file of an archive is opened here, the same way:

- relative to one descriptor of the directory (`SafeDir`, opened once with
  O_DIRECTORY), so a path component renamed or swapped later cannot redirect a
  write; renames stay within such descriptors;
- with O_NOFOLLOW (a symbolic link fails to open: ELOOP), O_NONBLOCK (opening a
  FIFO would block for ever) and O_CLOEXEC, after an lstat that turns away
  anything but a regular file before it is opened (a device may act on open)
  and an fstat that checks the same of what was really opened;
- a file opened for writing must have one link: through a hard link to a file
  elsewhere, an append or a truncation would change that file;
- temporary files are created with O_CREAT | O_EXCL under unpredictable names
  (`layout.temp_name`), and renamed over the file they replace when whole
  (`SafeDir.write_whole`).

`check_trusted` is ssh's rule for the directory itself (owned by this user or
root, not writable by everyone). Every failure is an `ArchiveError` (exit 4)
naming the file and the cause: `ArchiveUnsafe` for what is refused, a plain
`ArchiveError` for an OSError (read-only file system, disk full, ...).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from exporter.errors import ArchiveError, ArchiveUnsafe

from .layout import temp_name

FILE_MODE = 0o600
DIR_MODE = 0o700
#: Every open of an archive file carries these.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# Buffers per writev call (POSIX guarantees at least 16; Linux allows 1024).
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16)

log = logging.getLogger(__name__)


def os_error(path: Path | str, exc: OSError, doing: str) -> ArchiveError:
    """One line for an OSError on `path`: what was being done, the cause, what to do.

    `path` may be how a message names the file instead (`Archive.where_file`).
    """
    cause = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        return refused(path, "is a symbolic link")
    hint = {
        errno.EROFS: "the file system is mounted read-only; give an --out on a writable one",
        errno.ENOSPC: "the disk is full; free some space and run the same command again",
        errno.EDQUOT: "the disk quota is exhausted; free some space and run the same command again",
        errno.EACCES: "check the permissions of the directory and its files",
        errno.EPERM: "check the permissions and attributes (chattr) of the directory and its files",
    }.get(exc.errno or 0, "fix the cause and run the same command again (committed records are kept)")
    return ArchiveError(f"cannot {doing} {path}: {cause}; {hint}")


def refused(path: Path | str, why: str) -> ArchiveUnsafe:
    """`path` is not what the archive keeps there (`why`: "is a symbolic link, not a regular file")."""
    return ArchiveUnsafe(
        f"{path} {why}: refused, as the archive never follows links nor opens anything but its own "
        "files (either could make it write elsewhere); remove it, or choose another --out"
    )


def kind_of(mode: int) -> str:
    """What a file of `mode` is, in words."""
    for test, word in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return word
    return "an unknown kind of file"


def entry_problem(st: os.stat_result, *, directory: bool = False, written: bool = False) -> str | None:
    """What is wrong with an archive entry of lstat result `st` ("is a FIFO, not ..."), or None.

    `directory`: it should be a directory; `written`: a file the exporter
    appends to or truncates in place, which must have no other name.
    """
    if directory:
        return None if stat.S_ISDIR(st.st_mode) else f"is {kind_of(st.st_mode)}, not a directory"
    if not stat.S_ISREG(st.st_mode):
        return f"is {kind_of(st.st_mode)}, not a regular file"
    if written and st.st_nlink > 1:
        return f"has {st.st_nlink} hard links (writing it would change the file under its other names)"
    return None


def check_trusted(path: Path, st: os.stat_result) -> None:
    """Refuse a directory another user owns or everyone may write to; warn if its group may write.

    As ssh does for ~/.ssh: whoever else can write in it can plant links and
    files where the archive's belong. Root's own directories are trusted. A
    group-writable one is only a warning: Kubernetes makes a volume mounted
    with `fsGroup` group-writable on every mount, and a restarted pod must
    still resume its archive.
    """
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        raise ArchiveUnsafe(
            f"{path} belongs to another user (uid {st.st_uid}; this is uid {uid}): refused, its owner "
            "could plant links where the archive's files go; use a directory of your own for --out"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        raise ArchiveUnsafe(
            f"{path} is writable by every user (mode {mode:04o}): refused, anyone could plant links where "
            f"the archive's files go; `chmod o-w {path}`, or use a directory of your own for --out"
        )
    if mode & stat.S_IWGRP:
        log.warning(
            "%s is writable by its group (mode %04o): members of group %d can change the archive",
            path,
            mode,
            st.st_gid,
        )


class SafeDir:
    """An open directory; every file in it is opened, created, renamed and removed through here."""

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open_archive(cls, path: Path) -> SafeDir:
        """Open (creating it and missing parents, mode 0700) the directory an export writes to.

        An existing `path` may be a symbolic link to a directory; whatever it
        leads to must pass `check_trusted`. A directory created here is opened
        without following links, so nobody can swap it for one in between.
        """
        missing: list[str] = []
        probe = path
        while not os.path.lexists(probe) and probe.parent != probe:
            missing.append(probe.name)
            probe = probe.parent
        try:
            fd = os.open(probe, _DIR_FLAGS)
        except OSError as exc:
            raise _dir_error(probe, exc) from exc
        where = probe
        try:
            if not missing:
                check_trusted(path, os.fstat(fd))
            for name in reversed(missing):
                where = where / name
                # Made by another process in between: opened and checked below like any other.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, DIR_MODE, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                st = os.fstat(fd)
                if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != DIR_MODE:
                    os.fchmod(fd, DIR_MODE)  # umask may have narrowed it; nothing may widen it
                else:
                    check_trusted(where, st)
        except OSError as exc:
            os.close(fd)
            raise _dir_error(where, exc) from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    @classmethod
    def open_existing(cls, path: Path) -> SafeDir:
        """Open a directory only to read it (`verify`, `status`); `path` itself may be a link."""
        try:
            return cls(os.open(path, _DIR_FLAGS), path)
        except OSError as exc:
            raise _dir_error(path, exc) from exc

    def subdir(self, name: str) -> SafeDir:
        """The directory `name` in this one, made (mode 0700) if missing; never through a link."""
        path = self.path / name
        st = self.lstat(name)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise refused(path, f"is {kind_of(st.st_mode)}, not a directory")
        try:
            if st is None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, DIR_MODE, dir_fd=self.fd)
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError as exc:
            raise _dir_error(path, exc) from exc
        opened = SafeDir(fd, path)
        if st is None:
            try:
                os.fchmod(fd, DIR_MODE)  # umask may have narrowed it
            except OSError as exc:
                opened.close()
                raise os_error(path, exc, "make private") from exc
            self.fsync()
        return opened

    def lstat(self, name: str) -> os.stat_result | None:
        """`name`'s own status (a link's, not its target's); None when there is no such entry."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error(self.path / name, exc, "look at") from exc

    def names(self) -> list[str]:
        """The names in the directory."""
        try:
            return os.listdir(self.fd)
        except OSError as exc:
            raise os_error(self.path, exc, "list") from exc

    def open(self, name: str, flags: int, *, create: bool = False, exclusive: bool = False) -> int:
        """A descriptor of the regular file `name`, opened with `flags` (O_RDONLY, O_WRONLY, ...).

        `create` makes it (mode 0600) if missing, `exclusive` insists on making
        it. A file opened for writing must have no other link.
        """
        path = self.path / name
        written = flags & (os.O_WRONLY | os.O_RDWR) != 0
        before = self.lstat(name)
        if before is not None:
            problem = entry_problem(before, written=written)
            if problem is not None:
                raise refused(path, problem)
        if create:
            flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
        try:
            fd = os.open(name, flags | _OPEN_FLAGS, FILE_MODE, dir_fd=self.fd)
        except OSError as exc:
            raise os_error(path, exc, "create" if create and before is None else "open") from exc
        try:
            st = os.fstat(fd)
            problem = entry_problem(st, written=written)
            if problem is not None:
                raise refused(path, problem)
            if create and before is None:
                if stat.S_IMODE(st.st_mode) != FILE_MODE:
                    os.fchmod(fd, FILE_MODE)
                self.fsync()  # make the new name durable
        except OSError as exc:
            os.close(fd)
            raise os_error(path, exc, "open") from exc
        except BaseException:
            os.close(fd)
            raise
        return fd

    def reader(self, name: str) -> BinaryIO | None:
        """`name` open for reading as a buffered file, or None when it does not exist."""
        if self.lstat(name) is None:
            return None
        return os.fdopen(self.open(name, os.O_RDONLY), "rb")

    def create_temp(self, name: str, *, readable: bool = False) -> tuple[str, int]:
        """A new, empty file to be renamed to `name` later: (its name, a descriptor open for writing)."""
        temp = temp_name(name)
        return temp, self.open(temp, os.O_RDWR if readable else os.O_WRONLY, create=True, exclusive=True)

    def write_whole(self, name: str, chunks: Iterable[bytes]) -> None:
        """Replace `name` with the concatenated `chunks`: all of it or none of it, mode 0600.

        Written to a new file of an unpredictable name first (created exclusively,
        so nothing planted there is written through), then renamed over `name`.
        """

        def fill(fd: int) -> None:
            for chunk in chunks:
                write_all(fd, chunk)

        self._replace_with(name, fill, readable=False)

    def write_placed(
        self, name: str, size: int, pieces: Iterable[tuple[int, bytes]], finish: Callable[[int], None]
    ) -> None:
        """Replace `name` with `size` bytes: zeros but `pieces` (offset, bytes), then what `finish` writes.

        For a file whose parts are made out of order (an index merge fills its
        columns a range at a time). `finish` gets the file descriptor once the
        pieces are written, open for reading too (to checksum them and write
        the sum). All of it or none of it, as `write_whole`.
        """

        def fill(fd: int) -> None:
            os.ftruncate(fd, size)
            for at, piece in pieces:
                pwrite_all(fd, piece, at)
            finish(fd)

        self._replace_with(name, fill, readable=True)

    def _replace_with(self, name: str, fill: Callable[[int], None], *, readable: bool) -> None:
        """`fill` a new temporary file, fsync it and rename it over `name`; on any failure remove it."""
        temp, fd = self.create_temp(name, readable=readable)
        try:
            try:
                fill(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.replace(temp, name)
        except OSError as exc:
            self.unlink(temp)
            raise os_error(self.path / name, exc, "write") from exc
        except BaseException:
            self.unlink(temp)
            raise
        self.fsync()

    def replace(self, name: str, new_name: str, into: SafeDir | None = None) -> None:
        """Rename `name` to `new_name` (in `into`, else here), replacing what has that name."""
        target = into or self
        try:
            os.replace(name, new_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)
        except OSError as exc:
            raise os_error(self.path / name, exc, f"move to {target.path / new_name}") from exc

    def unlink(self, name: str) -> None:
        """Remove `name` if it is there (a link is removed, never what it points to)."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_error(self.path / name, exc, "remove") from exc

    def fsync(self) -> None:
        """Make the directory's entries (new names, renames) durable."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise os_error(self.path, exc, "sync") from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SafeDir {self.path} fd={self.fd}>"


def write_all(fd: int, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write every byte of `data` (one buffer, or several with writev), however the kernel splits it."""
    if isinstance(data, bytes):
        data = [data]
    pending = [memoryview(chunk) for chunk in data if chunk]
    while pending:
        written = os.writev(fd, pending[:_IOV_MAX])
        while written and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if written:
            pending[0] = pending[0][written:]


def pwrite_all(fd: int, data: bytes, at: int) -> None:
    """Write every byte of `data` at offset `at`, however the kernel splits it."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


def open_regular(path: Path) -> BinaryIO:
    """`path` open for reading if it is a regular file, never through a link; see `open_regular_fd`."""
    return os.fdopen(open_regular_fd(path), "rb")


def open_regular_fd(path: Path) -> int:
    """A descriptor of `path` for reading, if it is a regular file; its last component is never followed.

    For the read-only commands, which take paths: a symbolic link, FIFO or
    device raises `ArchiveUnsafe`, an OSError an `ArchiveError`.
    """
    try:
        st = os.lstat(path)
        problem = entry_problem(st)
        if problem is not None:
            raise refused(path, problem)
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError as exc:
        raise os_error(path, exc, "open") from exc
    problem = entry_problem(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise refused(path, problem)
    return fd


def _dir_error(path: Path, exc: OSError) -> ArchiveError:
    if exc.errno == errno.ENOTDIR:
        return ArchiveError(f"cannot use {path} as the archive directory: it is not a directory")
    if exc.errno == errno.ELOOP:
        return refused(path, "is a symbolic link")
    return os_error(path, exc, "open the directory")
