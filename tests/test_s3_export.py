"""`exporter export --out s3://...` end to end: real exporter processes, the fake API, ministack.

What the bucket holds after a run: records files under their local names
that zcat and DuckDB read, checkpoint segments that `exporter verify` of a
downloaded copy reads as a checkpoint, every object written once (one
version each) and locked as asked; a rerun with an empty work dir resumes
from the bucket alone; no secret reaches any output; a local run never
imports the S3 client.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import ROOT, TOKEN
from s3_support import (
    ACCESS_KEY,
    SECRET_KEY,
    Ran,
    aws_env,
    download,
    in_process,
    list_keys,
    make_bucket,
    with_client,
)

IDS = [f"rec-{n}" for n in range(120)]


def s3_export(
    capsys: Any,
    api: FakeServerHandle,
    endpoint: str,
    tmp_path: Path,
    url: str,
    manifest: Path,
    *extra: str,
    work: str = "work",
) -> Ran:
    args = [
        "export",
        str(manifest),
        "--base-url",
        api.url,
        "--out",
        url,
        "--work-dir",
        str(tmp_path / work),
        "--rate",
        "0",
        "--no-progress",
        *extra,
    ]
    return in_process(capsys, aws_env(endpoint, tmp_path, EXPORTER_TOKEN=TOKEN), *args)


def versions(endpoint: str, bucket: str) -> dict[str, int]:
    async def go(client: Any) -> dict[str, int]:
        found: dict[str, int] = {}
        answer = await client.list_object_versions(Bucket=bucket)
        for version in answer.get("Versions", ()):
            found[version["Key"]] = found.get(version["Key"], 0) + 1
        return found

    return with_client(endpoint, go)


def test_export_to_a_bucket_reads_as_a_local_archive(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Gzip pieces that zcat and DuckDB read, segments that verify reads; every object one version."""
    bucket = make_bucket(s3_endpoint, lock=True)
    manifest = write_manifest(tmp_path / "ids.txt", IDS)
    done = s3_export(
        capsys,
        api,
        s3_endpoint,
        tmp_path,
        f"s3://{bucket}/exports/nightly",
        manifest,
        "--compress",
        "gzip",
        "--compress-batch",
        "100KB",
        "--upload-bytes",
        "60KB",
        "--object-lock",
        "governance",
        "--retain-days",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert f"exported 120 recordings to s3://{bucket}/exports/nightly" in done.stderr
    keys = list_keys(s3_endpoint, bucket)
    records = sorted(k for k in keys if "/records-" in k)
    assert len(records) >= 2, "pieces are sealed at --upload-bytes"
    assert all(k.startswith("exports/nightly/") for k in keys)
    assert set(versions(s3_endpoint, bucket).values()) == {1}, "every object was written once"
    copy = download(s3_endpoint, bucket, "exports/nightly", tmp_path / "copy")
    verified = in_process(capsys, {}, "verify", str(copy), "--manifest", str(manifest))
    assert verified.returncode == 0, verified.stdout
    lines = b"".join(gzip.decompress(p.read_bytes()) for p in sorted(copy.glob("records-*.ndjson.gz")))
    assert sorted(json.loads(line)["id"] for line in lines.splitlines()) == sorted(IDS)
    relation = duckdb.sql(f"select count(distinct id) from read_ndjson('{copy}/records-*.ndjson.gz')")
    assert relation is not None
    assert relation.fetchall() == [(120,)]
    assert not list((tmp_path / "work" / "stage").glob("records-*")), "shipped pieces leave the work dir"


def test_every_object_is_locked_as_asked(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Records, segments, summaries, failure lists: retention, legal hold and SSE, read back."""
    bucket = make_bucket(s3_endpoint, lock=True)
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:30])
    done = s3_export(
        capsys,
        api,
        s3_endpoint,
        tmp_path,
        f"s3://{bucket}/p",
        manifest,
        "--object-lock",
        "compliance",
        "--retain-until",
        "2099-01-01",
        "--legal-hold",
        "--sse",
        "AES256",
        "--s3-multipart-threshold",
        "64KB",
        "--s3-part-bytes",
        "64KB",
    )
    assert done.returncode == 0, done.stderr

    keys = list_keys(s3_endpoint, bucket)

    async def heads(client: Any) -> dict[str, tuple[str, str, str, str]]:
        found = {}
        for key in keys:
            head = await client.head_object(Bucket=bucket, Key=key)
            found[key] = (
                head.get("ObjectLockMode"),
                str(head.get("ObjectLockRetainUntilDate"))[:10],
                head.get("ObjectLockLegalHoldStatus"),
                head.get("ServerSideEncryption"),
            )
        return found

    seen = with_client(s3_endpoint, heads)
    assert any("/records-" in k for k in seen)
    assert any("/checkpoint.d/" in k for k in seen)
    assert any("/summary.d/" in k for k in seen)
    assert set(seen.values()) == {("COMPLIANCE", "2099-01-01", "ON", "AES256")}


def test_resume_from_the_bucket_on_an_empty_work_dir(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """A second run elsewhere (a new work dir) fetches only what the bucket lacks, and knows its 404s."""
    bucket = make_bucket(s3_endpoint)
    url = f"s3://{bucket}/dr"
    first = write_manifest(tmp_path / "first.txt", [*IDS[:60], "missing-1"])
    done = s3_export(capsys, api, s3_endpoint, tmp_path, url, first, work="machine-a")
    assert done.returncode == 1, done.stderr  # missing-1: not found
    api.reset()
    second = write_manifest(tmp_path / "second.txt", [*IDS, "missing-1"])
    again = s3_export(capsys, api, s3_endpoint, tmp_path, url, second, work="machine-b")
    assert again.returncode == 1, again.stderr
    assert "60 already archived" in again.stderr
    per_id = api.stats()["per_id"]
    assert sorted(per_id) == sorted(IDS[60:]), "only the ids the bucket lacks, and not the known 404"
    copy = download(s3_endpoint, bucket, "dr", tmp_path / "copy")
    verified = in_process(capsys, {}, "verify", str(copy), "--manifest", str(second))
    assert verified.returncode == 0, verified.stdout


def test_no_secret_reaches_any_output(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """The API token never goes to the store; no S3 secret in logs, metrics, summary or the bucket."""
    bucket = make_bucket(s3_endpoint)
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:20])
    metrics = tmp_path / "metrics.prom"
    done = s3_export(
        capsys,
        api,
        s3_endpoint,
        tmp_path,
        f"s3://{bucket}/sec",
        manifest,
        "-v",
        "--log-format",
        "json",
        "--metrics-file",
        str(metrics),
    )
    assert done.returncode == 0, done.stderr
    copy = download(s3_endpoint, bucket, "sec", tmp_path / "copy")
    outputs = [done.stdout, done.stderr, metrics.read_text()]
    outputs += [p.read_text(errors="replace") for p in copy.rglob("*") if p.is_file()]
    outputs += [p.read_text(errors="replace") for p in (tmp_path / "work").rglob("*") if p.is_file()]
    for text in outputs:
        assert TOKEN not in text
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text


def test_a_local_run_never_imports_the_s3_client(api: FakeServerHandle, tmp_path: Path) -> None:
    """aiobotocore and botocore stay unloaded unless an s3:// URL is given."""
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:3])
    code = (
        "import sys; from exporter.cli import main; "
        f"rc = main(['export', {str(manifest)!r}, '--base-url', {api.url!r}, '--out', "
        f"{str(tmp_path / 'out')!r}, '--rate', '0', '--no-progress', '-q']); "
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('aiobotocore', 'botocore', 'aiohttp')]; "
        "print(rc, loaded)"
    )
    env = aws_env("http://127.0.0.1:9", tmp_path, EXPORTER_TOKEN=TOKEN)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "0 []", done.stderr


