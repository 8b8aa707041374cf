"""batches.CommitQueue and commit_policy: when the writer takes the workers' results as one commit.

The queue's timing is tested on a virtual-time loop (`virtual_loop.run_virtual`):
waits take no wall-clock time and end at exact virtual instants.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from virtual_loop import run_virtual

from exporter.batches import MAX_COMPRESSED_RECORDS, CommitQueue, commit_policy
from exporter.config import DEFAULT_COMPRESS_BATCH_BYTES, ArchiveSettings, CommitPolicy, Compression

POLICY = CommitPolicy(max_items=8, max_bytes=1000, enough_items=4, enough_bytes=500, wait_s=0.3)


def _queue(policy: CommitPolicy) -> CommitQueue[str]:
    """A queue on the running (virtual) loop's clock."""
    return CommitQueue(policy, clock=asyncio.get_running_loop().time)


def test_a_small_batch_waits_for_company_until_the_policy_wait() -> None:
    """One result waits `wait_s` after the previous take for others, then goes with what came."""

    async def main() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        queue = _queue(POLICY)
        await queue.put("a")
        taker = asyncio.create_task(queue.take())
        await asyncio.sleep(0.1)
        await queue.put("b")
        batch = await taker
        return batch, loop.time()

    batch, taken_at = run_virtual(main())
    assert batch == ["a", "b"]
    assert taken_at == pytest.approx(0.3)


def test_enough_results_go_at_once_without_polling() -> None:
    """The put that makes a batch large enough (items or bytes) wakes the taker at once."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue = _queue(POLICY)
        taker = asyncio.create_task(queue.take())
        for name in "abc":
            await queue.put(name)
        await asyncio.sleep(0.02)
        assert not taker.done()
        await queue.put("d")
        assert await taker == ["a", "b", "c", "d"]
        assert loop.time() == pytest.approx(0.02)
        big = asyncio.create_task(queue.take())
        await queue.put("big", 600)
        assert await big == ["big"]
        assert loop.time() == pytest.approx(0.02)

    run_virtual(main())


def test_close_hands_over_what_is_left_at_once_then_nothing() -> None:
    """After close a waiting batch goes without waiting, and take then returns []."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue = _queue(POLICY)
        await queue.put("a")
        queue.close()
        assert await queue.take() == ["a"]
        assert await queue.take() == []
        assert loop.time() == 0.0

    run_virtual(main())


def test_a_full_batch_makes_workers_wait_until_it_is_taken() -> None:
    """put waits while max_items results are pending: memory follows the policy, not the run."""

    async def main() -> None:
        queue: CommitQueue[int] = CommitQueue(POLICY, clock=asyncio.get_running_loop().time)
        for number in range(8):
            await queue.put(number)
        ninth = asyncio.create_task(queue.put(8))
        await asyncio.sleep(0.01)
        assert not ninth.done()
        assert await queue.take() == list(range(8))
        await ninth
        assert len(queue) == 1

    run_virtual(main())


def test_a_full_batch_goes_at_once_however_far_from_enough() -> None:
    """A batch at its count limit goes at once, not after `wait_s`: its producers are waiting.

    Before, a compressed commit waited 5 s for its byte target with 64 results
    and every worker blocked: the run moved 64 records per 5 s.
    """
    patient = CommitPolicy(max_items=8, max_bytes=1 << 30, enough_items=10**9, enough_bytes=1 << 30, wait_s=5)

    async def main() -> tuple[list[str], float, float]:
        loop = asyncio.get_running_loop()
        queue = _queue(patient)
        taker = asyncio.create_task(queue.take())
        await asyncio.sleep(1.0)
        for number in range(9):
            await queue.put(str(number))
        ninth_in = loop.time()
        batch = await taker
        return batch, loop.time(), ninth_in

    batch, taken_at, ninth_in = run_virtual(main())
    assert batch == [str(n) for n in range(8)]
    assert taken_at == pytest.approx(1.0)
    assert ninth_in == pytest.approx(1.0), "the ninth result waited for the policy's wait"


@dataclass
class _Flow:
    """What one simulated run through a CommitQueue did: each put's lateness, each commit's bytes."""

    lateness_s: list[float] = field(default_factory=list)
    commits: list[tuple[float, int, int]] = field(default_factory=list)  # (taken at, records, bytes)
    commit_s: float = 0.0


