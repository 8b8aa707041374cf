"""The floor and client contenders: a minimal loop GETting each id, run as `bench.py floor|client`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import API_PATH


async def floor_fetch(base_url: str, ids: Sequence[str], concurrency: int, token: str) -> dict[str, int]:
    """GET every id, `concurrency` at a time over one pooled session, and discard the bodies."""
    import aiohttp

    counts = {"ok": 0, "errors": 0, "bytes": 0}
    pending = iter(ids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for record_id in pending:
                async with session.get(f"{base_url}{API_PATH}{record_id}") as response:
                    body = await response.read()
                    counts["ok" if response.status == 200 else "errors"] += 1
                    counts["bytes"] += len(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


async def client_fetch(base_url: str, ids: Sequence[str], concurrency: int, token: str) -> dict[str, int]:
    """The floor's loop over the exporter's own client (`exporter.transport.client.RecordingsClient`)."""
    from exporter.config import HttpSettings, Secret
    from exporter.transport.client import RecordingsClient

    counts = {"ok": 0, "errors": 0, "bytes": 0}
    pending = iter(ids)
    settings = HttpSettings(base_url=base_url, token=Secret(token))
    async with RecordingsClient(settings) as client:

        async def worker() -> None:
            for record_id in pending:
                response = await client.get(record_id)
                counts["ok" if response.status == 200 else "errors"] += 1
                counts["bytes"] += len(response.body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def floor_main(loop: str, argv: Sequence[str]) -> int:
    """`bench.py floor|client MANIFEST BASE_URL CONCURRENCY`, token from $EXPORTER_TOKEN: one JSON line."""
    manifest, base_url, concurrency = argv
    ids = Path(manifest).read_text(encoding="ascii").split()
    fetch = floor_fetch if loop == "floor" else client_fetch
    counts = asyncio.run(fetch(base_url, ids, int(concurrency), os.environ["EXPORTER_TOKEN"]))
    print(json.dumps(counts))
    return 0 if counts["errors"] == 0 else 1
