"""The command line: argv and the environment in, an `ExportConfig` or plain values out, an exit code back.

The only package that reads argv or the environment (`EXPORTER_TOKEN`,
`HTTPS_PROXY`, `NO_PROXY`, `JOB_COMPLETION_INDEX`); the library below it takes
an `ExportConfig`, or plain values, and nothing else. Library errors become
one line on stderr and the exit code their type carries.

    app.py             main: parse, set up logging, run the command, map errors to exit codes
    export_options.py  `exporter export`'s options, one function per help group, in help order
    values.py          what each option's value may be (sizes, durations, K/N, ...)
    target.py          MANIFEST, --out (a directory or s3://) and --shard, resolved once
                       for a run and its --dry-run alike
    export_config.py   the token, proxy, TLS, metrics and limits -> `ExportConfig`
    export_command.py  `exporter export`: the run or the dry run, and its last line
    archive_commands.py  the options of `verify`, `status`, `index` and `get`, which call into
                       `offline/` and `index_command.py`
    help.py            the prose after the options: examples, the token, exit codes

The object-storage options are `remote/options.py`'s, beside the
`RemoteSettings` they make. Nothing here imports the pipeline, the transport
or the metrics until `export` runs.
"""

from .app import build_parser, main

__all__ = ["build_parser", "main"]
