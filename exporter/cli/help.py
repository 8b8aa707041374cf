"""The prose of `--help` after the options: examples, the token, exit codes, for every command.

Kept apart from the options (`export_options.py`, `archive_commands.py`) so that these
read as the groups `--help` shows.
"""

from __future__ import annotations

from .export_config import TOKEN_ENV

EXIT_CODES_HELP = """\
exit codes:
  0    every id of the manifest is in the archive
  1    the run finished, but some ids failed, were not found or were invalid
       (listed with the reason in DIR/failed.ndjson)
  2    usage or configuration error (bad option, no token, unreadable manifest, a
       secret file that is not a regular file, --metrics-file inside the archive,
       a proxy wanting credentials (407), an API wanting a client certificate)
  3    the API refused the token (401/403) and --token-file, read again, holds
       no other; what was fetched before is kept
  4    the archive cannot be used (locked by another run, damaged, a link or another
       user's directory where the archive writes, read-only, disk full); this code
       wins over any other reason the run stopped for, Ctrl-C included
  5    a budget was reached (--max-duration, --max-requests): what was fetched is kept;
       run the same command again to continue
  6    the API (or the proxy on the way) was unavailable for longer than --max-outage,
       or asked to wait longer than 15 minutes: what was fetched is kept
  130  interrupted by SIGINT (Ctrl-C): what was fetched is kept; run the same command to resume
  143  interrupted by SIGTERM: likewise
"""

EXPORT_EPILOG = f"""\
examples:
  EXPORTER_TOKEN=... exporter export ids.txt --base-url https://api.example.com --out archive/
  exporter export ids.csv.gz --base-url https://api.example.com --out archive/ \\
      --token-file ~/.config/exporter/token --rate 20 --concurrency 32 --include photos
  zcat nightly-ids.gz | exporter export - --base-url https://api.example.com --out archive/ --quiet
  exporter export ids.txt --base-url https://api.example.com --out s3://bucket/exports/q4 \\
      --object-lock compliance --retain-days 2557

the token:
  from the environment variable {TOKEN_ENV}, or from the file named by --token-file
  (one line; keep it mode 0600). Never on the command line, where `ps` shows it.
  It is sent only to the --base-url origin: redirects are not followed, a proxy
  only relays TLS it cannot read, and an https server must present a
  certificate the system (or --ca-cert) trusts. When the API refuses it
  (401/403), --token-file is read again once: a new token there is used and the
  refused requests are made again; SIGHUP re-reads it too.

in a company network:
  with no --proxy, https_proxy/HTTPS_PROXY and no_proxy/NO_PROXY are used as
  curl uses them, for an https --base-url only; --proxy none ignores them.
  Proxy credentials: http://USER:PASSWORD@HOST:PORT in HTTPS_PROXY, or
  --proxy-auth-file. A private CA: --ca-cert. Mutual TLS: --client-cert and
  --client-key.

unattended runs:
  --metrics-file /var/lib/node_exporter/textfile/exporter.prom --metrics-label job=nightly
      Prometheus metrics, rewritten every 15 s and at the end (node_exporter's
      textfile collector); --metrics-push http://pushgateway:9091 pushes them at the end
  --log-format json   one JSON object a line on stderr (start, progress, pause, failed, end ...)
  --dry-run [--json]  what a run would fetch and skip, and how long it takes at least; nothing
      is sent or written, and it works while another run holds the archive

resuming:
  run the same command again: ids already in the archive are not fetched again;
  a new manifest over an existing archive fetches only the ids it does not hold
  (nightly cron jobs), and ids that failed before are tried again, except those
  found missing (404) or invalid unless --retry-failed. --refetch starts over.

{EXIT_CODES_HELP}"""

VERIFY_EPILOG = """\
examples:
  exporter verify archive/
  exporter verify shard-0/ shard-1/ shard-2/ --manifest ids.txt.gz
  exporter verify s3://bucket/export/shard-0 s3://bucket/export/shard-1 --manifest ids.txt

  Each problem is one line, `DIR/FILE:LINE: what is wrong`; notes (`note: ...`) are
  expected leftovers of a killed run that the next export run cleans up by itself.

exit codes:
  0    every check holds
  1    at least one problem (listed)
  2    usage error: a DIR that is not an archive, an unreadable manifest
"""

STATUS_EPILOG = """\
examples:
  exporter status archive/
  exporter status archive/ --json | jq .failed.by_reason

exit codes:
  0    the status was shown
  2    DIR is not an archive
  4    the checkpoint is damaged (run `exporter verify DIR` to see where), or is
       a symbolic link, FIFO or device (never followed)
"""

INDEX_EPILOG = """\
examples:
  exporter index archive/             # catch the index up now rather than at the next run
  exporter index archive/ --rebuild   # throw it away and build it again from the checkpoint
  exporter index shard-*/ --json

The index is derived from the checkpoint alone (the records are not read) and
every export run keeps it up to date by itself; it is never trusted where the
checkpoint says otherwise.

exit codes:
  0    the index is up to date
  2    DIR is not an archive
  4    the archive is locked by a running export, damaged, or unsafe
"""

GET_EPILOG = """\
examples:
  exporter get archive/ --id rec-8f2a31
  exporter get archive/ --id rec-8f2a31 --id rec-77c0d4 | jq .duration
  exporter get shard-0/ shard-1/ shard-2/ --ids-file regulator-request.txt > records.ndjson
  zcat ids.gz | exporter get archive/ --ids-file -
  exporter get s3://bucket/exports/q4 --id rec-8f2a31

Each record is printed as one NDJSON line, byte for byte as archived, in the
order the ids were given; an id given twice is printed twice. Ids not archived
are named on stderr, with their failed.ndjson reason when there is one. A
commit whose bytes fail their crc32 (or do not decompress) is reported and none
of its records is printed. Reads only: no lock is taken and nothing is written,
so it works while an export runs on the archive.

An s3:// archive (credentials, region and endpoint from the AWS chain, as for
export) has no index: its checkpoint is downloaded and replayed (a cost that
grows with the archive), then each commit asked is read with one ranged GET.

exit codes:
  0    every id was printed
  1    some ids were not (named on stderr)
  2    usage error: no ids, a DIR that is not an archive, an unreadable --ids-file
  4    an archive cannot be read (its checkpoint is damaged, a link, a bucket unreachable, ...)
"""