async def _simulate(policy: CommitPolicy, *, record_bytes: int, rate: float, records: int) -> _Flow:
    """Workers hand `records` results of `record_bytes` to a writer at `rate` a second, in virtual time.

    Eight workers put on a fixed schedule (record k due at k / rate), so a stall
    shows as lateness instead of shifting the schedule. The writer takes a batch
    and spends 5 ms plus 5 ms per MB on it, as compressing, writing and fsyncing do.
    """
    loop = asyncio.get_running_loop()
    queue: CommitQueue[int] = CommitQueue(policy, clock=loop.time)
    flow = _Flow()
    workers = 8

    async def work(first: int) -> None:
        for k in range(first, records, workers):
            await asyncio.sleep(max(0.0, k / rate - loop.time()))
            await queue.put(k, record_bytes)
            flow.lateness_s.append(loop.time() - k / rate)

    async def write() -> None:
        while batch := await queue.take():
            size = len(batch) * record_bytes
            flow.commits.append((loop.time(), len(batch), size))
            cost = 0.005 + 0.005 * size / 1e6
            flow.commit_s = max(flow.commit_s, cost)
            await asyncio.sleep(cost)

    writer = asyncio.create_task(write())
    async with asyncio.TaskGroup() as group:
        for first in range(workers):
            group.create_task(work(first))
    queue.close()
    await writer
    return flow


@pytest.mark.parametrize(
    ("record_bytes", "rate", "records"),
    [(300, 50, 1000), (300, 5000, 15_000), (2000, 1000, 10_000), (20_000, 200, 2000), (3_000_000, 20, 200)],
    ids=["300B-50/s", "300B-5000/s", "2KB-1000/s", "20KB-200/s", "3MB-20/s"],
)
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_batches_never_hold_workers_back(
    record_bytes: int, rate: float, records: int, codec: Compression
) -> None:
    """At any record size and rate, a compressed archive's workers keep their pace.

    A worker may wait only while the writer commits (at most one commit's
    time), never because a batch under its byte target hit a count limit;
    and every commit but the last still holds --compress-batch bytes, or
    MAX_COMPRESSED_RECORDS records, or what 5 s brought.
    """
    settings = ArchiveSettings(out_dir=Path("x"), compress=codec)
    policy = commit_policy(settings, concurrency=8)
    flow = run_virtual(_simulate(policy, record_bytes=record_bytes, rate=rate, records=records))
    late = max(flow.lateness_s)
    assert late <= flow.commit_s + 1e-9, (
        f"a worker waited {late:.3f} s (a commit takes {flow.commit_s:.3f} s)"
    )
    batch_bytes = DEFAULT_COMPRESS_BATCH_BYTES
    previous = 0.0
    for taken_at, count, size in flow.commits[:-1]:
        by_time = taken_at - previous >= policy.wait_s - 1e-9
        assert size >= batch_bytes or count == MAX_COMPRESSED_RECORDS or by_time, (taken_at, count, size)
        assert size < batch_bytes + record_bytes or count == 1, "a batch outgrew --compress-batch"
        previous = taken_at


@pytest.mark.parametrize(
    ("compress", "enough_bytes", "wait_s", "max_items", "max_bytes"),
    [("none", 1 << 20, 0.025, 128, 32 << 20), ("zstd", 200_000, 5.0, 782, 200_000)],
)
def test_compressed_archives_gather_compress_batch_bytes(
    compress: Compression, enough_bytes: int, wait_s: float, max_items: int, max_bytes: int
) -> None:
    """Plain commits go at 16 records, 1 MiB or 25 ms; compressed ones at --compress-batch bytes or 5 s.

    A compressed batch's count limit follows its bytes (a record of 256 bytes
    or more reaches the byte target first), so small records fill frames too.
    """
    settings = ArchiveSettings(out_dir=Path("x"), compress=compress, compressed_commit_bytes=200_000)
    policy = commit_policy(settings, concurrency=64)
    assert (policy.enough_bytes, policy.wait_s) == (enough_bytes, wait_s)
    assert (policy.max_items, policy.max_bytes) == (max_items, max_bytes)


@pytest.mark.parametrize(
    ("batch_bytes", "concurrency", "max_items"),
    [(1 << 20, 8, 4096), (64 << 20, 8, 4096), (1000, 8, 64), (1 << 20, 3000, 6000)],
)
def test_a_compressed_commit_lists_a_bounded_number_of_ids(
    batch_bytes: int, concurrency: int, max_items: int
) -> None:
    """However large --compress-batch, a commit (and its checkpoint entry) holds at most 4,096 ids,
    or 2 x --concurrency when that is more, as plain commits may."""
    settings = ArchiveSettings(out_dir=Path("x"), compress="gzip", compressed_commit_bytes=batch_bytes)
    assert commit_policy(settings, concurrency).max_items == max_items
