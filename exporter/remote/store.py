"""The S3 calls: create-only puts with a checksum the store verifies, multipart, HEAD read-back, Object Lock.

The one module that imports aiobotocore (through `_client`), and the boundary
where its errors become ours:

    StoreError (ArchiveError, exit 4)   a request failed for good: one line naming
    │                                   the key, S3's error code and what to do
    └── StoreConflict                   a key we would create holds other bytes
    StoreSetupError (UsageError, exit 2)  the bucket is missing, unreadable, or
                                        lacks the Object Lock asked for: said
                                        before any request to the recordings API

Every write is create-only: `If-None-Match: *` on PutObject and on
CompleteMultipartUpload. A 412 means the key exists; it is success only when
a HEAD of it shows our checksum (an earlier attempt whose answer was lost),
otherwise `StoreConflict`. Nothing here deletes or overwrites an object;
AbortMultipartUpload discards only parts of an upload never completed.

Retries are this module's, not botocore's (turned off): resets, timeouts,
500/502/503/504, SlowDown, RequestTimeout and BadDigest (bytes damaged on
the way: sent again, never accepted) are tried again after a full-jitter
backoff (`retry.backoff_delay`), up to `max_attempts`; expired credentials
make a new client, which resolves the credential chain again (a rotated web
identity token, new instance-profile credentials). The sleep and the random
source are injectable for tests.

Why one module of this size: it is the one boundary with the S3 client; every call, its
checksum, its retry and the translation of its errors live behind it, so nothing else in
the exporter imports aiobotocore or sees a botocore exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from exporter.config import RemoteSettings
from exporter.errors import ArchiveError, UsageError
from exporter.retry import backoff_delay

from .checksums import b64, composite, multipart_etag

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "BadDigest",
        "OperationAborted",
        "ConditionalRequestConflict",
        "Throttling",
        "ThrottlingException",
    }
)
_EXPIRED_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired", "InvalidToken"}
)
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
#: Objects a HEAD may describe as locked until at least a second before what was asked (dates lose ms).
_RETENTION_SLACK = timedelta(seconds=2)


class StoreError(ArchiveError):
    """A request to the object store failed for good (exit 4)."""


class StoreConflict(StoreError):
    """A key the exporter would create already holds other bytes."""


class StoreSetupError(UsageError):
    """The bucket cannot hold this archive as configured (exit 2, before any API request)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectFacts:
    """What a HEAD says of one object version (the read-back recorded with each shipped file)."""

    key: str
    size: int
    etag: str
    version_id: str | None
    checksum_sha256: str | None
    checksum_type: str | None
    lock_mode: str | None
    retain_until: datetime | None
    legal_hold: bool
    sse: str | None

    def matches(self, size: int, checksum: str, etag: str | None) -> bool:
        """Whether these are our bytes: the size, and the SHA-256 (or, where a store keeps none, the ETag)."""
        if self.size != size:
            return False
        if self.checksum_sha256 is not None:
            return self.checksum_sha256 == checksum
        return etag is not None and self.etag == etag


@dataclass(frozen=True, slots=True)
class Listed:
    """One key of a listing, with its size."""

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart upload begun and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime | None


@dataclass(frozen=True, slots=True)
class ListedPart:
    number: int
    size: int
    etag: str
    checksum_sha256: str | None


