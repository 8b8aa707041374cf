"""The store layer against a real S3-compatible server (ministack) and a fault proxy in front of it.

Create-only puts (412 is success only for our own bytes), the checksum the
store verifies (a corrupted body is BadDigest, retried, never accepted),
multipart with per-part SHA-256 and a composite at completion, HEAD
read-back, retention and legal hold on every object, the Object Lock
preflight, and retries for 503 SlowDown, resets and expired credentials.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from s3_proxy import FaultProxy, Rule, fault_proxy
from s3_support import aws_env, make_bucket, run, settings, with_client

from exporter.remote.checksums import composite
from exporter.remote.store import ObjectStore, StoreConflict, StoreError, StoreSetupError


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, tmp_path: Path) -> str:
    """The environment an in-process store reads through botocore's chain: ministack's endpoint."""
    for name, value in aws_env(s3_endpoint, tmp_path).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture
def proxy(aws: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    with fault_proxy(aws) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", running.url)
        yield running


async def _no_sleep(_: float) -> None:
    return None


def _store(bucket: str, tmp_path: Path, **changes: Any) -> Any:
    return ObjectStore.connect(settings(bucket, tmp_path, **changes), sleep=_no_sleep)


def _body(endpoint: str, bucket: str, key: str) -> bytes:
    async def get(client: Any) -> bytes:
        answer = await client.get_object(Bucket=bucket, Key=key)
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data

    return with_client(endpoint, get)


def test_create_only_put_and_read_back(aws: str, tmp_path: Path) -> None:
    """A put creates the key with its SHA-256 checked and read back; the same bytes again are success."""
    bucket = make_bucket(aws)

    async def go() -> tuple[Any, Any]:
        async with _store(bucket, tmp_path) as store:
            first = await store.put_new("a/one", b"hello\n")
            again = await store.put_new("a/one", b"hello\n")
            return first, again

    first, again = run(go())
    expected = base64.b64encode(hashlib.sha256(b"hello\n").digest()).decode()
    assert first.checksum_sha256 == expected
    assert first.size == 6
    assert again.version_id == first.version_id  # nothing new was written
    assert _body(aws, bucket, "a/one") == b"hello\n"


def test_other_bytes_at_an_existing_key_are_a_conflict_never_an_overwrite(aws: str, tmp_path: Path) -> None:
    """If-None-Match: * refuses the write; the 412 is a conflict naming the key, the object unchanged."""
    bucket = make_bucket(aws)

    async def go() -> None:
        async with _store(bucket, tmp_path) as store:
            await store.put_new("k", b"ours\n")
            await store.put_new("k", b"theirs\n")

    with pytest.raises(StoreConflict, match=rf"s3://{bucket}/k already exists with other content"):
        run(go())
    assert _body(aws, bucket, "k") == b"ours\n"


def test_a_body_damaged_on_the_way_is_refused_and_sent_again(
    proxy: FaultProxy, aws: str, tmp_path: Path
) -> None:
    """The proxy flips a byte: the store answers BadDigest, the put is retried, the object holds our bytes."""
    bucket = make_bucket(aws)
    proxy.add(Rule("corrupt", method="PUT", path="/damaged", times=2))

    async def go() -> int:
        async with _store(bucket, tmp_path) as store:
            await store.put_new("damaged", b"x" * 5000)
            retries: int = store.retries
            return retries

    assert run(go()) == 2
    statuses = [entry.status for entry in proxy.requests("PUT", "/damaged")]
    assert statuses == [400, 400, 200]
    assert _body(aws, bucket, "damaged") == b"x" * 5000


def test_bad_digest_is_never_accepted(proxy: FaultProxy, aws: str, tmp_path: Path) -> None:
    """When every try arrives damaged, the put fails with exit 4 naming the key, and no object exists."""
    bucket = make_bucket(aws)
    proxy.add(Rule("corrupt", method="PUT", path="/never", times=100))

    async def go() -> None:
        async with _store(bucket, tmp_path, max_attempts=3) as store:
            await store.put_new("never", b"y" * 100)

    with pytest.raises(StoreError, match=rf"s3://{bucket}/never: BadDigest"):
        run(go())
    assert list(_keys(aws, bucket)) == []


def _keys(endpoint: str, bucket: str) -> dict[str, int]:
    from s3_support import list_keys

    return list_keys(endpoint, bucket)


def test_slowdown_500_and_resets_are_retried(proxy: FaultProxy, aws: str, tmp_path: Path) -> None:
    """503 SlowDown, 500 and a reset mid-body, each once, then the put goes through."""
    bucket = make_bucket(aws)
    proxy.add(Rule("answer", method="PUT", path="/flaky", status=503, code="SlowDown"))
    proxy.add(Rule("answer", method="PUT", path="/flaky", status=500, code="InternalError"))
    proxy.add(Rule("reset", method="PUT", path="/flaky"))

    async def go() -> int:
        async with _store(bucket, tmp_path) as store:
            await store.put_new("flaky", b"z" * 20000)
            retries: int = store.retries
            return retries

    assert run(go()) >= 2  # the reset may be tried again below us, by the HTTP client
    assert [(e.action, e.status) for e in proxy.requests("PUT", "/flaky")] == [
        ("answer SlowDown", 503),
        ("answer InternalError", 500),
        ("reset", None),
        ("forward", 200),
    ]
    assert _body(aws, bucket, "flaky") == b"z" * 20000


def test_a_lost_answer_is_found_to_be_ours(proxy: FaultProxy, aws: str, tmp_path: Path) -> None:
    """The first put's answer is lost: the retry's 412 is success, because the HEAD shows our bytes."""
    bucket = make_bucket(aws)

    async def go() -> Any:
        async with _store(bucket, tmp_path) as store:
            await store.put_new("lost", b"payload\n")  # stored
            proxy.add(Rule("answer", method="PUT", path="/lost", status=500, code="InternalError"))
            return await store.put_new("lost", b"payload\n")

    facts = run(go())
    assert facts.size == 8
    assert [e.status for e in proxy.requests("PUT", "/lost")] == [200, 500, 412]


def test_expired_credentials_are_read_again(proxy: FaultProxy, aws: str, tmp_path: Path) -> None:
    """ExpiredToken makes a new client, which reads the credential chain again; the put then succeeds."""
    bucket = make_bucket(aws)
    proxy.add(Rule("answer", method="PUT", path="/creds", status=400, code="ExpiredToken", times=2))

    async def go() -> int:
        async with _store(bucket, tmp_path) as store:
            await store.put_new("creds", b"c")
            renewals: int = store.renewals
            return renewals

    assert run(go()) == 2


def test_multipart_with_part_checksums_and_a_composite(proxy: FaultProxy, aws: str, tmp_path: Path) -> None:
    """Parts carry their SHA-256 (damaged: BadDigest, sent again); completion checks the composite."""
    bucket = make_bucket(aws)
    data = [bytes([65 + n]) * (64 << 10) for n in range(3)]
    proxy.add(Rule("corrupt", method="PUT", path="partNumber=2"))

    async def go() -> Any:
        async with _store(bucket, tmp_path) as store:
            upload = await store.start_upload("big")
            parts = []
            for number, chunk in enumerate(data, 1):
                etag, digest = await store.upload_part("big", upload, number, chunk)
                parts.append((number, etag, digest, hashlib.md5(chunk).digest()))
            listed = await store.list_parts("big", upload)
            assert listed is not None
            assert [p.checksum_sha256 for p in listed] == [
                base64.b64encode(d).decode() for _, _, d, _ in parts
            ]
            return await store.complete_upload("big", upload, parts, sum(map(len, data)))

    facts = run(go())
    assert facts.checksum_sha256 == composite([hashlib.sha256(d).digest() for d in data])
    assert _body(aws, bucket, "big") == b"".join(data)
    assert [e.status for e in proxy.requests("PUT", "partNumber=2")] == [400, 200]


def test_retention_and_legal_hold_on_every_object(aws: str, tmp_path: Path) -> None:
    """Single puts and multipart objects alike are locked as asked (read back by HEAD): no delete."""
    bucket = make_bucket(aws, lock=True)
    until = datetime.now(UTC) + timedelta(days=3)

    async def go() -> tuple[Any, Any]:
        async with _store(
            bucket, tmp_path, object_lock="COMPLIANCE", retain_days=3, legal_hold=True
        ) as store:
            await store.preflight()
            single = await store.put_new("one", b"1")
            upload = await store.start_upload("two")
            etag, digest = await store.upload_part("two", upload, 1, b"22")
            multi = await store.complete_upload(
                "two", upload, [(1, etag, digest, hashlib.md5(b"22").digest())], 2
            )
            return single, multi

    single, multi = run(go())
    for facts in (single, multi):
        assert facts.lock_mode == "COMPLIANCE"
        assert facts.retain_until is not None
        assert facts.retain_until >= until - timedelta(minutes=5)
        assert facts.legal_hold

    async def delete(client: Any) -> str:
        try:
            await client.delete_object(Bucket=bucket, Key="one", VersionId=single.version_id)
        except Exception as exc:
            return str(exc)
        return "deleted"

    assert "AccessDenied" in with_client(aws, delete)


@pytest.mark.parametrize(
    ("lock", "versioning", "message"),
    [
        (False, False, "does not have Object Lock enabled, which --object-lock compliance needs"),
        (False, True, "does not have Object Lock enabled"),
    ],
)
def test_preflight_says_what_the_bucket_lacks(
    aws: str, tmp_path: Path, lock: bool, versioning: bool, message: str
) -> None:
    """--object-lock on a bucket without Object Lock: a usage error (exit 2) saying how to fix it."""
    bucket = make_bucket(aws, lock=lock, versioning=versioning)

    async def go() -> None:
        async with _store(bucket, tmp_path, object_lock="COMPLIANCE", retain_days=1) as store:
            await store.preflight()

    with pytest.raises(StoreSetupError, match=message):
        run(go())


def test_preflight_of_a_missing_bucket(aws: str, tmp_path: Path) -> None:
    async def go() -> None:
        async with _store("no-such-bucket-here", tmp_path) as store:
            await store.preflight()

    with pytest.raises(StoreSetupError, match="s3://no-such-bucket-here does not exist"):
        run(go())
