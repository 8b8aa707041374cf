"""`exporter get s3://BUCKET/PREFIX`: archived records by id from object storage, byte for byte.

Archives are real exports into ministack; what `get` prints is compared with
the records as stored in the bucket (downloaded, every frame decompressed).
A remote archive has no index: the checkpoint segments say where each commit
is, and each commit asked is read with one ranged GET.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from fakeapi import FakeServerHandle
from on_disk import write_manifest
from runs import TOKEN, cli
from s3_proxy import fault_proxy
from s3_support import ACCESS_KEY, SECRET_KEY, aws_env, download, in_process, make_bucket, with_client

from exporter.archive import checkpoint, framing
from exporter.archive.reader import checkpoint_lines
from exporter.offline.get import Damaged, Found, get_records

IDS = [f"rec-{n}" for n in range(120)]


def _export(
    capsys: Any, env: dict[str, str], api: FakeServerHandle, work: Path, url: str, *extra: str
) -> int:
    """An export of IDS and missing-1 (a 404) into `url`, in small pieces and commits; its exit code."""
    manifest = write_manifest(work / "ids.txt", [*IDS, "missing-1"])
    done = in_process(
        capsys, env, "export", str(manifest), "--base-url", api.url, "--out", url, "--work-dir",
        str(work / "work"), "--rate", "0", "--no-progress", "--upload-bytes", "40KB", "--concurrency", "4",
        *(["--compress-batch", "12KB"] if "--compress" in extra else []), *extra,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: missing-1 is not found (in one shard only)
    return done.returncode


def _stored(copy: Path) -> tuple[dict[str, bytes], list[checkpoint.Commit]]:
    """id -> its line as stored in the downloaded archive (frames decompressed), and the commits."""
    segments = sorted((copy / "checkpoint.d").iterdir())
    data = b"".join(path.read_bytes() for path in segments)
    commits = list(checkpoint.commits(checkpoint_lines(io.BytesIO(data))))
    lines: dict[str, bytes] = {}
    for name in sorted({commit.file for commit in commits}):
        path = copy / name
        with path.open("rb") as handle:
            for raw in framing.decompressed_lines(handle, framing.codec_of_file(name)):
                lines[orjson.loads(raw)["id"]] = raw
    return lines, commits


@dataclass(frozen=True)
class _Exported:
    """An export into a new bucket, and what it stored (as downloaded into `copy`)."""

    bucket: str
    env: dict[str, str]
    url: str
    copy: Path
    stored: dict[str, bytes]
    commits: list[checkpoint.Commit]


def _exported(
    capsys: Any, api: FakeServerHandle, endpoint: str, tmp_path: Path, prefix: str, *extra: str
) -> _Exported:
    bucket = make_bucket(endpoint)
    env = aws_env(endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    url = f"s3://{bucket}/{prefix}"
    assert _export(capsys, env, api, tmp_path, url, *extra) == 1
    copy = download(endpoint, bucket, prefix, tmp_path / "copy")
    return _Exported(bucket, env, url, copy, *_stored(copy))


def _get(env: dict[str, str], roots: Sequence[Path | str], ids: Sequence[str]) -> list[Any]:
    with mock.patch.dict(os.environ, env, clear=True):
        return list(get_records(roots, ids))


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_records_from_a_bucket_are_byte_exact(
    codec: str, api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Every id, asked in a shuffled order with repeats, comes back as the line stored, in every codec."""
    ex = _exported(capsys, api, s3_endpoint, tmp_path, codec, "--compress", codec)
    env, url = ex.env, ex.url
    stored, commits = ex.stored, ex.commits
    assert len({c.file for c in commits}) > 1, "several files, so several commits"
    assert sorted(stored) == sorted(IDS)
    asked = [*IDS, *IDS[:7]]
    random.Random(codec).shuffle(asked)
    results = _get(env, [url], asked)
    assert [type(r).__name__ for r in results] == ["Found"] * len(asked)
    assert [(r.id, r.line, r.archive) for r in results] == [(i, stored[i], url) for i in asked]