class Protection:
    """Object Lock and encryption for every object written: the request fields, and the check of a HEAD."""

    __slots__ = ("_clock", "_settings")

    def __init__(self, settings: RemoteSettings, clock: Callable[[], datetime]) -> None:
        self._settings = settings
        self._clock = clock

    @property
    def locking(self) -> bool:
        return self._settings.object_lock is not None or self._settings.legal_hold

    def retain_until(self) -> datetime | None:
        """Until when an object written now must be kept: --retain-until, or now + --retain-days."""
        s = self._settings
        if s.object_lock is None:
            return None
        if s.retain_until is not None:
            return datetime.fromisoformat(s.retain_until)
        return self._clock() + timedelta(days=s.retain_days or 0)

    def write_fields(self) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload fields: retention, legal hold, encryption."""
        s = self._settings
        fields: dict[str, Any] = {}
        until = self.retain_until()
        if s.object_lock is not None and until is not None:
            fields["ObjectLockMode"] = s.object_lock
            fields["ObjectLockRetainUntilDate"] = until
        if s.legal_hold:
            fields["ObjectLockLegalHoldStatus"] = "ON"
        if s.sse is not None:
            fields["ServerSideEncryption"] = s.sse
            if s.sse_kms_key_id is not None:
                fields["SSEKMSKeyId"] = s.sse_kms_key_id
        return fields

    def missing(self, facts: ObjectFacts, wanted_until: datetime | None) -> tuple[bool, bool]:
        """(retention missing, legal hold missing) on an object a HEAD described."""
        s = self._settings
        retention = False
        if s.object_lock is not None and wanted_until is not None:
            retention = (
                facts.lock_mode != s.object_lock
                or facts.retain_until is None
                or facts.retain_until < wanted_until - _RETENTION_SLACK
            )
        return retention, s.legal_hold and not facts.legal_hold


Sleep = Callable[[float], Awaitable[None]]


class ObjectStore:
    """An open client for one bucket, with this archive's protection and retry policy."""

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.protection = Protection(settings, clock)
        self._sleep = sleep
        self._rand = rand
        self._client: Any = None
        self._client_cm: Any = None
        #: Requests tried again, and clients made anew for expired credentials (for tests and logs).
        self.retries = 0
        self.renewals = 0

    # -- the client ------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: RemoteSettings, **kwargs: Any) -> AsyncIterator[ObjectStore]:
        store = cls(settings, **kwargs)
        await store._open_client()
        try:
            yield store
        finally:
            await store._close_client()

    async def open(self) -> None:
        """Make the client (when not used through `connect`)."""
        await self._open_client()

    async def close(self) -> None:
        await self._close_client()

    async def _open_client(self) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise UsageError(
                f"s3:// archives need the optional S3 client ({exc.name} is missing): "
                "pip install 'exporter[s3]'"
            ) from exc

        config = AioConfig(
            # Our own retries (module docstring): one try per botocore call.
            retries={"total_max_attempts": 1, "mode": "standard"},
            # Checksums are ours, given explicitly; botocore adds none of its own.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=16,
        )
        # Region, credentials and endpoint (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, profiles)
        # come from botocore's own chain: the AWS ecosystem's configuration, as users expect.
        self._client_cm = get_session().create_client("s3", config=config)
        self._client = await self._client_cm.__aenter__()

    async def _close_client(self) -> None:
        if self._client_cm is not None:
            cm, self._client_cm, self._client = self._client_cm, None, None
            await cm.__aexit__(None, None, None)

    async def _renew_client(self) -> None:
        """A new client resolves the credential chain again: expired credentials are read anew."""
        self.renewals += 1
        await self._close_client()
        await self._open_client()

    # -- one request, tried again when it is worth it -----------------------------

    async def _call(self, doing: str, key: str | None, request: Callable[[Any], Awaitable[T]]) -> T:
        """`request(client)`, retried on transient failures; other errors become StoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 0
        while True:
            attempt += 1
            try:
                return await request(self._client)
            except ClientError as exc:
                code, status = _error_code(exc)
                if code in _EXPIRED_CODES and attempt < self.settings.max_attempts:
                    log.warning("object store: credentials expired (%s); reading them again", code)
                    await self._renew_client()
                    continue
                if (code in _TRANSIENT_CODES or status in _TRANSIENT_STATUSES) and (
                    attempt < self.settings.max_attempts
                ):
                    await self._back_off(attempt, doing, key, f"{code or status}")
                    continue
                raise
            except (TimeoutError, BotoCoreError, OSError) as exc:
                if attempt >= self.settings.max_attempts:
                    raise StoreError(
                        f"cannot {doing} {self._where(key)} after {attempt} tries: {_short(exc)}; "
                        "what was shipped is kept: check the network and the endpoint, then run "
                        "the same command again"
                    ) from exc
                await self._back_off(attempt, doing, key, type(exc).__name__)

    async def _back_off(self, attempt: int, doing: str, key: str | None, why: str) -> None:
        self.retries += 1
        delay = backoff_delay(
            attempt, base_s=self.settings.backoff_base_s, cap_s=self.settings.backoff_cap_s, rand=self._rand
        )
        log.debug("object store: %s %s failed (%s); again in %.2fs", doing, self._where(key), why, delay)
        await self._sleep(delay)

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{key}" if key is not None else f"s3://{self.bucket}"

    def failed(self, exc: Exception, doing: str, key: str | None) -> StoreError:
        """The StoreError for a ClientError that no retry helps: the key, S3's code, what to do."""
        code, status = _error_code(exc)
        where = self._where(key)
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            hint = (
                "the credentials from the AWS chain are not allowed to; see the IAM policy in the README "
                "(a key under Object Lock can never be written twice, and is not deleted)"
            )
        elif code in _EXPIRED_CODES or code == "InvalidAccessKeyId":
            hint = "the credentials are expired or unknown even after reading them again; renew them"
        else:
            hint = "what was shipped is kept: fix the cause and run the same command again"
        return StoreError(f"cannot {doing} {where}: {code or status} ({_message(exc)}); {hint}")

    async def _checked(self, doing: str, key: str | None, request: Callable[[Any], Awaitable[T]]) -> T:
        from botocore.exceptions import ClientError

        try:
            return await self._call(doing, key, request)
        except ClientError as exc:
            raise self.failed(exc, doing, key) from exc

    # -- the bucket ------------------------------------------------------------

    async def preflight(self) -> None:
        """The bucket exists, we may read it, and has Object Lock and versioning if they are asked for.

        Raises StoreSetupError (exit 2) with what is wrong and how to fix it.
        """
        from botocore.exceptions import ClientError

        bucket = f"s3://{self.bucket}"
        prefix = f"{self.settings.prefix}/" if self.settings.prefix else ""
        try:
            # A listing, not HeadBucket: a policy may allow s3:ListBucket for the prefix only.
            await self._call(
                "reach",
                None,
                lambda c: c.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1),
            )
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("NoSuchBucket", "NotFound", "404"):
                raise StoreSetupError(
                    f"{bucket} does not exist (or is in another account or region); create it first"
                    + (" with Object Lock enabled" if self.protection.locking else "")
                ) from exc
            if status == 403 or code in ("AccessDenied", "403", "Forbidden"):
                raise StoreSetupError(
                    f"{bucket}: access denied; the credentials from the AWS chain (AWS_PROFILE, "
                    "environment, web identity, instance profile) lack s3:ListBucket on it for this "
                    "prefix: see the IAM policy in the README"
                ) from exc
            raise self.failed(exc, "reach", None) from exc
        if not self.protection.locking:
            return
        asked = (
            f"--object-lock {self.settings.object_lock.lower()}"
            if self.settings.object_lock
            else "--legal-hold"
        )
        versioning = await self._checked(
            "read the versioning of", None, lambda c: c.get_bucket_versioning(Bucket=self.bucket)
        )
        status = versioning.get("Status")
        try:
            lock = await self._call(
                "read the Object Lock configuration of",
                None,
                lambda c: c.get_object_lock_configuration(Bucket=self.bucket),
            )
            enabled = lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except ClientError as exc:
            code, _ = _error_code(exc)
            if code != "ObjectLockConfigurationNotFoundError":
                raise self.failed(exc, "read the Object Lock configuration of", None) from exc
            enabled = False
        if not enabled:
            raise StoreSetupError(
                f"{bucket} does not have Object Lock enabled, which {asked} needs: create the bucket "
                "with it (aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket), or "
                "enable it on this one (aws s3api put-object-lock-configuration --bucket NAME "
                "--object-lock-configuration ObjectLockEnabled=Enabled); nothing was sent to the API"
            )
        if status != "Enabled":
            raise StoreSetupError(
                f"{bucket} has versioning {'suspended' if status else 'not enabled'}, and Object Lock "
                f"({asked}) needs it enabled: aws s3api put-bucket-versioning --bucket NAME "
                "--versioning-configuration Status=Enabled; nothing was sent to the API"
            )

    # -- reading ---------------------------------------------------------------

    async def list_keys(self, prefix: str) -> list[Listed]:
        """Every key under `prefix`, with its size, in key order."""
        found: list[Listed] = []
        token: str | None = None
        while True:
            fields: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                fields["ContinuationToken"] = token
            page = await self._checked("list", prefix or None, _request("list_objects_v2", fields))
            found.extend(Listed(o["Key"], int(o.get("Size", 0))) for o in page.get("Contents", ()))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(found, key=lambda item: item.key)

    async def head(self, key: str) -> ObjectFacts | None:
        """The object's facts, read back with its checksum; None when there is no such key."""
        from botocore.exceptions import ClientError

        try:
            answer = await self._call(
                "read back", key, lambda c: c.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            )
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
                return None
            raise self.failed(exc, "read back", key) from exc
        return _facts(key, answer)

    async def get(self, key: str, max_bytes: int) -> bytes:
        """The whole object (a checkpoint segment, a summary); StoreError when it is over `max_bytes`."""

        async def fetch(client: Any) -> bytes:
            answer = await client.get_object(Bucket=self.bucket, Key=key)
            length = int(answer.get("ContentLength", 0))
            if length > max_bytes:
                answer["Body"].close()
                raise StoreError(
                    f"s3://{self.bucket}/{key} is {length} bytes, more than the {max_bytes} such a file "
                    "may have: it is not one this exporter wrote"
                )
            return await _body(answer, length)

        return await self._checked("read", key, fetch)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes `start..end` of the object (one ranged GetObject): one commit for `exporter get`.

        The store must answer with exactly that range (206 and its Content-Range);
        an answer of other bytes (a store that ignores Range sends the whole
        object) is a StoreError, never taken for the range.
        """
        if end <= start:
            return b""
        asked = f"bytes {start}-{end - 1}/"

        async def fetch(client: Any) -> bytes:
            answer = await client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            length = int(answer.get("ContentLength", -1))
            given = str(answer.get("ContentRange") or "")
            if length != end - start or not given.startswith(asked):
                answer["Body"].close()
                raise StoreError(
                    f"s3://{self.bucket}/{key}: asked for bytes {start}..{end}, the store answered "
                    f"{_short(given) or 'without a Content-Range'} ({length} bytes); it does not serve "
                    "ranged reads as S3 does"
                )
            return await _body(answer, length)

        return await self._checked("read", key, fetch)

    async def get_to(self, key: str, fd: int, max_bytes: int) -> int:
        """Write the object into the file `fd` from its start, streamed; the bytes written.

        A try cut short is started over (the file is emptied first), so what is
        left is the whole object or an error.
        """

        async def fetch(client: Any) -> int:
            await asyncio.to_thread(os.ftruncate, fd, 0)
            answer = await client.get_object(Bucket=self.bucket, Key=key)
            length = int(answer.get("ContentLength", 0))
            if length > max_bytes:
                answer["Body"].close()
                raise StoreError(f"s3://{self.bucket}/{key} is {length} bytes, more than {max_bytes}")
            received = 0
            async with answer["Body"] as body:
                while chunk := await body.read(1 << 20):
                    await asyncio.to_thread(os.pwrite, fd, chunk, received)
                    received += len(chunk)
            if received != length:
                raise OSError(f"the object ended after {received} of {length} bytes")
            return received

        return await self._checked("read", key, fetch)

    # -- writing, create-only ----------------------------------------------------

    async def put_new(self, key: str, body: bytes) -> ObjectFacts:
        """Create `key` holding `body`, or find our own bytes there; then read it back, locked as asked.

        StoreConflict when the key already holds other bytes.
        """
        from botocore.exceptions import ClientError

        sha = b64(hashlib.sha256(body).digest())
        md5 = hashlib.md5(body).digest()  # noqa: S324 - Content-MD5, the store's check
        until = self.protection.retain_until()
        fields = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ChecksumSHA256": sha,
            "ContentMD5": b64(md5),
            "IfNoneMatch": "*",
            **self.protection.write_fields(),
        }
        if until is not None and "ObjectLockRetainUntilDate" in fields:
            fields["ObjectLockRetainUntilDate"] = until
        try:
            await self._call("create", key, lambda c: c.put_object(**fields))
        except ClientError as exc:
            code, status = _error_code(exc)
            if status != 412 and code != "PreconditionFailed":
                raise self.failed(exc, "create", key) from exc
        return await self._read_back(key, len(body), sha, f'"{md5.hex()}"', until)

    async def _read_back(
        self, key: str, size: int, checksum: str, etag: str | None, until: datetime | None
    ) -> ObjectFacts:
        """HEAD the key just written (or found there): our bytes, with the retention and hold asked for."""
        facts = await self.head(key)
        if facts is None:
            raise StoreError(
                f"s3://{self.bucket}/{key} was written but a HEAD does not find it; the store is not "
                "read-after-write consistent, or something deleted it: run the same command again"
            )
        if not facts.matches(size, checksum, etag):
            raise StoreConflict(
                f"s3://{self.bucket}/{key} already exists with other content ({facts.size} bytes, "
                f"sha256 {facts.checksum_sha256 or 'not kept'}; ours: {size} bytes, {checksum}): another "
                "run is writing to this prefix, or the prefix holds objects this archive does not list. "
                "Nothing was overwritten; give each export its own prefix, and run one export per prefix "
                "at a time"
            )
        retention, hold = self.protection.missing(facts, until)
        if retention or hold:
            await self._protect(facts, until if retention else None, hold)
            facts = await self.head(key) or facts
            retention, hold = self.protection.missing(facts, until)
            if retention or hold:
                raise StoreError(
                    f"s3://{self.bucket}/{key}: the store did not keep the "
                    f"{'retention' if retention else 'legal hold'} asked for; check its Object Lock support"
                )
        return facts

    async def _protect(self, facts: ObjectFacts, until: datetime | None, hold: bool) -> None:
        """Apply retention and a legal hold to a version the store created without them."""
        version = {"VersionId": facts.version_id} if facts.version_id else {}
        if until is not None:
            retention = {"Mode": self.settings.object_lock, "RetainUntilDate": until}
            await self._checked(
                "set the retention of",
                facts.key,
                lambda c: c.put_object_retention(
                    Bucket=self.bucket, Key=facts.key, Retention=retention, **version
                ),
            )
        if hold:
            await self._checked(
                "set the legal hold of",
                facts.key,
                lambda c: c.put_object_legal_hold(
                    Bucket=self.bucket, Key=facts.key, LegalHold={"Status": "ON"}, **version
                ),
            )

    # -- multipart ------------------------------------------------------------------

    async def start_upload(self, key: str) -> str:
        """Begin a multipart upload of `key` (SHA-256 per part, locked and encrypted as asked); its id."""
        fields = {
            "Bucket": self.bucket,
            "Key": key,
            "ChecksumAlgorithm": "SHA256",
            **self.protection.write_fields(),
        }
        answer = await self._checked("begin an upload of", key, lambda c: c.create_multipart_upload(**fields))
        upload_id: str = answer["UploadId"]
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> tuple[str, bytes]:
        """Send part `number`; its ETag and SHA-256 digest (which the store has checked)."""
        digest = hashlib.sha256(data).digest()
        md5 = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5
        answer = await self._checked(
            f"send part {number} of",
            key,
            lambda c: c.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=b64(digest),
                ContentMD5=b64(md5),
            ),
        )
        returned = answer.get("ChecksumSHA256")
        if returned is not None and returned != b64(digest):
            raise StoreError(
                f"s3://{self.bucket}/{key} part {number}: the store answered another checksum ({returned})"
            )
        return str(answer["ETag"]), digest

    async def list_parts(self, key: str, upload_id: str) -> list[ListedPart] | None:
        """The parts an upload holds, with their checksums; None when it is gone (aborted, completed)."""
        from botocore.exceptions import ClientError

        found: list[ListedPart] = []
        marker = 0
        while True:
            try:
                page = await self._call(
                    "list the parts of",
                    key,
                    _request(
                        "list_parts",
                        {
                            "Bucket": self.bucket,
                            "Key": key,
                            "UploadId": upload_id,
                            "PartNumberMarker": marker,
                        },
                    ),
                )
            except ClientError as exc:
                code, status = _error_code(exc)
                if code == "NoSuchUpload" or status == 404:
                    return None
                raise self.failed(exc, "list the parts of", key) from exc
            for part in page.get("Parts", ()):
                found.append(
                    ListedPart(
                        int(part["PartNumber"]),
                        int(part["Size"]),
                        str(part["ETag"]),
                        part.get("ChecksumSHA256"),
                    )
                )
            if not page.get("IsTruncated"):
                return found
            marker = int(page.get("NextPartNumberMarker", 0))
            if marker <= 0:
                return found

    async def complete_upload(
        self,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str, bytes, bytes]],
        size: int,
    ) -> ObjectFacts:
        """Complete (create-only) from (number, ETag, sha256, md5) per part; read back as `put_new` does."""
        from botocore.exceptions import ClientError

        checksum = composite([digest for _, _, digest, _ in parts])
        etag = multipart_etag([md5 for _, _, _, md5 in parts])
        listed = {
            "Parts": [
                {"PartNumber": number, "ETag": part_etag, "ChecksumSHA256": b64(digest)}
                for number, part_etag, digest, _ in parts
            ]
        }
        until = self.protection.retain_until()
        try:
            await self._call(
                "complete the upload of",
                key,
                lambda c: c.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload=listed,
                    ChecksumSHA256=checksum,
                    IfNoneMatch="*",
                ),
            )
        except ClientError as exc:
            code, status = _error_code(exc)
            if status != 412 and code != "PreconditionFailed":
                raise self.failed(exc, "complete the upload of", key) from exc
            await self.abort_upload(key, upload_id)
        return await self._read_back(key, size, checksum, etag, until)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard an upload's parts (never an object); an upload already gone is fine."""
        from botocore.exceptions import ClientError

        try:
            await self._call(
                "abort the upload of",
                key,
                lambda c: c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
            )
        except ClientError as exc:
            code, status = _error_code(exc)
            if code != "NoSuchUpload" and status != 404:
                raise self.failed(exc, "abort the upload of", key) from exc

    async def uploads(self, prefix: str) -> list[Upload]:
        """Multipart uploads under `prefix` neither completed nor aborted."""
        found: list[Upload] = []
        key_marker: str | None = None
        id_marker: str | None = None
        while True:
            fields: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if key_marker:
                fields["KeyMarker"] = key_marker
                if id_marker:
                    fields["UploadIdMarker"] = id_marker
            page = await self._checked(
                "list the uploads under", prefix or None, _request("list_multipart_uploads", fields)
            )
            for upload in page.get("Uploads", ()):
                found.append(Upload(upload["Key"], upload["UploadId"], upload.get("Initiated")))
            if not page.get("IsTruncated"):
                return found
            key_marker, id_marker = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
            if not key_marker:
                return found


