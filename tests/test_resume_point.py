"""A resume starts planning where the archived part of its manifest ends (`exporter.resume_point`).

Only the order of requests may change: whatever the manifest and archive, the
plan from the resume point fetches the same ids, reports the same failures and
counts the same as planning in order; its first ids to fetch come without
planning the lines before the point, and those lines' ids (left over from
earlier runs) still go out right after the first few requests.
"""

from __future__ import annotations

import contextlib
import gzip
import random
from pathlib import Path
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from on_disk import read_records, read_summary, write_manifest
from runs import export, make_config
from test_plan_index import build_archive, manifest_lines, plan_all

from exporter import plan, resume_point
from exporter.archive import archived, index
from exporter.archive.archived import ArchivedIds
from exporter.archive.safe_fs import SafeDir
from exporter.config import ManifestSource, Shard
from exporter.digests import DigestSet, id_digest
from exporter.manifest import open_manifest
from exporter.manifest_stream import PlainFile
from exporter.plan import Planner


def small_search() -> contextlib.AbstractContextManager[object]:
    """The search made for manifests of a few kilobytes."""
    return mock.patch.multiple(resume_point, MIN_SKIP_BYTES=64, SAMPLE_BYTES=48, _PRECISION_BYTES=16)


def planned(
    out: Path, manifest: Path, **options: object
) -> tuple[Planner, list[str], list[tuple[str, str, int | None]]]:
    with (
        SafeDir.open_existing(out) as directory,
        index.open_view(directory) as view,
        open_manifest(ManifestSource(path=manifest)) as entries,
    ):
        planner = Planner(entries, archived=ArchivedIds(view), known_missing=DigestSet(), **options)  # type: ignore[arg-type]
        fetch, failures, _ = plan_all(planner)
    return planner, fetch, failures


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=400),
    share=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=10_000),
    shard=st.sampled_from([None, Shard(index=0, count=2)]),
    crlf=st.booleans(),
)
def test_a_plan_from_the_resume_point_is_the_plan_in_order(
    tmp_path_factory: object, size: int, share: float, seed: int, shard: Shard | None, crlf: bool
) -> None:
    """Same ids fetched, same failures, same counts as planning the manifest in order, for any split."""
    rng = random.Random(seed)
    base = tmp_path_factory.mktemp("resume")  # type: ignore[attr-defined]
    ids = [f"r-{n}" for n in range(size)]
    archived_ids = [i for i in ids[: int(size * share)] if rng.random() < 0.9]  # gaps: left over
    build_archive(base / "out", [archived_ids[at : at + 7] for at in range(0, len(archived_ids), 7)])
    lines = manifest_lines(ids, rng)
    manifest = base / "ids.txt"
    manifest.write_bytes(b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines))
    with mock.patch.object(archived, "BLOCK_IDS", 8), mock.patch.object(archived, "_LOW_WATER", 8):
        with small_search():
            skipping, fetch, failures = planned(base / "out", manifest, shard=shard)
        in_order, expected_fetch, expected_failures = planned(base / "out", manifest, shard=shard)
    assert sorted(fetch) == sorted(expected_fetch)
    assert len(set(fetch)) == len(fetch)
    assert skipping.counts == in_order.counts
    # An invalid id listed twice is reported at whichever of its lines is planned first (its other
    # lines are duplicates); any other failure at the same line.
    assert sorted(f[:2] for f in failures) == sorted(f[:2] for f in expected_failures)
    assert sorted(f for f in failures if f[1] != "invalid_id") == sorted(
        f for f in expected_failures if f[1] != "invalid_id"
    )
    for record_id, reason, line in failures:
        if reason == "invalid_id":
            assert line is not None
            assert lines[line - 1].strip() == record_id.encode()


