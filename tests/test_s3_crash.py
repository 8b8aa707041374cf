"""Crash safety with the archive in object storage: kill -9 real exporters, resume anywhere, exactly once.

A run is killed at random moments; the next one starts on the same machine
(the same --work-dir) or on another (an empty one), several times over, and
the archive the bucket ends up with holds every id exactly once
(`exporter verify --manifest` on a downloaded copy). What each kill costs is
bounded: on another machine, the ids committed in the lost work dir but not
yet shipped (counted from that work dir and the bucket at the kill), plus
what was in flight; on the same machine, only what was in flight.

Two moments are forced through the fault proxy (which holds a request until
the test lets it go): between a piece's upload and its checkpoint segment
(the next run, elsewhere, takes the piece in without fetching its ids again)
and in the middle of a multipart upload (the next run continues it through
ListParts, sending only the missing parts; elsewhere, the upload is aborted).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import TOKEN, cli, spawn
from s3_proxy import FaultProxy, Rule, fault_proxy
from s3_support import aws_env, download, list_keys, make_bucket, with_client

from exporter.archive import checkpoint
from exporter.archive.layout import CHECKPOINT_NAME
from exporter.config import ManifestSource
from exporter.offline.verify import verify_archives

CONCURRENCY = 8
# Requests in flight, plus results fetched but not committed (as in test_crash.py).
REPEATS_PER_KILL = CONCURRENCY + 2 * max(16, CONCURRENCY)


def _args(
    manifest: Path, api: FakeServerHandle, url: str, work: Path, *extra: str, rate: int = 0
) -> list[str]:
    return [
        "export", str(manifest), "--base-url", api.url, "--out", url, "--work-dir", str(work),
        "--rate", str(rate), "--concurrency", str(CONCURRENCY), "--quiet", *extra,
    ]  # fmt: skip


def _ids_in(data: bytes) -> set[str]:
    ids: set[str] = set()
    checkpoint.replay(data.splitlines(keepends=True), ids.update)
    return ids


def _local_ids(work: Path) -> set[str]:
    path = work / "stage" / CHECKPOINT_NAME
    return _ids_in(path.read_bytes()) if path.exists() else set()


def _remote_ids(endpoint: str, bucket: str, prefix: str, into: Path) -> set[str]:
    copy = download(endpoint, bucket, prefix, into)
    segments = sorted((copy / "checkpoint.d").glob("*.ndjson")) if (copy / "checkpoint.d").exists() else []
    return _ids_in(b"".join(p.read_bytes() for p in segments))


def _verify(endpoint: str, bucket: str, prefix: str, target: Path, manifest: Path) -> None:
    copy = download(endpoint, bucket, prefix, target)
    report = verify_archives([copy], manifest=ManifestSource(path=manifest))
    assert report.ok, [str(f) for f in report.findings]


def _kill_when_held(
    proxy: FaultProxy, path: str, args: list[str], env: dict[str, str], settle_s: float = 0.0
) -> None:
    """Run the exporter until the proxy holds a request to `path`, then SIGKILL it and let the request go."""
    hold = proxy.add(Rule("hold", method="PUT", path=path))
    process = spawn(*args, env=env)
    deadline = time.monotonic() + 60
    while not proxy.requests("PUT", path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle_s)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    hold.release.set()


def test_kill_9_and_resume_on_this_machine_or_another(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """Kills at random moments, resumed alternately in the same and in an empty work dir: exactly once."""
    rng = random.Random(19)
    api.configure(latency_ms=10, jitter_ms=10)
    ids = [f"rec-{i}" for i in range(320)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    bucket = make_bucket(s3_endpoint, lock=True)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    extra = ("--upload-every", "0.3s", "--object-lock", "governance", "--retain-days", "1")
    machine = 0
    kills = 0
    bound = 0
    for round_number in range(4):
        work = tmp_path / f"machine-{machine}"
        process = spawn(*_args(manifest, api, f"s3://{bucket}/dr", work, *extra, rate=60), env=env)
        time.sleep(rng.uniform(0.8, 2.0))
        if process.poll() is not None:
            _, err = process.communicate()
            assert process.returncode == 0, err.decode()
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        kills += 1
        moved = round_number % 2 == 0
        if moved:  # the next run is on another machine: what this work dir had not shipped is lost
            shipped = _remote_ids(s3_endpoint, bucket, "dr", tmp_path / f"seen-{round_number}")
            bound += len(_local_ids(work) - shipped)
            machine += 1
        bound += REPEATS_PER_KILL
    assert kills >= 3, "the runs were too short to be killed: slow the fake API down"
    final = cli(
        *_args(manifest, api, f"s3://{bucket}/dr", tmp_path / f"machine-{machine + 1}", *extra), env=env
    )
    assert final.returncode == 0, final.stderr
    _verify(s3_endpoint, bucket, "dr", tmp_path / "copy", manifest)
    per_id = api.stats()["per_id"]
    assert sorted(per_id) == sorted(ids)
    repeated = sum(count - 1 for count in per_id.values())
    assert repeated <= bound, (repeated, bound, kills)


def test_a_piece_shipped_without_its_segment_is_taken_in(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """Killed between a piece and its segment: a run elsewhere reads the piece, not fetching it again."""
    ids = [f"rec-{i}" for i in range(60)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    bucket = make_bucket(s3_endpoint)
    with fault_proxy(s3_endpoint) as proxy:
        env = aws_env(proxy.url, tmp_path, EXPORTER_TOKEN=TOKEN)
        _kill_when_held(
            proxy, "/checkpoint.d/", _args(manifest, api, f"s3://{bucket}/p", tmp_path / "lost"), env
        )
    keys = list_keys(s3_endpoint, bucket)
    assert "p/records-00001.ndjson" in keys
    assert not [k for k in keys if "/checkpoint.d/" in k]
    fetched_before = api.stats()["requests_total"]
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    again = cli(*_args(manifest, api, f"s3://{bucket}/p", tmp_path / "elsewhere"), env=env)
    assert again.returncode == 0, again.stderr
    assert api.stats()["requests_total"] == fetched_before, "the piece's ids were fetched again"
    _verify(s3_endpoint, bucket, "p", tmp_path / "copy", manifest)


def test_a_multipart_upload_cut_short_is_continued(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """Killed mid-upload: the same work dir continues the upload (ListParts), sending only what is missing."""
    ids = [f"rec-{i}" for i in range(80)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    bucket = make_bucket(s3_endpoint)
    parts = ("--s3-multipart-threshold", "64KB", "--s3-part-bytes", "64KB")
    work = tmp_path / "work"
    with fault_proxy(s3_endpoint) as proxy:
        env = aws_env(proxy.url, tmp_path, EXPORTER_TOKEN=TOKEN)
        # Killed once the parts sent beside part 3 have had their answers.
        _kill_when_held(
            proxy, "partNumber=3", _args(manifest, api, f"s3://{bucket}/p", work, *parts), env, 0.5
        )
        sent_before = {e.target for e in proxy.requests("PUT", "partNumber=") if e.status == 200}
        proxy.clear()
        mark = len(proxy.requests())
        again = cli(*_args(manifest, api, f"s3://{bucket}/p", work, *parts), env=env)
        assert again.returncode == 0, again.stderr
        after = proxy.requests()[mark:]
        resent = [e.target for e in after if e.method == "PUT" and e.target in sent_before]
        continued = [e.target for e in after if e.method == "PUT" and "partNumber=" in e.target]
    assert sent_before, "no part went through before the kill"
    assert continued, "the upload was not continued"
    assert resent == [], "parts the store held were sent again"
    _verify(s3_endpoint, bucket, "p", tmp_path / "copy", manifest)


def test_an_upload_nobody_will_finish_is_aborted(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """Killed mid-upload, resumed on another machine: the orphaned upload is aborted, not left to cost."""
    ids = [f"rec-{i}" for i in range(80)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    bucket = make_bucket(s3_endpoint)
    parts = ("--s3-multipart-threshold", "64KB", "--s3-part-bytes", "64KB")
    with fault_proxy(s3_endpoint) as proxy:
        env = aws_env(proxy.url, tmp_path, EXPORTER_TOKEN=TOKEN)
        _kill_when_held(
            proxy, "partNumber=2", _args(manifest, api, f"s3://{bucket}/p", tmp_path / "a", *parts), env
        )

    async def uploads(client: object) -> list[str]:
        answer = await client.list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
        return [u["Key"] for u in answer.get("Uploads", ())]

    assert with_client(s3_endpoint, uploads) != []
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    again = cli(*_args(manifest, api, f"s3://{bucket}/p", tmp_path / "b", *parts), env=env)
    assert again.returncode == 0, again.stderr
    assert with_client(s3_endpoint, uploads) == []
    _verify(s3_endpoint, bucket, "p", tmp_path / "copy", manifest)


def test_a_work_dir_overtaken_by_a_piece_of_another_run_gives_way(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """A sealed piece here, another run's piece of its number there (without a segment): this one yields."""
    ids = [f"rec-{i}" for i in range(40)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    backwards = write_manifest(tmp_path / "backwards.txt", ids[::-1])  # the same ids, other bytes
    bucket = make_bucket(s3_endpoint)
    url = f"s3://{bucket}/p"
    with fault_proxy(s3_endpoint) as proxy:
        env = aws_env(proxy.url, tmp_path, EXPORTER_TOKEN=TOKEN)
        _kill_when_held(proxy, "/records-", _args(manifest, api, url, tmp_path / "a"), env)
        proxy.clear()
        _kill_when_held(proxy, "/checkpoint.d/", _args(backwards, api, url, tmp_path / "b"), env)
    assert (tmp_path / "a" / "stage" / "records-00001.ndjson").exists()
    assert "p/records-00001.ndjson" in list_keys(s3_endpoint, bucket)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    again = cli(*_args(manifest, api, url, tmp_path / "a"), env=env)
    assert again.returncode == 0, again.stderr
    _verify(s3_endpoint, bucket, "p", tmp_path / "copy", manifest)


def test_a_staged_piece_lost_before_it_was_shipped_says_to_empty_the_work_dir(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path
) -> None:
    """A kill -9 leaves the open piece in the stage alone; cut short there, the next run exits 4
    naming the staged copy and advising to empty the work dir (--refetch is refused for s3://);
    done, the run from the bucket alone completes, every id exactly once."""
    api.configure(latency_ms=20, jitter_ms=5)
    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(2000)])
    bucket = make_bucket(s3_endpoint)
    url = f"s3://{bucket}/nightly"
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    work = tmp_path / "work"
    process = spawn(*_args(manifest, api, url, work, "--upload-every", "1h"), env=env)
    deadline = time.monotonic() + 60
    while len(_local_ids(work)) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert not list_keys(s3_endpoint, bucket, "nightly/"), "the piece was shipped: nothing is lost"
    (piece,) = (work / "stage").glob("records-*")
    os.truncate(piece, 10)
    refused = cli(*_args(manifest, api, url, work), env=env)
    assert refused.returncode == 4, refused.stderr
    assert f"the staged copy {piece}" in refused.stderr
    assert f"empty the work dir {work}" in refused.stderr
    assert url in refused.stderr
    assert "--refetch" not in refused.stderr
    shutil.rmtree(work)
    assert cli(*_args(manifest, api, url, work), env=env).returncode == 0
    _verify(s3_endpoint, bucket, "nightly", tmp_path / "copy", manifest)
