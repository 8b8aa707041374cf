"""`exporter verify s3://...`, `status s3://...` and `export --dry-run --out s3://...`: read-only, remote.

`verify` without `--deep` reads only the checkpoint segments and HEADs every
records file (no records are downloaded): each object listed exists, with
the size its close entry gives, the checksum the store computed and verified
on upload and read back then (its `shipped` entry; for a single put that is
the file's sha256 itself), and the version that was shipped (a newer
version means someone wrote over the key); no id is listed twice across the
archives; records files the checkpoint does not list are reported; with
`--manifest`, completeness as for directories (`offline/completeness.py`,
run on a copy of the checkpoint and failure list). `--deep` downloads every
object into a private directory and runs the local verify on it: every byte
re-hashed, every line parsed (then local DIRs may be given too).

Findings name `s3://BUCKET/PREFIX/NAME`. Nothing is written to the bucket.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.archive import checkpoint
from exporter.config import ManifestSource, RemoteSettings
from exporter.digests import DigestSet, id_digest
from exporter.errors import ArchiveCorrupt, UsageError
from exporter.offline.completeness import check_manifest
from exporter.offline.verify_report import Findings, Problem, Report

from .checksums import sha256_b64_of_hex
from .location import Location, parse
from .remote_read import RemoteArchive, full_copy, lines_of, metadata_copy, read_remote, require_archive
from .state import strays
from .store import ObjectFacts, ObjectStore

_PARALLEL_HEADS = 16


def reader_settings(location: Location) -> RemoteSettings:
    """Settings for reading an archive: its bucket, the store's retries; nothing is written."""
    return RemoteSettings(bucket=location.bucket, prefix=location.prefix, work_dir=Path())


def verify_remote(
    urls: Sequence[str], local: Sequence[Path], *, manifest: ManifestSource | None, deep: bool
) -> Report:
    """Verify the s3:// archives `urls` (with the local `local` ones when `deep`), together."""
    locations = [parse(url) for url in urls]
    if len({loc.url for loc in locations}) != len(locations):
        raise UsageError("an s3:// archive is given twice; name each archive once")
    if deep:
        return asyncio.run(_deep(locations, local, manifest))
    if local:
        raise UsageError(
            "local DIRs and s3:// archives are verified together only with --deep (which downloads "
            "the s3:// ones)"
        )
    return asyncio.run(_shallow(locations, manifest))


async def _deep(
    locations: Sequence[Location], local: Sequence[Path], manifest: ManifestSource | None
) -> Report:
    from exporter.offline.verify import verify_archives

    with tempfile.TemporaryDirectory(prefix="exporter-verify-") as temp:
        copies: dict[str, str] = {}
        for number, location in enumerate(locations):
            into = Path(temp) / f"archive-{number}"
            async with ObjectStore.connect(reader_settings(location)) as store:
                require_archive(await read_remote(store, location))
                await full_copy(store, location, into)
            copies[str(into)] = location.url
        report = await asyncio.to_thread(
            verify_archives, [*local, *(Path(p) for p in copies)], manifest=manifest
        )
    return _renamed(report, copies)


async def _shallow(locations: Sequence[Location], manifest: ManifestSource | None) -> Report:
    report = Report(manifest=None if manifest is None else manifest.display)
    findings = Findings(report)
    seen = DigestSet()
    copies: dict[str, str] = {}
    archives: list[tuple[Path, checkpoint.CheckpointState, frozenset[str]]] = []
    with tempfile.TemporaryDirectory(prefix="exporter-verify-") as temp:
        for number, location in enumerate(locations):
            async with ObjectStore.connect(reader_settings(location)) as store:
                try:
                    remote = await read_remote(store, location)
                    require_archive(remote)
                except ArchiveCorrupt as exc:
                    report.archives += 1
                    findings.problem(location.url, None, str(exc))
                    continue
                report.archives += 1
                await _check_objects(store, remote, findings)
                _check_ids(remote, findings, seen)
                if manifest is not None:
                    into = Path(temp) / f"archive-{number}"
                    await metadata_copy(store, remote, into)
                    copies[str(into)] = location.url
                    archives.append((into, remote.state, frozenset()))
        if manifest is not None:
            await asyncio.to_thread(check_manifest, findings, manifest, archives, seen)
    return _renamed(report, copies)