async def _body(answer: Mapping[str, Any], length: int) -> bytes:
    """A GetObject answer's body, all `length` bytes of it (OSError, so tried again, when it is cut)."""
    async with answer["Body"] as body:
        data: bytes = await body.read()
    if len(data) != length:
        raise OSError(f"the object ended after {len(data)} of {length} bytes")
    return data


def _request(operation: str, fields: dict[str, Any]) -> Callable[[Any], Awaitable[Any]]:
    """A request for `_call`: the client's `operation` with these fields (bound now, not at call time)."""
    bound = dict(fields)

    def request(client: Any) -> Awaitable[Any]:
        return getattr(client, operation)(**bound)  # type: ignore[no-any-return]

    return request


def _error_code(exc: Exception) -> tuple[str, int]:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return str(error.get("Code") or ""), status


def _message(exc: Exception) -> str:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    return _short(str((response.get("Error") or {}).get("Message") or exc))


def _short(exc: object, limit: int = 200) -> str:
    """An error's text on one line, cut (it may echo a server's body; never a credential of ours)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _facts(key: str, answer: Mapping[str, Any]) -> ObjectFacts:
    until = answer.get("ObjectLockRetainUntilDate")
    return ObjectFacts(
        key=key,
        size=int(answer.get("ContentLength", -1)),
        etag=str(answer.get("ETag", "")),
        version_id=answer.get("VersionId"),
        checksum_sha256=answer.get("ChecksumSHA256"),
        checksum_type=answer.get("ChecksumType"),
        lock_mode=answer.get("ObjectLockMode"),
        retain_until=until.astimezone(UTC) if isinstance(until, datetime) else None,
        legal_hold=answer.get("ObjectLockLegalHoldStatus") == "ON",
        sse=answer.get("ServerSideEncryption"),
    )
