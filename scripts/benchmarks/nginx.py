"""nginx (Debian's nginx-light), started and stopped here with its own config in a temp dir."""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from benchmarks.common import API_PATH, MEMORY_PLACEHOLDER, MEMORY_PREFIX, BenchError
from benchmarks.measure import child_pids, free_port, process_cpu_s

NGINX_CONF: Final = """\
{modules}
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    types {{ }}
    default_type application/json;
    log_format bench '$msec $request_time $status $body_bytes_sent';
    {access_log}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    open_file_cache max={file_cache} inactive=300s;
    open_file_cache_valid 300s;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        server_name bench;
        root {root};
        {latency_locations}
        location {api_path} {{ }}
        location ~ "^{api_path}(?<rid>{memory_prefix}\\d{{4}}(?<tpl>\\d{{3}}))$" {{
            root {templates};
            try_files /$tpl.json =404;
            sub_filter '"id":"{placeholder}"' '"id":"$rid"';
            sub_filter_once on;
            sub_filter_types *;
        }}
    }}
}}
"""


# With --latency-ms, the static bodies are answered after an exact sleep, by the echo module
# that Debian's nginx-light ships (libnginx-mod-http-echo): C speed on the server's side.
ECHO_MODULE: Final = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
LATENCY_LOCATIONS: Final = """\
location ~ "^{api_path}(?<rid>[^/]+)$" {{
            echo_sleep {latency_s};
            echo_exec /_bodies/$rid;
        }}
        location /_bodies/ {{
            internal;
            alias {root}{api_path};
        }}"""


def find_nginx() -> str | None:
    """The nginx binary, also where root's PATH has it but a user's may not."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


class Nginx:
    """nginx in the foreground with its own config in a temp dir; a context manager.

    `cpu_s()` is the workers' CPU so far, to show per contender that the server was not
    the bottleneck.
    """

    __slots__ = ("_proc", "_tmp", "access_log", "port", "workers")

    def __init__(
        self,
        binary: str,
        *,
        root: Path,
        templates: Path | None = None,
        access_log: bool = False,
        workers: str = "1",
        latency_ms: float = 0.0,
    ) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.access_log: Path | None = self._tmp / "access.log" if access_log else None
        self.port = 0
        self.workers: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        # As root, nginx would switch its workers to `nobody`, who cannot read a private
        # scratch dir (pytest's tmp_path is 0700). The server listens on loopback only and
        # serves only the benchmark's files, so its workers stay root here.
        user = "user root;" if os.geteuid() == 0 else ""
        # Connections and cached open files share the per-process limit; exceeding it shows up
        # as 500s and "Too many open files" in error.log.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        for attempt in range(5):
            self.port = free_port()
            conf = self._tmp / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(
                    modules=f"load_module {ECHO_MODULE};" if latency_ms else "",
                    latency_locations=LATENCY_LOCATIONS.format(
                        api_path=API_PATH, latency_s=f"{latency_ms / 1000:g}", root=root
                    )
                    if latency_ms
                    else "",
                    workers=workers,
                    nofile=nofile,
                    file_cache=max(100, nofile // 2),
                    user=user,
                    tmp=self._tmp,
                    port=self.port,
                    root=root,
                    templates=templates or self._tmp,
                    api_path=API_PATH,
                    memory_prefix=MEMORY_PREFIX,
                    placeholder=MEMORY_PLACEHOLDER,
                    access_log=f"access_log {self.access_log} bench;" if access_log else "access_log off;",
                )
            )
            with open(self._tmp / "stderr.log", "wb") as stderr:
                self._proc = subprocess.Popen(
                    [binary, "-p", str(self._tmp), "-c", str(conf), "-e", str(self._tmp / "error.log")],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            if self._wait_ready():
                self.workers = child_pids(self._proc.pid)
                return
            self.stop()
            if attempt == 4:
                log = (self._tmp / "stderr.log").read_text(errors="replace")
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise BenchError(f"nginx did not start: {log.strip() or 'no message'}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout_s: float = 10.0) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            time.sleep(0.02)
        return False

    def cpu_s(self) -> float:
        return sum(process_cpu_s(pid) for pid in self.workers)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)


def read_access_log(path: Path, offset: int = 0, limit: int | None = None) -> list[tuple[float, int]]:
    """(request start epoch seconds, status) per logged request, sorted by start.

    nginx logs `$msec` when a request ends; the start is `$msec - $request_time` (both in
    milliseconds), which is when the server read the request line. `offset` skips what
    earlier runs logged; `limit` reads only that many lines.
    """
    entries = []
    with open(path, "rb") as handle:
        handle.seek(offset)
        for line in itertools.islice(handle, limit):
            parts = line.split()
            if len(parts) >= 3:
                entries.append((float(parts[0]) - float(parts[1]), int(parts[2])))
    entries.sort()
    return entries
