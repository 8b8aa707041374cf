"""An S3-compatible server for the tests and CI: ministack, in a virtualenv of its own, on loopback.

ministack (PyPI, MIT) is a pure-Python AWS emulator whose S3 enforces what the
exporter's object-storage guarantees rest on: BadDigest for a wrong
`x-amz-checksum-sha256` or Content-MD5, `If-None-Match: *` on PutObject and
CompleteMultipartUpload (412), Object Lock retention and legal holds (a
locked version cannot be deleted), composite checksums in ListParts. moto's
server accepts wrong checksums, so it cannot stand in.

ministack pins its own botocore (1.43.106) and aiobotocore pins another, so it
cannot share the project's .venv: `ensure_venv` makes `.venv-ministack/` (git-ignored)
with exactly `MINISTACK` in it, once, and `start` runs it as a subprocess bound
to 127.0.0.1 only.

    python scripts/ministack_server.py install         # create .venv-ministack (CI does this)
    python scripts/ministack_server.py serve [--port N] # run in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-ministack"
#: The version the tests were written against; bump it deliberately.
MINISTACK = "ministack==1.5.33"
_STAMP = VENV / ".installed"


class Unavailable(RuntimeError):
    """ministack could not be installed or started here; the message says why."""


def ensure_venv(python: str = sys.executable) -> Path:
    """`.venv-ministack/bin/ministack`, installing it first when needed; Unavailable if that fails."""
    executable = VENV / "bin" / "ministack"
    if _STAMP.is_file() and _STAMP.read_text().strip() == MINISTACK and executable.is_file():
        return executable
    try:
        if not (VENV / "bin" / "python").is_file():
            subprocess.run([python, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                MINISTACK,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise Unavailable(
            f"could not install {MINISTACK} into {VENV}: {exc}; {detail.decode(errors='replace')[-400:]}"
        ) from exc
    _STAMP.write_text(MINISTACK + "\n")
    return executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    """A running ministack: its endpoint URL and the process."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running(log_dir: Path, port: int | None = None, timeout_s: float = 60.0) -> Iterator[Server]:
    """ministack on 127.0.0.1:`port` (a free one by default) until the block ends."""
    executable = ensure_venv()
    port = port or free_port()
    log = log_dir / f"ministack-{port}.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(log_dir)),
        "TMPDIR": str(log_dir),
        "BIND_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "MINISTACK_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "IOT_MTLS_ENABLED": "0",
    }
    with open(log, "wb") as sink:
        process = subprocess.Popen([str(executable)], env=env, stdout=sink, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(endpoint, process, log, timeout_s)
        yield Server(endpoint, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(endpoint: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"ministack exited with {process.returncode}: {log.read_text()[-800:]}")
        try:
            with urllib.request.urlopen(endpoint + "/_ministack/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise Unavailable(f"ministack did not answer on {endpoint} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help=f"create {VENV.name} with {MINISTACK}")
    serve = commands.add_parser("serve", help="run ministack on 127.0.0.1 until interrupted")
    serve.add_argument("--port", type=int, default=4566)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(ensure_venv())
            return 0
        with running(Path(os.environ.get("TMPDIR", "/tmp")), args.port) as server:
            print(f"ministack on {server.endpoint} (log: {server.log}); Ctrl-C stops it", flush=True)
            server.process.wait()
    except Unavailable as exc:
        print(f"ministack_server: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
