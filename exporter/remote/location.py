"""`s3://BUCKET/PREFIX`: parsed and checked, the key under which each archive name lives, and how
a message names a file of the work dir's stage (pure).

The remote layout mirrors the local one (names from `archive/layout.py`),
under PREFIX: `aws s3 cp --recursive s3://BUCKET/PREFIX DIR` gives a directory
the local tools read as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import UsageError

SCHEME = "s3://"
# S3's rules for new bucket names (3-63 characters, lower case, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_remote(text: str) -> bool:
    """Whether an --out (or a DIR of verify/status) names object storage rather than a directory."""
    return text.startswith(SCHEME)


@dataclass(frozen=True, slots=True)
class Location:
    """An archive in a bucket: every key is PREFIX/NAME (or NAME when the prefix is empty)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    def key(self, name: str) -> str:
        """The key of the archive file `name` (a path relative to the archive, e.g. checkpoint.d/...)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def list_prefix(self) -> str:
        """What a listing of this archive's keys starts with."""
        return f"{self.prefix}/" if self.prefix else ""

    def name_of(self, key: str) -> str | None:
        """The archive name of `key`, or None when the key is not under this archive's prefix."""
        start = self.list_prefix
        return key[len(start) :] if key.startswith(start) and len(key) > len(start) else None

    def __str__(self) -> str:
        return self.url


def staged_copy(path: Path, url: str) -> str:
    """How a message names a file (or the directory) of a work dir's stage: the path and its archive.

    The one wording for it, so every message about a staged file says which
    archive is meant while naming the local file that is to be fixed.
    """
    return f"the staged copy {path} of {url}"


def parse(text: str) -> Location:
    """`s3://BUCKET[/PREFIX]` -> Location; UsageError saying what is wrong.

    The prefix is taken as a directory: slashes at its ends are dropped, and
    empty, `.` or `..` segments (which S3 would keep as literal key parts, and
    `aws s3 cp` would map out of the target directory) are refused.
    """
    if not is_remote(text):
        raise UsageError(f"{text!r} is not an s3:// URL (s3://BUCKET/PREFIX)")
    bucket, _, prefix = text[len(SCHEME) :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(
            f"{text!r}: {bucket!r} is not a bucket name (3-63 lower-case letters, digits, dots, hyphens)"
        )
    prefix = prefix.strip("/")
    for part in prefix.split("/") if prefix else ():
        if part in ("", ".", ".."):
            raise UsageError(f"{text!r}: the prefix may not hold an empty, '.' or '..' segment")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in part) or "\\" in part:
            raise UsageError(f"{text!r}: the prefix may not hold control characters or backslashes")
    if len(prefix.encode()) > 900:
        raise UsageError(f"{text!r}: the prefix is too long (S3 keys have at most 1,024 bytes)")
    return Location(bucket=bucket, prefix=prefix)