async def _check_objects(store: ObjectStore, remote: RemoteArchive, findings: Findings) -> None:
    """Every listed records file: there, its size, its checksum and version as shipped."""
    location = remote.location
    semaphore = asyncio.Semaphore(_PARALLEL_HEADS)

    async def head(name: str) -> ObjectFacts | None:
        async with semaphore:
            return await store.head(location.key(name))

    states = list(remote.state.files.values())
    heads = await asyncio.gather(*(head(state.name) for state in states))
    for state, facts in zip(states, heads, strict=True):
        where = f"{location.url}/{state.name}"
        findings.report.files += 1
        findings.report.records += state.lines
        if not state.closed:
            findings.problem(where, None, "the checkpoint segments end while this file is open")
        if facts is None:
            findings.problem(
                where, None, f"missing: the checkpoint lists {state.lines} records in it; restore it"
            )
            continue
        if facts.size != state.size:
            findings.problem(where, None, f"is {facts.size} bytes but {state.size} were shipped")
            continue
        shipped = state.shipped
        expected = shipped.checksum if shipped is not None and shipped.checksum else None
        if expected is None and state.sha256 is not None:
            expected = sha256_b64_of_hex(state.sha256)
        if facts.checksum_sha256 is None:
            findings.note(where, None, "the store keeps no SHA-256 of it: run verify --deep to re-hash it")
        elif expected is not None and facts.checksum_sha256 != expected:
            findings.problem(
                where,
                None,
                f"its checksum is {facts.checksum_sha256} but {expected} was shipped: the object was "
                "written over; its shipped version is in the bucket's versions",
            )
        if shipped is not None and shipped.version is not None and facts.version_id != shipped.version:
            findings.problem(
                where,
                None,
                f"the current version is {facts.version_id}, not {shipped.version} as shipped: the key "
                "was written again after the export",
            )
    orphan, foreign = strays(location, remote.listing, remote.state.files)
    if orphan is not None:
        findings.note(
            f"{location.url}/{orphan}",
            None,
            "not in the checkpoint yet: shipped by a run killed before its checkpoint segment; the "
            "next export run takes it in",
        )
    for key in foreign:
        findings.problem(
            f"s3://{location.bucket}/{key}",
            None,
            "records file not listed in the checkpoint: not this archive's",
        )
    for key in remote.listing.other:
        findings.note(f"s3://{location.bucket}/{key}", None, "not an archive file (not checked)")


def _check_ids(remote: RemoteArchive, findings: Findings, seen: DigestSet) -> None:
    """No id listed twice, in this archive or an earlier one."""
    lines = lines_of(remote.checkpoint_bytes)
    for commit in checkpoint.commits(lines, name=f"{remote.location.url}/checkpoint.d"):
        for offset, record_id in enumerate(commit.ids):
            if not seen.add(id_digest(record_id)):
                findings.detail(
                    f"{remote.location.url}/{commit.file}",
                    commit.first_line + offset,
                    f"duplicate: id {record_id!r} is archived before this line too",
                )


def _renamed(report: Report, copies: dict[str, str]) -> Report:
    """The report with the private copies' paths shown as the URLs they were copied from."""

    def rename(path: str) -> str:
        for copy, url in copies.items():
            if path == copy or path.startswith(copy + "/"):
                return url + path[len(copy) :]
        return path

    report.findings = [Problem(rename(p.path), p.line, p.message, p.severity) for p in report.findings]
    report.unlisted = {rename(path): count for path, count in report.unlisted.items()}
    return report


# -- status and --dry-run ------------------------------------------------------------


def remote_status(url: str) -> Any:
    """`exporter status s3://...`: the `ArchiveStatus` of a metadata copy, named by the URL, with the
    bucket's object sizes."""
    from dataclasses import replace

    from exporter.offline.status import gather_status

    location = parse(url)

    async def go(into: Path) -> Any:
        async with ObjectStore.connect(reader_settings(location)) as store:
            remote = await read_remote(store, location)
            require_archive(remote)
            await metadata_copy(store, remote, into)
        status = await asyncio.to_thread(gather_status, into)
        sizes = remote.listing.records
        status.files = [replace(f, disk_bytes=sizes.get(f.name)) for f in status.files]
        status.archive = location.url
        return status

    with tempfile.TemporaryDirectory(prefix="exporter-status-") as temp:
        return asyncio.run(go(Path(temp) / "archive"))


def remote_archive_copy(url: str, into: Path) -> None:
    """A metadata copy of the archive at `url` in `into` (for --dry-run); a missing prefix leaves none."""
    location = parse(url)

    async def go() -> None:
        async with ObjectStore.connect(reader_settings(location)) as store:
            remote = await read_remote(store, location)
            if remote.listing.segments or remote.listing.records:
                await metadata_copy(store, remote, into)

    asyncio.run(go())
