"""The read-only commands on archives in object storage: verify (HEAD only, and --deep), status, --dry-run.

Sharded exports to s3://BUCKET/export/shard-{shard} verify together against
one manifest; an object written over after the export (a new version of its
key) or a checkpoint segment gone is found by a HEAD-only verify, which
downloads no records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import TOKEN, cli, write_manifest
from fake_api import FakeServerHandle
from s3_proxy import fault_proxy
from s3_support import aws_env, make_bucket, with_client

IDS = [f"rec-{n}" for n in range(90)]


def _export(
    api: FakeServerHandle, env: dict[str, str], tmp_path: Path, url: str, manifest: Path, *extra: str
) -> None:
    done = cli(
        "export", str(manifest), "--base-url", api.url, "--out", url, "--work-dir", str(tmp_path / "work"),
        "--rate", "0", "--no-progress", "--upload-bytes", "150KB", *extra, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_sharded_exports_verify_together(api: FakeServerHandle, s3_endpoint: str, tmp_path: Path) -> None:
    """Two shards into shard-{shard}: HEAD-only and deep verify prove the union complete and disjoint."""
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    for shard in ("0/2", "1/2"):
        _export(
            api, env, tmp_path / shard[0], f"s3://{bucket}/export/shard-{{shard}}", manifest, "--shard", shard
        )
    urls = [f"s3://{bucket}/export/shard-0", f"s3://{bucket}/export/shard-1"]
    for deep in ([], ["--deep"]):
        done = cli("verify", *urls, "--manifest", str(manifest), *deep, env=env)
        assert done.returncode == 0, done.stdout
        assert "verified 2 archives" in done.stdout
        assert "90 records" in done.stdout
    alone = cli("verify", urls[0], "--manifest", str(manifest), env=env)
    assert alone.returncode == 1
    assert "is in no archive" in alone.stdout


def test_an_object_written_over_is_found_by_a_head(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """A new version of a records key (someone else's plain PUT): its checksum and version give it away."""
    bucket = make_bucket(s3_endpoint, versioning=True)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    _export(api, env, tmp_path, f"s3://{bucket}/a", manifest)
    url = f"s3://{bucket}/a"
    assert cli("verify", url, env=env).returncode == 0

    async def overwrite(client: Any) -> None:
        await client.put_object(Bucket=bucket, Key="a/records-00001.ndjson", Body=b'{"id":"rec-0"}\n')

    with_client(s3_endpoint, overwrite)
    done = cli("verify", url, env=env)
    assert done.returncode == 1
    assert f"{url}/records-00001.ndjson: is " in done.stdout  # its size changed
    deep = cli("verify", url, "--deep", env=env)
    assert deep.returncode == 1
    assert f"{url}/records-00001.ndjson" in deep.stdout
    assert "exporter-verify-" not in deep.stdout, "findings name the URL, not the private copy"


def test_a_missing_segment_is_a_problem(api: FakeServerHandle, s3_endpoint: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    _export(api, env, tmp_path, f"s3://{bucket}/a", manifest)

    async def delete(client: Any) -> None:
        await client.delete_object(Bucket=bucket, Key="a/checkpoint.d/00000001.ndjson")

    with_client(s3_endpoint, delete)
    done = cli("verify", f"s3://{bucket}/a", env=env)
    assert done.returncode == 1
    assert "checkpoint segment 1 is missing" in done.stdout


def test_head_only_verify_downloads_no_records(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """Without --deep, verify GETs only checkpoint segments (and with --manifest the failure list)."""
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    _export(api, env, tmp_path, f"s3://{bucket}/a", manifest)
    with fault_proxy(s3_endpoint) as proxy:
        done = cli(
            "verify",
            f"s3://{bucket}/a",
            "--manifest",
            str(manifest),
            env={**env, "AWS_ENDPOINT_URL_S3": proxy.url},
        )
        gets = [e.target for e in proxy.requests("GET") if "list-type" not in e.target]
        heads = [e.target for e in proxy.requests("HEAD")]
    assert done.returncode == 0, done.stdout
    assert gets, "the checkpoint was read"
    assert not [g for g in gets if "/records-" in g]
    assert [h for h in heads if "/records-" in h]


def test_status_and_dry_run_of_a_bucket(api: FakeServerHandle, s3_endpoint: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    url = f"s3://{bucket}/nightly"
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:50])
    _export(api, env, tmp_path, url, manifest)
    status = cli("status", url, env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"archive {url}\n")
    assert "complete (exit 0)" in status.stdout
    assert "MISSING" not in status.stdout
    assert "exporter-status-" not in status.stdout
    as_json = json.loads(cli("status", url, "--json", env=env).stdout)
    assert as_json["archive"] == url
    bigger = write_manifest(tmp_path / "more.txt", IDS)
    plan = cli("export", str(bigger), "--base-url", api.url, "--out", url, "--dry-run", "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert (report["out"], report["to_fetch"], report["already_archived"]) == (url, 40, 50)
    fresh = cli("export", str(bigger), "--base-url", api.url, "--out", f"{url}-new", "--dry-run", env=env)
    assert f"archive {url}-new: does not exist yet" in fresh.stdout
    assert api.stats()["requests_total"] == 50
