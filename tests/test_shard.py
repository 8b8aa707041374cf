"""Sharding: N disjoint slices of one manifest, stable across runs, provably complete together."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from conftest import cli, cli_env, read_records, write_manifest
from fakeapi import FakeServerHandle

from exporter.cli.target import resolve_shard
from exporter.cli.values import parse_shard
from exporter.config import Shard
from exporter.digests import id_digest, shard_of
from exporter.errors import UsageError


def test_shard_of_is_stable_across_processes() -> None:
    """The shard of an id is fixed by its BLAKE2b digest, not Python's salted hash."""
    assert [shard_of(id_digest(f"rec-{i}"), 4) for i in range(8)] == [
        shard_of(id_digest(f"rec-{i}"), 4) for i in range(8)
    ]
    import subprocess
    import sys

    code = (
        "from exporter.digests import id_digest, shard_of; "
        "print([shard_of(id_digest(f'rec-{i}'), 4) for i in range(8)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=cli_env(PYTHONHASHSEED="123"),
    )
    assert other.stdout.strip() == str([shard_of(id_digest(f"rec-{i}"), 4) for i in range(8)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0/4", Shard(index=0, count=4)),
        (" 3 / 4 ", Shard(index=3, count=4)),
        ("INDEX/8", Shard(index=-1, count=8)),
    ],
)
def test_parse_shard_accepts(text: str, expected: Shard) -> None:
    """K/N and INDEX/N parse; INDEX is resolved later from the environment."""
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "1/0", "-1/4", "a/b", "3"])
def test_parse_shard_refuses(text: str) -> None:
    """Shards outside 0..N-1 and malformed values are refused with the form to use."""
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shard(text)


def test_index_comes_from_job_completion_index() -> None:
    """INDEX/N takes K from $JOB_COMPLETION_INDEX and refuses when it is missing or out of range."""
    assert resolve_shard(Shard(index=-1, count=3), {"JOB_COMPLETION_INDEX": "2"}) == Shard(index=2, count=3)
    with pytest.raises(UsageError, match="JOB_COMPLETION_INDEX"):
        resolve_shard(Shard(index=-1, count=3), {})
    with pytest.raises(UsageError, match="not a shard"):
        resolve_shard(Shard(index=-1, count=3), {"JOB_COMPLETION_INDEX": "3"})


@pytest.mark.parametrize(
    "index",
    ["\u00b2", "\u0663", "9" * 5000, "-1", "1.0", "", "0x1", "1\x1b[2J"],
    ids=["superscript-2", "arabic-indic-3", "5000-digits", "negative", "decimal", "empty", "hex", "escape"],
)
def test_a_job_completion_index_that_is_no_number_exits_2(tmp_path: Path, index: str) -> None:
    """$JOB_COMPLETION_INDEX must be ASCII digits: '\u00b2' (int() refuses it though isdigit() takes it),
    5000 digits (over int()'s limit), '\u0663' (int() reads it as 3) and the rest exit 2 with one short
    line naming the variable, never a traceback."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    result = cli(
        "export", str(manifest), "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "shard-{shard}"),
        "--shard", "INDEX/8", "--dry-run", env=cli_env(JOB_COMPLETION_INDEX=index),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "$JOB_COMPLETION_INDEX" in result.stderr
    assert result.stderr.count("\n") == 1
    assert len(result.stderr) < 400
    assert not list(tmp_path.glob("shard-*"))


@pytest.mark.parametrize("text", ["\u0663/8", "\u00b2/8", "1/" + "9" * 5000, "INDEX/\u0668"])
def test_shard_numbers_are_ascii_digits(text: str) -> None:
    """--shard takes K and N in ASCII digits, of a sane length; anything else is a usage error."""
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse_shard(text)
    assert len(str(refused.value)) < 200


def test_three_shards_cover_the_manifest_exactly_once(api: FakeServerHandle, tmp_path: Path) -> None:
    """Three shard runs (K from the Job index) export disjoint slices whose union verify proves complete."""
    ids = [f"rec-{i}" for i in range(300)] + ["missing-1", "missing-2"]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    for k in range(3):
        result = cli(
            "export", str(manifest), "--base-url", api.url, "--out", str(tmp_path / "shard-{shard}"),
            "--rate", "0", "--shard", "INDEX/3", "--quiet",
            env=cli_env(JOB_COMPLETION_INDEX=str(k)),
        )  # fmt: skip
        assert result.returncode in (0, 1), result.stderr
    slices = [{r["id"] for r in read_records(tmp_path / f"shard-{k}")} for k in range(3)]
    assert all(slices)
    assert sum(len(s) for s in slices) == len(set().union(*slices)), "the slices overlap"
    assert set().union(*slices) == {i for i in ids if not i.startswith("missing-")}
    assert sum(api.stats()["per_id"].values()) == len(ids)  # every id asked for once, by one shard
    for k, got in enumerate(slices):
        assert all(shard_of(id_digest(i), 3) == k for i in got)

    result = cli("verify", *(str(tmp_path / f"shard-{k}") for k in range(3)), "--manifest", str(manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    result = cli("verify", str(tmp_path / "shard-0"), str(tmp_path / "shard-1"), "--manifest", str(manifest))
    assert result.returncode == 1


def test_an_archive_keeps_its_shard(api: FakeServerHandle, tmp_path: Path) -> None:
    """Running another shard (or no shard) over a shard's archive is refused, exit 2."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(30)])
    base = ["export", str(manifest), "--base-url", api.url, "--out", str(tmp_path / "a"), "--rate", "0"]
    assert cli(*base, "--shard", "0/2").returncode == 0
    again = cli(*base, "--shard", "1/2")
    assert again.returncode == 2
    assert "shard 0/2" in again.stderr
    assert cli(*base).returncode == 2
    assert cli(*base, "--shard", "0/2").returncode == 0


def test_shard_placeholder_needs_a_shard(tmp_path: Path) -> None:
    """{shard} in --out without --shard is a usage error."""
    result = cli(
        "export", "ids.txt", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "s-{shard}")
    )
    assert result.returncode == 2
    assert "{shard}" in result.stderr
