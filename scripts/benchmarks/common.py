"""What every part of the benchmark shares: paths, constants, the error, the child environment, verdicts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent.parent
SCRIPTS: Final = ROOT / "scripts"
API_PATH: Final = "/v1/core/recordings/"
TOKEN: Final = "bench-token"  # a fake token: the servers here are loopback-only
CONTENDERS: Final = ("floor", "client", "exporter", "curl", "aria2c")
#: Contenders that are `bench.py` itself in a minimal loop (loops.py), reporting a JSON line of counts.
LOOPS: Final = ("floor", "client")
#: `bench.py report RESULTS` and `bench.py compare OLD NEW` read results files (benchmarks.results).
RESULTS_COMMANDS: Final = ("report", "compare")
NGINX_INSTALL: Final = "apt-get install -y nginx-light"
MB: Final = 1_000_000

# The memory scenario's ids are `m-` and seven digits; nginx picks one of 1,000 template bodies
# by the last three digits and writes the requested id into it (see nginx.NGINX_CONF).
MEMORY_PREFIX: Final = "m-"
MEMORY_TEMPLATES: Final = 1000
MEMORY_PLACEHOLDER: Final = "m-XXXXXXX"


class BenchError(Exception):
    """Something that stops the benchmark, with a message saying what to do; exit `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["EXPORTER_TOKEN"] = TOKEN
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "MISSES the target"
