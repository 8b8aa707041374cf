"""Secret files (--token-file, --proxy-auth-file, --ca-cert, --client-cert, --client-key): regular files only.

A FIFO used to block the open, in the event loop, for ever (SIGTERM could not
stop it); a device would be read for ever. Each is refused: exit 2 at the
start, and on a re-read the token in use is kept (SIGHUP) or the refusal
stands (exit 3), in seconds, never a hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trustme
from fakeapi import FakeServerHandle
from on_disk import read_records, write_manifest
from runs import TOKEN, cli, cli_env, spawn

from exporter.errors import UsageError
from exporter.transport.credentials import MAX_SECRET_FILE_BYTES, read_secret_file, read_token_file

#: Far more than a refusal takes; what a hang on the old code costs the test before it fails.
HANG_S = 20


def _fifo(path: Path) -> Path:
    os.mkfifo(path, 0o600)
    return path


def test_only_a_regular_file_of_bounded_size_is_read(tmp_path: Path) -> None:
    """A FIFO, a device, a directory or a file over the cap are refused, naming what they are; links
    are followed (Kubernetes mounts Secrets through them) to a regular file."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    link = tmp_path / "link"
    link.symlink_to(token)
    assert read_token_file(link).reveal() == TOKEN
    big = tmp_path / "big"
    big.write_text("x" * (MAX_SECRET_FILE_BYTES + 1))
    link_to_fifo = tmp_path / "link-to-fifo"
    link_to_fifo.symlink_to(_fifo(tmp_path / "fifo"))
    for path, fragment in (
        (tmp_path / "fifo", "a FIFO"),
        (link_to_fifo, "a FIFO"),
        (Path("/dev/zero"), "a character device"),
        (tmp_path, "a directory"),
        (big, f"over {MAX_SECRET_FILE_BYTES} bytes"),
    ):
        started = time.monotonic()
        with pytest.raises(UsageError, match=fragment):
            read_secret_file(path, "--token-file")
        assert time.monotonic() - started < HANG_S


@pytest.mark.parametrize(
    "option", ["--token-file", "--proxy-auth-file", "--ca-cert", "--client-cert", "--client-key"]
)
def test_a_fifo_as_a_secret_file_exits_2_at_the_start(tmp_path: Path, option: str, ca: trustme.CA) -> None:
    """Any secret file that is a FIFO stops the run at once with exit 2, naming the option and the FIFO."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    fifo = _fifo(tmp_path / "secret")
    plain = tmp_path / "client.pem"  # a real certificate, so that only its key is in question
    ca.issue_cert("client.example").cert_chain_pems[0].write_to_path(str(plain))
    args = ["export", str(manifest), "--out", str(tmp_path / "out"), "--base-url", "https://127.0.0.1:9"]
    extra = {
        "--token-file": ["--token-file", str(fifo)],
        "--proxy-auth-file": ["--proxy", "http://127.0.0.1:9", "--proxy-auth-file", str(fifo)],
        "--ca-cert": ["--ca-cert", str(fifo)],
        "--client-cert": ["--client-cert", str(fifo)],
        "--client-key": ["--client-cert", str(plain), "--client-key", str(fifo)],
    }[option]
    try:
        result = cli(*args, *extra, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{option} FIFO: the run blocked instead of refusing it")
    assert result.returncode == 2, result.stderr
    assert f"{option} {fifo} is a FIFO: it must be a regular file" in result.stderr
    assert not (tmp_path / "out").exists()


def _slow_run(api: FakeServerHandle, tmp_path: Path, token_file: Path) -> subprocess.Popen[bytes]:
    api.configure(latency_ms=20)
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    manifest = write_manifest(tmp_path / "ids.txt", [f"f-{i}" for i in range(300)])
    args = ["export", str(manifest), "--base-url", api.url, "--out", str(tmp_path / "out"), "--rate", "0"]
    return spawn(
        *args, "--concurrency", "2", "--no-progress", "--token-file", str(token_file), env=cli_env(None)
    )


def _wait_for(api: FakeServerHandle, requests: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while api.stats()["requests_total"] < requests:
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _swap_in_a_fifo(token_file: Path) -> None:
    """The token file replaced by a FIFO, atomically, as a secret manager replaces a file."""
    os.replace(_fifo(token_file.with_name("fifo")), token_file)


def _finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the run blocked on the FIFO")
    return process.returncode, stderr.decode()


def test_sighup_with_a_fifo_swapped_in_keeps_the_token_and_finishes(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """A FIFO swapped in for --token-file and a SIGHUP: a warning, the token in use kept, exit 0."""
    token_file = tmp_path / "token"
    process = _slow_run(api, tmp_path, token_file)
    _wait_for(api, 20, process)
    _swap_in_a_fifo(token_file)
    process.send_signal(signal.SIGHUP)
    code, stderr = _finish(process)
    assert code == 0, stderr
    assert "is a FIFO" in stderr
    assert "SIGHUP: read --token-file" in stderr
    assert "again: no usable token" in stderr
    assert len(read_records(tmp_path / "out")) == 300


def test_a_refused_token_with_a_fifo_swapped_in_exits_3(api: FakeServerHandle, tmp_path: Path) -> None:
    """The API refuses the token and --token-file is now a FIFO: read again without blocking, the
    refusal stands: exit 3 within seconds."""
    token_file = tmp_path / "token"
    process = _slow_run(api, tmp_path, token_file)
    _wait_for(api, 20, process)
    _swap_in_a_fifo(token_file)
    api.configure(token="a-token-nobody-has")
    code, stderr = _finish(process)
    assert code == 3, stderr
    assert "is a FIFO" in stderr
    assert "refused the token" in stderr
