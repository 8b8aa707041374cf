"""batches.CommitQueue and commit_policy: when the writer takes the workers' results as one commit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from exporter.batches import CommitQueue, commit_policy
from exporter.config import ArchiveSettings, CommitPolicy, Compression

POLICY = CommitPolicy(max_items=8, max_bytes=1000, enough_items=4, enough_bytes=500, wait_s=0.3)


async def test_a_small_batch_waits_for_company_until_the_policy_wait() -> None:
    """One result waits `wait_s` after the previous take for others, then goes with what came."""
    queue: CommitQueue[str] = CommitQueue(POLICY)
    await queue.put("a")
    started = time.monotonic()
    taker = asyncio.create_task(queue.take())
    await asyncio.sleep(0.1)
    await queue.put("b")
    assert await taker == ["a", "b"]
    assert 0.25 <= time.monotonic() - started < 0.6


async def test_enough_results_go_at_once_without_polling() -> None:
    """The put that makes a batch large enough (items or bytes) wakes the taker at once."""
    queue: CommitQueue[str] = CommitQueue(POLICY)
    taker = asyncio.create_task(queue.take())
    for name in "abc":
        await queue.put(name)
    await asyncio.sleep(0.02)
    assert not taker.done()
    started = time.monotonic()
    await queue.put("d")
    assert await taker == ["a", "b", "c", "d"]
    assert time.monotonic() - started < 0.1
    big = asyncio.create_task(queue.take())
    await queue.put("big", 600)
    assert await asyncio.wait_for(big, 0.1) == ["big"]


async def test_close_hands_over_what_is_left_at_once_then_nothing() -> None:
    """After close a waiting batch goes without waiting, and take then returns []."""
    queue: CommitQueue[str] = CommitQueue(POLICY)
    await queue.put("a")
    queue.close()
    assert await asyncio.wait_for(queue.take(), 0.1) == ["a"]
    assert await queue.take() == []


async def test_a_full_batch_makes_workers_wait_until_it_is_taken() -> None:
    """put waits while max_items results are pending: memory follows the policy, not the run."""
    queue: CommitQueue[int] = CommitQueue(POLICY)
    for number in range(8):
        await queue.put(number)
    ninth = asyncio.create_task(queue.put(8))
    await asyncio.sleep(0.02)
    assert not ninth.done()
    assert await queue.take() == list(range(8))
    await asyncio.wait_for(ninth, 0.1)
    assert len(queue) == 1


@pytest.mark.parametrize(
    ("compress", "enough_bytes", "wait_s"), [("none", 1 << 20, 0.025), ("zstd", 200_000, 5.0)]
)
def test_compressed_archives_gather_compress_batch_bytes(
    compress: Compression, enough_bytes: int, wait_s: float
) -> None:
    """Plain commits go at 16 records, 1 MiB or 25 ms; compressed ones at --compress-batch bytes or 5 s."""
    settings = ArchiveSettings(out_dir=Path("x"), compress=compress, compressed_commit_bytes=200_000)
    policy = commit_policy(settings, concurrency=64)
    assert (policy.enough_bytes, policy.wait_s, policy.max_items) == (enough_bytes, wait_s, 128)