def test_options_are_checked_before_anything_is_sent(
    api: FakeServerHandle, tmp_path: Path, capsys: Any
) -> None:
    """Object-storage options without an s3:// --out, or incomplete, are usage errors (exit 2)."""
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:3])
    env = aws_env("http://127.0.0.1:9", tmp_path, EXPORTER_TOKEN=TOKEN)
    cases = [
        (["--out", str(tmp_path / "dir"), "--object-lock", "compliance"], "--object-lock is for an archive"),
        (["--out", "s3://bkt/p", "--object-lock", "compliance"], "--retain-days N or --retain-until DATE"),
        (["--out", "s3://bkt/p", "--retain-days", "3"], "need --object-lock"),
        (["--out", "s3://Bad_Bucket/p"], "is not a bucket name"),
        (["--out", "s3://bkt/a/../b"], "'..' segment"),
        (["--out", "s3://bkt/p", "--refetch"], "--refetch cannot set an archive in object storage aside"),
    ]
    for options, message in cases:
        done = in_process(
            capsys, env, "export", str(manifest), "--base-url", api.url, "--rate", "0", *options
        )
        assert done.returncode == 2, (options, done.stderr)
        assert message in done.stderr, (options, done.stderr)
    assert api.stats()["requests_total"] == 0


def test_object_lock_preflight_stops_before_the_api(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """--object-lock on a bucket without it: exit 2 with the fix, and no request to the recordings API."""
    bucket = make_bucket(s3_endpoint)
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:3])
    done = s3_export(
        capsys,
        api,
        s3_endpoint,
        tmp_path,
        f"s3://{bucket}/p",
        manifest,
        "--object-lock",
        "compliance",
        "--retain-days",
        "1",
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"exporter: s3://{bucket} does not have Object Lock enabled, which --object-lock compliance needs"
        in done.stderr
    )
    assert api.stats()["requests_total"] == 0
    assert list_keys(s3_endpoint, bucket) == {}


def test_pieces_are_sealed_every_upload_every(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """A slow run ships a piece every --upload-every, however small: a lost machine costs no more."""
    bucket = make_bucket(s3_endpoint)
    manifest = write_manifest(tmp_path / "ids.txt", IDS[:24])
    done = s3_export(
        capsys,
        api,
        s3_endpoint,
        tmp_path,
        f"s3://{bucket}/slow",
        manifest,
        "--rate",
        "8",
        "--upload-every",
        "0.5s",
    )
    assert done.returncode == 0, done.stderr
    pieces = [k for k in list_keys(s3_endpoint, bucket) if "/records-" in k]
    assert len(pieces) >= 4, pieces
