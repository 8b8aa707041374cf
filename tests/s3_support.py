"""Helpers for the object-storage tests: ministack's endpoint, buckets, and AWS settings for a process.

The `s3_server` fixture (conftest.py) starts ministack (`scripts/ministack_server.py`)
once per session on loopback; each test makes its own bucket through `make_bucket`,
so tests share no state. Credentials are throwaway values ministack accepts; the
tests that check secrets never leak grep every output for them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from exporter.config import RemoteSettings

T = TypeVar("T")

ACCESS_KEY = "AKIATESTKEY7Q4Z"
SECRET_KEY = "s3cr3t-Wk9Lq2Zx"
REGION = "us-east-1"
_NAMES = itertools.count(1)


def aws_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment an exporter process gets: ministack's endpoint and throwaway credentials only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("EXPORTER_TOKEN", "HTTPS_PROXY", "https_proxy")
    }
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(extra)
    return env


def bucket_name(tag: str = "t") -> str:
    return f"exp-{tag}-{os.getpid()}-{next(_NAMES)}"


def settings(bucket: str, work_dir: Path, prefix: str = "archive", **changes: Any) -> RemoteSettings:
    """Remote settings for tests: no backoff to speak of, small parts allowed."""
    base = RemoteSettings(
        bucket=bucket,
        prefix=prefix,
        work_dir=work_dir,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        max_attempts=5,
    )
    return replace(base, **changes)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def raw_client(endpoint: str) -> Any:
    """A plain aiobotocore client context manager for setting up and inspecting buckets."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    return get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=AioConfig(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        ),
    )


def make_bucket(endpoint: str, *, lock: bool = False, versioning: bool | None = None, tag: str = "t") -> str:
    """A new bucket: with Object Lock (which turns versioning on), or plain; its name."""
    name = bucket_name(tag)

    async def create() -> None:
        async with raw_client(endpoint) as client:
            await client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
            if versioning:
                await client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    run(create())
    return name


def with_client(endpoint: str, use: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        async with raw_client(endpoint) as client:
            return await use(client)

    return run(go())


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """key -> size of every object under `prefix`."""

    async def go(client: Any) -> dict[str, int]:
        found: dict[str, int] = {}
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                found[item["Key"]] = item["Size"]
        return found

    return with_client(endpoint, go)


def download(endpoint: str, bucket: str, prefix: str, target: Path) -> Path:
    """`aws s3 cp --recursive s3://bucket/prefix target`: every object under prefix, as files."""

    async def go(client: Any) -> None:
        paginator = client.get_paginator("list_objects_v2")
        start = f"{prefix}/" if prefix else ""
        async for page in paginator.paginate(Bucket=bucket, Prefix=start):
            for item in page.get("Contents", ()):
                answer = await client.get_object(Bucket=bucket, Key=item["Key"])
                async with answer["Body"] as body:
                    data = await body.read()
                path = target / item["Key"][len(start) :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

    target.mkdir(parents=True, exist_ok=True)
    with_client(endpoint, go)
    return target


@dataclass(frozen=True)
class Ran:
    """What `exporter ...` did, run in this process: its exit code and output."""

    returncode: int
    stdout: str
    stderr: str


def in_process(capsys: Any, env: dict[str, str], *args: str) -> Ran:
    """`exporter ARGS` in this process, with exactly `env` as the environment (no interpreter to start).

    Faster than a subprocess by the interpreter's start and botocore's imports;
    for commands whose exit code and output are the point, not crashes or signals.
    """
    from unittest import mock

    from exporter.cli import main

    capsys.readouterr()
    with mock.patch.dict(os.environ, env, clear=True):
        code = main(list(args))
    out, err = capsys.readouterr()
    return Ran(code, out, err)
