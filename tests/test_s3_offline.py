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

from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import TOKEN
from s3_proxy import fault_proxy
from s3_support import Ran, aws_env, in_process, make_bucket, with_client

IDS = [f"rec-{n}" for n in range(90)]


def _export(
    capsys: Any,
    env: dict[str, str],
    api: FakeServerHandle,
    tmp_path: Path,
    url: str,
    manifest: Path,
    *extra: str,
) -> Ran:
    done = in_process(
        capsys, env, "export", str(manifest), "--base-url", api.url, "--out", url, "--work-dir",
        str(tmp_path / "work"), "--rate", "0", "--no-progress", "--upload-bytes", "150KB", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_sharded_exports_verify_together(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Two shards into shard-{shard}: HEAD-only and deep verify prove the union complete and disjoint."""
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    for shard in ("0/2", "1/2"):
        url = f"s3://{bucket}/export/shard-{{shard}}"
        _export(capsys, env, api, tmp_path / shard[0], url, manifest, "--shard", shard)
    urls = [f"s3://{bucket}/export/shard-0", f"s3://{bucket}/export/shard-1"]
    for deep in ([], ["--deep"]):
        done = in_process(capsys, env, "verify", *urls, "--manifest", str(manifest), *deep)
        assert done.returncode == 0, done.stdout
        assert "verified 2 archives" in done.stdout
        assert "90 records" in done.stdout
    alone = in_process(capsys, env, "verify", urls[0], "--manifest", str(manifest))
    assert alone.returncode == 1
    assert "is in no archive" in alone.stdout


def test_an_object_written_over_is_found_by_a_head(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """A new version of a records key (someone else's plain PUT): its checksum and version give it away."""
    bucket = make_bucket(s3_endpoint, versioning=True)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    _export(capsys, env, api, tmp_path, f"s3://{bucket}/a", manifest)
    url = f"s3://{bucket}/a"

    async def overwrite(client: Any) -> None:
        await client.put_object(Bucket=bucket, Key="a/records-00001.ndjson", Body=b'{"id":"rec-0"}\n')

    with_client(s3_endpoint, overwrite)
    done = in_process(capsys, env, "verify", url)
    assert done.returncode == 1
    assert f"{url}/records-00001.ndjson: is " in done.stdout  # its size changed
    deep = in_process(capsys, env, "verify", url, "--deep")
    assert deep.returncode == 1
    assert f"{url}/records-00001.ndjson" in deep.stdout
    assert "exporter-verify-" not in deep.stdout, "findings name the URL, not the private copy"


def test_a_missing_segment_is_a_problem(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    _export(capsys, env, api, tmp_path, f"s3://{bucket}/a", manifest)

    async def delete(client: Any) -> None:
        await client.delete_object(Bucket=bucket, Key="a/checkpoint.d/00000001.ndjson")

    with_client(s3_endpoint, delete)
    done = in_process(capsys, env, "verify", f"s3://{bucket}/a")
    assert done.returncode == 1
    assert "checkpoint segment 1 is missing" in done.stdout


def test_head_only_verify_downloads_no_records(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Without --deep, verify GETs only checkpoint segments (and with --manifest the failure list)."""
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    _export(capsys, env, api, tmp_path, f"s3://{bucket}/a", manifest)
    with fault_proxy(s3_endpoint) as proxy:
        proxied = {**env, "AWS_ENDPOINT_URL_S3": proxy.url}
        done = in_process(capsys, proxied, "verify", f"s3://{bucket}/a", "--manifest", str(manifest))
        gets = [e.target for e in proxy.requests("GET") if "list-type" not in e.target]
        heads = [e.target for e in proxy.requests("HEAD")]
    assert done.returncode == 0, done.stdout
    assert gets, "the checkpoint was read"
    assert not [g for g in gets if "/records-" in g]
    assert [h for h in heads if "/records-" in h]


def test_status_and_dry_run_of_a_bucket(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    url = f"s3://{bucket}/nightly"
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:50])
    _export(capsys, env, api, tmp_path, url, manifest)
    status = in_process(capsys, env, "status", url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"archive {url}\n")
    assert "complete (exit 0)" in status.stdout
    assert "MISSING" not in status.stdout
    assert "exporter-status-" not in status.stdout
    as_json = json.loads(in_process(capsys, env, "status", url, "--json").stdout)
    assert as_json["archive"] == url
    bigger = write_manifest(tmp_path / "more.txt", IDS)
    plan = in_process(
        capsys, env, "export", str(bigger), "--base-url", api.url, "--out", url, "--dry-run", "--json"
    )
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert (report["out"], report["to_fetch"], report["already_archived"]) == (url, 40, 50)
    fresh = in_process(
        capsys, env, "export", str(bigger), "--base-url", api.url, "--out", f"{url}-new", "--dry-run"
    )
    assert f"archive {url}-new: does not exist yet" in fresh.stdout
    assert api.stats()["requests_total"] == 50


def test_a_prefix_without_an_archive_is_a_usage_error(s3_endpoint: str, tmp_path: Path, capsys: Any) -> None:
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path)
    for command in (["verify"], ["verify", "--deep"], ["status"]):
        done = in_process(capsys, env, command[0], f"s3://{bucket}/nothing", *command[1:])
        assert done.returncode == 2, done.stderr
        assert f"s3://{bucket}/nothing is not an archive" in done.stderr
