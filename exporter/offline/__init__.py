"""The read-only commands: they send no request and write nothing, so they can run beside an export.

    verify.py          `exporter verify`: prove what archives hold, against a manifest too
    completeness.py    verify --manifest: the archives together hold exactly the manifest's ids
    verify_report.py   verify's findings, and how they are printed (text, csv, ndjson)
    status.py          `exporter status`: an archive's runs, files and failures, quickly
    dryrun.py          `exporter export --dry-run`: what a run would do
    get.py             `exporter get`: archived records by id, as stored

They read an archive through `archive/layout.py`, `archive/reader.py` and the
index's read side (`archive/index.py`'s `open_view`), never the writer.
"""
