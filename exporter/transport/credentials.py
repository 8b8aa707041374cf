"""Credentials kept in files: the API token (`--token-file`), proxy credentials (`--proxy-auth-file`).

A secret manager or a Kubernetes Secret hands credentials over as files, and
replaces a file in place when the credential rotates. `TokenSource` is the
token a request carries, read again from its file when the API refuses it or
on SIGHUP, so a day-long export survives a rotation.

Files are read whole but bounded (a credential is a line, not megabytes), and
followed through symlinks on purpose: Kubernetes mounts each key of a Secret
as a symlink into a `..data/` directory it swaps atomically. What the links
lead to must be a regular file: a FIFO would block the open (and with it the
event loop, which SIGTERM then cannot stop), a device such as /dev/zero or a
terminal would be read forever or wait for a person, and neither can be read
again when the credential rotates. So a secret file is looked at with stat()
first, opened with O_NONBLOCK (an open that cannot block even if a FIFO was
swapped in meanwhile), and checked again with fstat() on what was opened.
Their mode is checked: a credential other users can read earns a warning
(Secrets are mounted 0644 unless `defaultMode` says otherwise).

No message built here contains a credential.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
from pathlib import Path

from exporter.archive.safe_fs import kind_of
from exporter.config import Secret
from exporter.errors import UsageError

log = logging.getLogger(__name__)

#: A token or `user:password` is a line; anything longer is not a credential file.
MAX_SECRET_FILE_BYTES = 16 * 1024
#: A PEM file of CA certificates, a client certificate's chain or its key: a whole CA bundle
#: (Mozilla's is about 220 KB) fits.
MAX_PEM_FILE_BYTES = 4 * 1024 * 1024


def warn_if_shared(path: Path, option: str) -> None:
    """A warning when group or others may read a credential file (the target of a symlink)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it says what is wrong
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s can be read by other users; chmod 600 it", option, path)


def read_secret_bytes(path: Path, option: str, *, max_bytes: int = MAX_SECRET_FILE_BYTES) -> bytes:
    """The whole of a regular file of at most `max_bytes`, without ever blocking on what it is.

    Links are followed (a Kubernetes Secret is a link into `..data/`); what
    they lead to must be a regular file, checked before the open and again on
    the descriptor, so a FIFO or device swapped in between is refused too.
    UsageError naming the option and the problem, never the content.
    """

    def not_regular(mode: int) -> UsageError:
        return UsageError(
            f"{option} {path} is {kind_of(mode)}: it must be a regular file (one that can be read "
            "again when the credential rotates)"
        )

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {option} {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_regular(info.st_mode)
        if info.st_size > max_bytes:
            raise UsageError(f"{option} {path} is over {max_bytes} bytes: it must hold one credential")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read {option} {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if size > max_bytes:  # it grew while read
        raise UsageError(f"{option} {path} is over {max_bytes} bytes: it must hold one credential")
    return b"".join(chunks)


def check_pem_file(path: Path, option: str) -> None:
    """A --ca-cert, --client-cert or --client-key file that OpenSSL may read: regular, and bounded.

    OpenSSL opens the file itself, by name, and blocks on a FIFO; this reads
    it once first, without blocking, so anything but a regular file of at most
    MAX_PEM_FILE_BYTES stops the run with exit 2 before it starts.
    """
    read_secret_bytes(path, option, max_bytes=MAX_PEM_FILE_BYTES)


def read_secret_file(path: Path, option: str) -> str:
    """The file's one line, stripped; UsageError naming the option and the problem, never the content."""
    data = read_secret_bytes(path, option)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{option} {path} is not UTF-8 text") from exc
    return text.strip()


def check_token(text: str, source: str) -> Secret:
    """The token if an HTTP header can carry it; UsageError saying what is wrong, not what it is."""
    token = text.strip()
    if not token:
        raise UsageError(f"{source} is empty: it must hold the API token")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in token):
        raise UsageError(
            f"{source} holds whitespace or control characters inside the token; it must be one line"
        )
    if not token.isascii():
        raise UsageError(f"{source} holds non-ASCII characters, which an HTTP header cannot carry")
    return Secret(token)


def read_token_file(path: Path) -> Secret:
    """The token held by `--token-file PATH`."""
    return check_token(read_secret_file(path, "--token-file"), f"--token-file {path}")


def check_proxy_credentials(text: str, source: str) -> Secret:
    """`user:password` for Basic proxy authentication (RFC 7617), or UsageError."""
    user, colon, password = text.partition(":")
    if not colon or not user:
        raise UsageError(f"{source} must hold user:password on one line")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UsageError(f"{source} holds control characters; it must hold user:password on one line")
    return Secret(f"{user}:{password}")


def read_proxy_auth_file(path: Path) -> Secret:
    """The proxy credentials held by `--proxy-auth-file PATH` (`user:password`)."""
    return check_proxy_credentials(read_secret_file(path, "--proxy-auth-file"), f"--proxy-auth-file {path}")


class Reload(enum.Enum):
    """What reading the token file again found."""

    CHANGED = "a new token"
    SAME = "the same token"
    UNREADABLE = "no usable token"
    NO_FILE = "no --token-file"


class TokenSource:
    """The token for the next request, and the file to read again when it is refused.

    Every token read gets a generation number, and each response says which
    generation its request carried (`client.RawResponse.token_generation`).
    When the API refuses generation g: if a newer token has been read since,
    the request is simply made again with it; otherwise the file is read once
    more, and either holds a new token or the refusal stands. So many workers
    refused at the same moment read the file once, not once each.
    """

    __slots__ = ("_generation", "_path", "_settled", "_token")

    def __init__(self, token: Secret, path: Path | None = None) -> None:
        self._token = token
        self._path = path
        self._generation = 0
        #: The generation a re-read already confirmed (same token): refused for good.
        self._settled = -1

    @property
    def token(self) -> Secret:
        return self._token

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def path(self) -> Path | None:
        return self._path

    def reload(self) -> Reload:
        """Read the token file again; a different token becomes the current one."""
        if self._path is None:
            return Reload.NO_FILE
        try:
            token = read_token_file(self._path)
        except UsageError as exc:
            log.warning("%s", exc)
            return Reload.UNREADABLE
        if token.reveal() == self._token.reveal():
            return Reload.SAME
        self._token = token
        self._generation += 1
        return Reload.CHANGED

    def renew(self, refused_generation: int) -> bool:
        """The API refused the token of `refused_generation`: True if there is another one to try."""
        if refused_generation != self._generation:
            return True  # a newer token was read since that request left
        if self._settled == refused_generation or self._path is None:
            return False
        outcome = self.reload()
        if outcome is Reload.CHANGED:
            log.warning("the API refused the token; --token-file %s holds a new one: using it", self._path)
            return True
        log.warning("the API refused the token; --token-file %s read again: %s", self._path, outcome.value)
        self._settled = self._generation
        return False

    def __repr__(self) -> str:
        return f"<TokenSource generation={self._generation} path={self._path}>"
