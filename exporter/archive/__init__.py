"""The archive on disk: one writer, one reader, and one module that alone knows the file names and formats.

    layout.py        file names, entry kinds, "is this an archive", failed.ndjson and
                     summary.json as typed records (`FailedEntry`, `Summary`)
    checkpoint.py    checkpoint.ndjson's entries and the state they add up to (pure)
    framing.py       how a commit's lines are framed in a records file (plain, gzip, zstd)
    safe_fs.py       every open, write, rename and removal, never through a link
    writer.py        `Archive`: a run's lock, recovery, commits, rotation and end
    lock.py          the lock a run holds, and how readers probe it
    generations.py   --refetch's move of the current files into superseded/
    failures.py      this run's failure journal, merged into failed.ndjson
    reader.py        everything the read-only commands read (with layout.py, all they import)

Import the module you need (`from exporter.archive.writer import Archive`):
this file imports nothing, so a reader does not load the writer.
"""
