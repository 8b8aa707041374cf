"""The archive in S3-compatible object storage (`--out s3://BUCKET/PREFIX`): create-only, checksummed, locked.

    location.py    s3://BUCKET/PREFIX: parsed, checked, and the key of every archive name; how
                   messages name a staged file (pure)
    checksums.py   sha256 (whole and per part), Content-MD5, part sizes under 10,000 parts (pure)
    store.py       the S3 calls (aiobotocore): create-only puts, multipart, HEAD read-back,
                   Object Lock preflight, retries; the one module that imports aiobotocore
    state.py       what a prefix holds, and how a work dir stands to it (pure)
    multipart.py   a multipart upload's journal in the work dir, so a crash resumes it
    shipper.py     `RemoteArchive`: the local archive in --work-dir, sealed in pieces and shipped;
                   `prepare`, which makes the work dir agree with the bucket before a run
    adopt.py       a piece shipped by a run killed before its checkpoint segment, read back and taken in
    remote_read.py a remote archive read back: for resume, verify, status and --dry-run
    remote_get.py  `exporter get s3://...`: the checkpoint copied and replayed, commits by ranged GET
    verify.py      `exporter verify s3://...`: HEAD read-back against the checkpoint; --deep downloads
    options.py     the command line's object-storage options -> `RemoteSettings` (no aiobotocore)

Nothing here is imported unless an s3:// URL is given (`options.py` and
`location.py` excepted: they import no S3 client), so a local run never loads
aiobotocore. The design and its alternatives: docs/decisions/0002-s3-archive.md.
"""
