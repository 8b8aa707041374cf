"""Credentials kept in files: the API token (`--token-file`), proxy credentials (`--proxy-auth-file`).

A secret manager or a Kubernetes Secret hands credentials over as files, and
replaces a file in place when the credential rotates. `TokenSource` is the
token a request carries, read again from its file when the API refuses it or
on SIGHUP, so a day-long export survives a rotation.

Files are read whole but bounded (a credential is a line, not megabytes), and
followed through symlinks on purpose: Kubernetes mounts each key of a Secret
as a symlink into a `..data/` directory it swaps atomically. Their mode is
checked: a credential other users can read earns a warning (Secrets are
mounted 0644 unless `defaultMode` says otherwise).

No message built here contains a credential.
"""

from __future__ import annotations

import enum
import logging
import stat
from pathlib import Path

from exporter.config import Secret
from exporter.errors import UsageError

log = logging.getLogger(__name__)

#: A token or `user:password` is a line; anything longer is not a credential file.
MAX_SECRET_FILE_BYTES = 16 * 1024


def warn_if_shared(path: Path, option: str) -> None:
    """A warning when group or others may read a credential file (the target of a symlink)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it says what is wrong
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s can be read by other users; chmod 600 it", option, path)


def read_secret_file(path: Path, option: str) -> str:
    """The file's one line, stripped; UsageError naming the option and the problem, never the content."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {option} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise UsageError(f"{option} {path} is over {MAX_SECRET_FILE_BYTES} bytes: it must hold one line")
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
