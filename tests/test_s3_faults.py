"""Faults of the object store and the work dir during whole exports, through the fault proxy.

BadDigest, 503 SlowDown, 500, resets and expired credentials on the way are
retried and the archive is whole; a store that stays down ends the run with
exit 4 and one line naming the key, and the same command later ships what
the work dir kept, without asking the API again; a full work dir is exit 4
too, and a rerun completes the archive exactly once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import TOKEN, export, make_config
from s3_proxy import Rule, fault_proxy
from s3_support import ACCESS_KEY, aws_env, download, in_process, make_bucket, settings

from exporter.config import ArchiveSettings
from exporter.errors import ExitCode

IDS = [f"rec-{n}" for n in range(150)]


def _verified(endpoint: str, bucket: str, prefix: str, tmp_path: Path, manifest: Path) -> None:
    from exporter.config import ManifestSource
    from exporter.offline.verify import verify_archives

    copy = download(endpoint, bucket, prefix, tmp_path / "copy")
    report = verify_archives([copy], manifest=ManifestSource(path=manifest))
    assert report.ok, [str(f) for f in report.findings]


def test_store_faults_during_an_export_are_retried(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Damaged bodies, SlowDown, 500, a reset and expired credentials: exit 0, every id once."""
    bucket = make_bucket(s3_endpoint, lock=True)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    with fault_proxy(s3_endpoint) as proxy:
        proxy.add(Rule("corrupt", method="PUT", path="/records-", times=2))
        proxy.add(Rule("answer", method="PUT", path="/checkpoint.d/", status=503, code="SlowDown", times=2))
        proxy.add(Rule("answer", method="HEAD", path="/records-", status=500, code="InternalError"))
        proxy.add(Rule("reset", method="PUT", path="/summary.d/"))
        proxy.add(Rule("answer", method="PUT", path="/failed.d/", status=400, code="ExpiredToken"))
        env = aws_env(proxy.url, tmp_path, EXPORTER_TOKEN=TOKEN)
        done = in_process(
            capsys, env, "export", str(manifest), "--base-url", api.url, "--out", f"s3://{bucket}/f",
            "--work-dir", str(tmp_path / "work"), "--rate", "0", "--upload-bytes", "300KB", "--no-progress",
            "--object-lock", "compliance", "--retain-days", "1",
        )  # fmt: skip
        fired = [(rule.action, rule.code, rule.fired) for rule in proxy.rules]
    assert done.returncode == 0, done.stderr
    assert fired == [
        ("corrupt", "SlowDown", 2),
        ("answer", "SlowDown", 2),
        ("answer", "InternalError", 1),
        ("reset", "SlowDown", 1),
        ("answer", "ExpiredToken", 1),
    ]
    assert "credentials expired (ExpiredToken); reading them again" in done.stderr
    assert ACCESS_KEY not in done.stderr
    _verified(s3_endpoint, bucket, "f", tmp_path, manifest)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, tmp_path: Path) -> str:
    for name, value in aws_env(s3_endpoint, tmp_path).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return s3_endpoint


def test_a_store_that_stays_down_is_exit_4_and_the_rerun_ships_the_rest(
    api: FakeServerHandle, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PUT refused: exit 4 naming the key; later, the same command ships from the work dir."""
    bucket = make_bucket(aws)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    remote = settings(bucket, tmp_path / "work", prefix="down", max_attempts=3)
    config = make_config(manifest, tmp_path / "unused", api.url)
    config = replace(config, archive=ArchiveSettings(out_dir=tmp_path / "work" / "stage"), remote=remote)
    with fault_proxy(aws) as proxy:
        proxy.add(Rule("answer", method="PUT", status=503, code="ServiceUnavailable", times=10_000))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        outcome = asyncio.run(export(config))
    assert outcome.exit_code == ExitCode.ARCHIVE
    assert f"cannot create s3://{bucket}/down/records-00001.ndjson: ServiceUnavailable" in (
        outcome.message or ""
    )
    assert "run the same command again" in (outcome.message or "")
    fetched = api.stats()["requests_total"]
    assert fetched == len(IDS)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws)
    again = asyncio.run(export(config))
    assert again.exit_code == ExitCode.OK, again.message
    assert api.stats()["requests_total"] == fetched, "what the work dir kept was fetched again"
    _verified(aws, bucket, "down", tmp_path, manifest)


def test_a_full_work_dir_is_exit_4_and_a_rerun_completes(
    api: FakeServerHandle, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fdatasync failing with ENOSPC in the work dir: exit 4, one clear line; the rerun is whole."""
    bucket = make_bucket(aws)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    remote = settings(bucket, tmp_path / "work", prefix="full", upload_every_s=0.2)
    config = make_config(manifest, tmp_path / "unused", api.url, rate=200)
    config = replace(config, archive=ArchiveSettings(out_dir=tmp_path / "work" / "stage"), remote=remote)
    real = os.fdatasync
    calls = {"n": 0}

    def failing(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", failing)
    outcome = asyncio.run(export(config))
    assert outcome.exit_code == ExitCode.ARCHIVE
    assert "No space left on device" in (outcome.message or "")
    monkeypatch.setattr(os, "fdatasync", real)
    again = asyncio.run(export(replace(config, remote=replace(remote, work_dir=tmp_path / "elsewhere"))))
    assert again.exit_code == ExitCode.OK, again.message
    _verified(aws, bucket, "full", tmp_path, manifest)


def test_expired_credentials_are_replaced_by_the_chain(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """A profile's credential_process gives a new key each time: the expired one is replaced, not retried."""
    bucket = make_bucket(s3_endpoint)
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:20])
    counter = tmp_path / "issued"
    issuer = tmp_path / "issue-credentials.py"
    issuer.write_text(
        "import json, pathlib, sys\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "n = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(n))\n"
        'key = {"Version": 1, "AccessKeyId": f"AKIAROTATED{n:05d}", "SecretAccessKey": "rotating"}\n'
        "print(json.dumps(key))\n"
    )
    (tmp_path / "aws-config").write_text(
        f"[profile rotating]\nregion = us-east-1\ncredential_process = {sys.executable} {issuer}\n"
    )
    with fault_proxy(s3_endpoint) as proxy:
        proxy.add(
            Rule("answer", status=400, code="ExpiredToken", access_key="AKIAROTATED00001", times=10_000)
        )
        env = aws_env(proxy.url, tmp_path, EXPORTER_TOKEN=TOKEN, AWS_PROFILE="rotating")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(name)
        done = in_process(
            capsys, env, "export", str(manifest), "--base-url", api.url, "--out", f"s3://{bucket}/rot",
            "--work-dir", str(tmp_path / "work"), "--rate", "0", "--no-progress",
        )  # fmt: skip
        refused = proxy.requests()
    assert done.returncode == 0, done.stderr
    assert int(counter.read_text()) >= 2, "the chain was asked again"
    assert any(entry.status == 400 for entry in refused)
    _verified(s3_endpoint, bucket, "rot", tmp_path, manifest)