def test_the_first_ids_come_from_the_resume_point_and_the_left_over_ones_right_after(tmp_path: Path) -> None:
    ids = [f"id-{n:05d}" for n in range(20_000)]
    left_over = {"id-00100", "id-05000", "id-07000"}  # well before the point (the search is within 64 KiB)
    build_archive(
        tmp_path / "out",
        [[i for i in ids[at : at + 100] if i not in left_over] for at in range(0, 15_000, 100)],
    )
    manifest = write_manifest(tmp_path / "ids.txt", [*ids[:18_000], "bad/id", *ids[18_000:]])
    with (
        mock.patch.object(resume_point, "MIN_SKIP_BYTES", 4096),
        SafeDir.open_existing(tmp_path / "out") as directory,
        index.open_view(directory) as view,
        open_manifest(ManifestSource(path=manifest)) as entries,
    ):
        planner = Planner(entries, archived=ArchivedIds(view), known_missing=DigestSet())
        first = planner.next_batch()
        while first is not None and not first.fetch:
            first = planner.next_batch()
        planned_to_first = planner.counts.entries
        assert first is not None
        rest, failures, _ = plan_all(planner)
    # The first ids to fetch are those after the archived part, a few, found without planning
    # the lines before the point (in order, the first would be id-00100).
    assert first.fetch == ids[15_000 : 15_000 + plan._LEAD_IDS]
    assert planned_to_first < 15_000
    # Then the ids left over before the point, in order, then the rest.
    assert rest == sorted(left_over) + ids[15_000 + plan._LEAD_IDS :]
    # A line after the point is numbered as in the file.
    assert failures == [("bad/id", "invalid_id", 18_001)]
    assert planner.counts.already_archived == 15_000 - 3
    assert planner.counts.to_fetch == 5_003


def test_where_the_search_starts_planning(tmp_path: Path) -> None:
    ids = [f"id-{n:06d}" for n in range(100_000)]
    archived_set = {id_digest(i) for i in ids[:60_000]}
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    with open(manifest, "rb") as raw:
        plain = PlainFile.of(raw, "ids.txt", 1 << 20)
        assert plain is not None
        offset = resume_point.resume_offset(plain, archived_set.__contains__, min_bytes=1)
        # Within the search's precision before the first id not archived, at a line start.
        boundary = 60_000 * len("id-000000\n")
        assert boundary - 2 * resume_point._PRECISION_BYTES <= offset <= boundary
        assert offset % len("id-000000\n") == 0
        # A manifest whose start is not archived, or whose archived part is short, is planned in order.
        assert resume_point.resume_offset(plain, set().__contains__, min_bytes=1) == 0
        assert resume_point.resume_offset(plain, archived_set.__contains__) == 0  # under 4 MiB
        assert plain.count_lines(offset) == offset // len("id-000000\n")
    # A compressed manifest, or one on standard input, cannot be read from an offset.
    packed = tmp_path / "ids.txt.gz"
    packed.write_bytes(gzip.compress(manifest.read_bytes()))
    with open(packed, "rb") as raw:
        assert PlainFile.of(raw, "ids.txt.gz", 1 << 20) is None
    with open_manifest(ManifestSource(path=None), stdin=open(manifest, "rb")) as entries:
        assert entries.plain_file() is None


async def test_a_resume_from_the_point_archives_every_id_once(api: object, tmp_path: Path) -> None:
    """End to end: the ids left over before the point are fetched, nothing twice, the counts right."""
    ids = [f"rp-{n:05d}" for n in range(3_000)]
    left_over = ["rp-00010", "rp-01234", "rp-02398"]
    out = tmp_path / "out"
    first = write_manifest(tmp_path / "first.txt", [i for i in ids[:2_400] if i not in left_over])
    outcome = await export(make_config(first, out, api.url))  # type: ignore[attr-defined]
    assert outcome.exit_code == 0
    api.reset()  # type: ignore[attr-defined]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    with small_search():
        outcome = await export(make_config(manifest, out, api.url))  # type: ignore[attr-defined]
    assert outcome.exit_code == 0
    asked = list(api.stats()["per_id"])  # type: ignore[attr-defined]  # in the order first asked
    assert sorted(asked) == sorted([*left_over, *ids[2_400:]])
    assert asked[0] in ids[2_390:]  # from the resume point on (rp-02398 may be after it)
    assert all(asked.index(i) < plan._LEAD_IDS + len(left_over) + 8 for i in left_over)
    counts = read_summary(out)["counts"]
    assert counts["already_archived"] == 2_400 - 3
    assert counts["exported"] == 603
    assert sorted(r["id"] for r in read_records(out)) == sorted(ids)