def test_a_shard_pair_and_a_directory_are_read_together(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """Two s3:// shards and a local archive: each id from the first archive that holds it, in order."""
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path, EXPORTER_TOKEN=TOKEN)
    codes = set()
    for shard in ("0/2", "1/2"):
        work = tmp_path / shard[0]
        work.mkdir()
        code = _export(
            capsys,
            env,
            api,
            work,
            f"s3://{bucket}/export/shard-{{shard}}",
            "--shard",
            shard,
            "--compress",
            "zstd",
        )
        codes.add(code)
    assert codes == {0, 1}, "missing-1 is one shard's"
    urls = [f"s3://{bucket}/export/shard-0", f"s3://{bucket}/export/shard-1"]
    stored: dict[str, bytes] = {}
    holder: dict[str, str] = {}
    for url, shard in zip(urls, ("shard-0", "shard-1"), strict=True):
        lines, _ = _stored(download(s3_endpoint, bucket, f"export/{shard}", tmp_path / f"copy-{shard}"))
        stored.update(lines)
        holder.update(dict.fromkeys(lines, url))
    assert sorted(stored) == sorted(IDS)
    assert len(set(holder.values())) == 2
    local = tmp_path / "local"
    manifest = write_manifest(tmp_path / "few.txt", ["extra-1", "extra-2"])
    done = in_process(
        capsys,
        env,
        "export",
        str(manifest),
        "--base-url",
        api.url,
        "--out",
        str(local),
        "--rate",
        "0",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    asked = ["extra-2", *reversed(IDS), "extra-1"]
    results = _get(env, [*urls, local], asked)
    assert all(isinstance(r, Found) for r in results)
    assert [r.line for r in results[1:-1]] == [stored[i] for i in reversed(IDS)]
    assert [r.archive for r in results[1:-1]] == [holder[i] for i in reversed(IDS)]
    assert (results[0].archive, results[-1].archive) == (local, local)


def test_the_command_prints_records_and_names_the_missing(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """`exporter get s3://...` as a process: records on stdout byte for byte, the missing on stderr with
    its failed.ndjson reason, exit 1; exit 0 when all are found; only reads, and no credential shown."""
    ex = _exported(capsys, api, s3_endpoint, tmp_path, "q4", "--compress", "gzip")
    env, url = ex.env, ex.url
    stored, commits = ex.stored, ex.commits
    asked = ["rec-77", "rec-3", "missing-1", "never-asked", "rec-77"]
    with fault_proxy(s3_endpoint) as proxy:
        proxied = {**env, "AWS_ENDPOINT_URL_S3": proxy.url}
        ids_file = write_manifest(tmp_path / "asked.txt", asked)
        done = cli("get", url, "--ids-file", str(ids_file), env=proxied)
        methods = {entry.method for entry in proxy.requests()}
        record_gets = [e.target for e in proxy.requests("GET") if "/records-" in e.target]
    assert done.returncode == 1, done.stderr
    assert done.stdout == (stored["rec-77"] + stored["rec-3"] + stored["rec-77"]).decode()
    assert "'missing-1' is not archived: failed.ndjson in " + url + " says not_found" in done.stderr
    assert "'never-asked' is not archived\n" in done.stderr
    assert methods <= {"GET"}, "nothing is written to the bucket"
    holding = {(c.file, c.start) for c in commits if {"rec-77", "rec-3"} & set(c.ids)}
    assert len(record_gets) == len(holding), "one GET per commit asked (rec-77's commit read once)"
    found = cli("get", url, "--id", "rec-5", env=env)
    assert (found.returncode, found.stdout) == (0, stored["rec-5"].decode())
    for output in (done.stdout, done.stderr, found.stdout, found.stderr):
        assert SECRET_KEY not in output
        assert ACCESS_KEY not in output
        assert "exporter-get-" not in output, "messages name the URL, not the private copy"


def test_a_damaged_object_is_reported_never_printed(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """A byte flipped in one commit of a records object: its ids are Damaged, the file's other commits
    (read by their own byte ranges) and other files still give their records."""
    ex = _exported(capsys, api, s3_endpoint, tmp_path, "d", "--compress", "zstd")
    bucket, env, url = ex.bucket, ex.env, ex.url
    stored, commits = ex.stored, ex.commits
    first = [c for c in commits if c.file == commits[0].file]
    assert len(first) > 1, "the damaged file has another commit"
    hit = first[0]
    body = bytearray((ex.copy / hit.file).read_bytes())
    body[(hit.start + hit.end) // 2] ^= 0x40

    async def overwrite(client: Any) -> None:
        await client.put_object(Bucket=bucket, Key=f"d/{hit.file}", Body=bytes(body))

    with_client(s3_endpoint, overwrite)
    results = {r.id: r for r in _get(env, [url], IDS)}
    for record_id in IDS:
        result = results[record_id]
        if record_id in hit.ids:
            assert isinstance(result, Damaged), record_id
            assert (
                result.why == f"{url}/{hit.file} bytes {hit.start}..{hit.end} fail their crc32: the "
                "commit is damaged (run `exporter verify`)"
            )
        else:
            assert isinstance(result, Found), record_id
            assert result.line == stored[record_id]
    done = in_process(capsys, env, "get", url, "--id", hit.ids[0], "--id", first[1].ids[0])
    assert done.returncode == 1
    assert done.stdout == stored[first[1].ids[0]].decode()
    assert f"{hit.ids[0]!r} is in {url} but damaged there, not printed" in done.stderr
    assert SECRET_KEY not in done.stderr + done.stdout


def test_a_cut_object_and_a_missing_one_are_reported(
    api: FakeServerHandle, s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """An object shorter than its commits, or gone: those ids are Damaged, with the key named."""
    ex = _exported(capsys, api, s3_endpoint, tmp_path, "c")
    bucket, env, url = ex.bucket, ex.env, ex.url
    commits = ex.commits
    files = sorted({c.file for c in commits})
    cut, gone = files[0], files[1]
    last_of_cut = [c for c in commits if c.file == cut][-1]

    async def damage(client: Any) -> None:
        data = (ex.copy / cut).read_bytes()[: last_of_cut.end - 1]
        await client.put_object(Bucket=bucket, Key=f"c/{cut}", Body=data)
        await client.delete_object(Bucket=bucket, Key=f"c/{gone}")

    with_client(s3_endpoint, damage)
    victim = last_of_cut.ids[-1]
    lost = next(c for c in commits if c.file == gone).ids[0]
    damaged = _get(env, [url], [victim, lost])
    assert [type(r) for r in damaged] == [Damaged, Damaged]
    assert (
        damaged[0].why == f"{url}/{cut} is cut short: bytes {last_of_cut.start}..{last_of_cut.end} are "
        "not all there"
    )
    assert damaged[1].why == f"{url}/{gone} is missing from the bucket"


def test_a_prefix_without_an_archive_and_a_missing_bucket(
    s3_endpoint: str, tmp_path: Path, capsys: Any
) -> None:
    """No checkpoint under the prefix is a usage error (2); a bucket that is not there, exit 4, named."""
    bucket = make_bucket(s3_endpoint)
    env = aws_env(s3_endpoint, tmp_path)
    empty = in_process(capsys, env, "get", f"s3://{bucket}/nothing", "--id", "a")
    assert empty.returncode == 2
    assert f"s3://{bucket}/nothing is not an archive" in empty.stderr
    mistyped = in_process(capsys, env, "get", f"s3://{bucket}/nothing", "s3://Not_A_Bucket/x", "--id", "a")
    assert mistyped.returncode == 2
    assert "'Not_A_Bucket' is not a bucket name" in mistyped.stderr
    gone = in_process(capsys, env, "get", "s3://no-such-bucket-here/x", "--id", "a")
    assert gone.returncode == 4
    assert "s3://no-such-bucket-here" in gone.stderr
    assert SECRET_KEY not in gone.stderr
    assert ACCESS_KEY not in gone.stderr


def test_without_the_s3_extra_an_s3_url_is_a_usage_error_saying_what_to_install(tmp_path: Path) -> None:
    """No aiobotocore installed: `get` and `status` of an s3:// URL exit 2 naming the extra, no traceback."""
    script = (
        "import sys\n"
        "sys.modules['aiobotocore'] = None\n"  # what a missing package looks like to `import`
        "from exporter.cli.app import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    for args in (["get", "s3://bucket/prefix", "--id", "a"], ["status", "s3://bucket/prefix"]):
        command = [sys.executable, "-c", script, *args]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "pip install 'exporter[s3]'" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
