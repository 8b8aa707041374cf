"""The exporter in a company network, as a real process: a CONNECT proxy that wants credentials, a
private CA, an API that demands a client certificate, and a token rotated mid-run.

Everything is real and on loopback: the fake API (plain http), a TLS front relaying to it (trustme
certificates), a CONNECT proxy recording every byte it relays (`loopback.py`). Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme
from fakeapi import FakeServerHandle
from loopback import ConnectProxy, TlsFront, connect_proxy, server_tls, tls_front
from on_disk import read_failed, read_records, read_summary, write_manifest
from runs import ROOT, TOKEN, cli_env, export_args, spawn

PROXY_USER, PROXY_PASSWORD = "ops", "pr0xy-Pw-71"
NEW_TOKEN = "rotated-token-Kx55"
_NETWORK_VARIABLES = (
    "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
    "no_proxy", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
)  # fmt: skip


def net_env(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    """The environment of a run: no proxy, no CA settings but those the test gives."""
    env = {k: v for k, v in cli_env(token).items() if k not in _NETWORK_VARIABLES}
    env.update(extra)
    return env


async def run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """`python -m exporter ARGS` as a real process while this loop serves the proxy and TLS front."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode() + stderr.decode()


def assert_nowhere(secrets: list[str], output: str, out: Path) -> None:
    """No credential in the process's output or in any file of the archive."""
    for secret in secrets:
        assert secret not in output
        for path in out.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


# --- proxies ---------------------------------------------------------------------------------------


async def test_https_proxy_from_the_environment_with_credentials(
    api: FakeServerHandle, ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    """HTTPS_PROXY with user:password: Basic credentials on each CONNECT and nowhere else; the proxy
    relays neither the token nor a recording in clear; the proxy is named once, without credentials."""
    ids = [f"px-{i}" for i in range(12)]
    manifest, out = write_manifest(tmp_path / "ids.txt", ids), tmp_path / "out"
    proxy = ConnectProxy(credentials=f"{PROXY_USER}:{PROXY_PASSWORD}")
    front = TlsFront(api.port)
    async with connect_proxy(proxy) as proxy_port, tls_front(front, server_tls(ca)) as tls_port:
        env = net_env(HTTPS_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy_port}")
        code, output = await run(
            *export_args(manifest, out, f"https://localhost:{tls_port}", "--ca-cert", str(ca_file)), env=env
        )
    assert code == 0, output
    records = read_records(out)
    assert sorted(r["id"] for r in records) == sorted(ids)

    basic = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode())
    assert proxy.heads
    for head in proxy.heads:
        assert head.startswith(f"CONNECT localhost:{tls_port} HTTP/1.1\r\n".encode())
        assert b"Proxy-Authorization: Basic " + basic + b"\r\n" in head
        assert TOKEN.encode() not in head
    relayed = bytes(proxy.relayed)
    assert len(relayed) > sum(len(line) for line in (out / "records-00001.ndjson").read_bytes().splitlines())
    for forbidden in (TOKEN.encode(), basic, PROXY_PASSWORD.encode(), b"Proxy-Authorization", b'"data"'):
        assert forbidden not in relayed, forbidden
    for line in (out / "records-00001.ndjson").read_bytes().splitlines():
        assert line[:40] not in relayed

    proxy_url = f"http://127.0.0.1:{proxy_port}"
    assert output.count("through the proxy") == 1
    assert f"through the proxy {proxy_url} (from HTTPS_PROXY), with credentials from HTTPS_PROXY" in output
    assert read_summary(out)["proxy"] == proxy_url
    assert_nowhere([TOKEN, PROXY_PASSWORD, basic.decode()], output, out)


async def test_no_proxy_and_proxy_none_connect_directly(
    api: FakeServerHandle, ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    """NO_PROXY naming the host, or --proxy none, keeps the proxy out of it; summary.json says no proxy."""
    manifest = write_manifest(tmp_path / "ids.txt", ["d-1", "d-2"])
    proxy = ConnectProxy()
    async with connect_proxy(proxy) as proxy_port, tls_front(TlsFront(api.port), server_tls(ca)) as tls_port:
        url = f"https://localhost:{tls_port}"
        env = net_env(
            HTTPS_PROXY=f"http://127.0.0.1:{proxy_port}", NO_PROXY=f"example.org,localhost:{tls_port}"
        )
        code, output = await run(
            *export_args(manifest, tmp_path / "a", url, "--ca-cert", str(ca_file)), env=env
        )
        assert code == 0, output
        assert "not using the proxy in HTTPS_PROXY: NO_PROXY matches localhost" in output
        env = net_env(https_proxy=f"http://127.0.0.1:{proxy_port}")
        code, output = await run(
            *export_args(manifest, tmp_path / "b", url, "--ca-cert", str(ca_file), "--proxy", "none"), env=env
        )
        assert code == 0, output
    assert proxy.heads == []
    assert "through the proxy" not in output
    assert read_summary(tmp_path / "b")["proxy"] is None


@pytest.mark.parametrize("credentials", ["none", "wrong-file"])
async def test_a_proxy_wanting_credentials_stops_the_run_with_exit_2(
    api: FakeServerHandle, ca: trustme.CA, ca_file: Path, tmp_path: Path, credentials: str
) -> None:
    """A 407 at the first request: exit 2 with one line saying what to do; no id marked failed."""
    manifest, out = write_manifest(tmp_path / "ids.txt", [f"p-{i}" for i in range(50)]), tmp_path / "out"
    extra: list[str] = []
    if credentials == "wrong-file":
        auth_file = tmp_path / "proxy-auth"
        auth_file.write_text(f"{PROXY_USER}:not-the-Pw-93\n")
        auth_file.chmod(0o600)
        extra = ["--proxy-auth-file", str(auth_file)]
    proxy = ConnectProxy(credentials=f"{PROXY_USER}:{PROXY_PASSWORD}")
    async with connect_proxy(proxy) as proxy_port, tls_front(TlsFront(api.port), server_tls(ca)) as tls_port:
        env = net_env(HTTPS_PROXY=f"127.0.0.1:{proxy_port}")
        url = f"https://localhost:{tls_port}"
        code, output = await run(*export_args(manifest, out, url, "--ca-cert", str(ca_file), *extra), env=env)
    assert code == 2, output
    errors = [line for line in output.splitlines() if "(407" in line]  # not a port that holds 407
    assert len(errors) == 1, output
    if credentials == "none":
        assert "requires credentials (407)" in errors[0]
        assert "--proxy-auth-file" in errors[0]
    else:
        assert f"refused the credentials from --proxy-auth-file {auth_file}" in errors[0]
    assert read_failed(out) == {}
    assert read_summary(out)["counts"]["failed"] == 0
    assert len(proxy.heads) <= 8  # one CONNECT per worker at most: no retry loop
    assert api.stats()["requests_total"] == 0
    assert_nowhere(["not-the-Pw-93", TOKEN], output, out)


async def test_proxy_credentials_on_the_command_line_are_refused_without_echo(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    code, output = await run(
        *export_args(
            manifest, tmp_path / "out", "https://api.example.com", "--proxy", "http://u:Cl1-pw@proxy:3128"
        ),
        env=net_env(),
    )
    assert code == 2
    assert "--proxy must not contain credentials" in output
    assert "Cl1-pw" not in output
    assert not (tmp_path / "out").exists()


# --- TLS -------------------------------------------------------------------------------------------


async def test_ca_cert_trusts_a_private_ca_without_ssl_cert_file(
    api: FakeServerHandle, ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    """--ca-cert adds the company CA (and --ca-cert-only uses it alone); without it the API is not trusted."""
    manifest = write_manifest(tmp_path / "ids.txt", ["c-1", "c-2"])
    async with tls_front(TlsFront(api.port), server_tls(ca)) as tls_port:
        url = f"https://localhost:{tls_port}"
        code, output = await run(
            *export_args(manifest, tmp_path / "a", url, "--ca-cert", str(ca_file)), env=net_env()
        )
        assert code == 0, output
        code, output = await run(
            *export_args(manifest, tmp_path / "b", url, "--ca-cert", str(ca_file), "--ca-cert-only"),
            env=net_env(),
        )
        assert code == 0, output
        code, output = await run(
            *export_args(manifest, tmp_path / "c", url, "--max-attempts", "1"), env=net_env()
        )
    assert code == 1
    assert "the TLS certificate of localhost was refused" in read_failed(tmp_path / "c")["c-1"]["error"]


async def test_ca_cert_that_is_not_a_ca_bundle_exits_2(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("hello\n")
    code, output = await run(
        *export_args(manifest, tmp_path / "out", "https://api.example.com", "--ca-cert", str(bogus)),
        env=net_env(),
    )
    assert code == 2
    assert f"cannot use --ca-cert {bogus}" in output
    assert not (tmp_path / "out").exists()


async def test_mutual_tls_with_a_client_certificate(
    api: FakeServerHandle, ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    """An API that demands and checks a client certificate: --client-cert/--client-key get through (a key
    others can read earns a warning); without them, one line and exit 2, nothing marked failed."""
    client_ca = trustme.CA()
    identity = client_ca.issue_cert("exporter@corp.example")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in identity.cert_chain_pems))
    identity.private_key_pem.write_to_path(str(key))
    key.chmod(0o644)  # as Kubernetes mounts a Secret without defaultMode
    ids = [f"m-{i}" for i in range(10)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    front = TlsFront(api.port)
    async with tls_front(front, server_tls(ca, client_ca=client_ca)) as tls_port:
        url = f"https://localhost:{tls_port}"
        with_cert = ["--ca-cert", str(ca_file), "--client-cert", str(cert), "--client-key", str(key)]
        code, output = await run(*export_args(manifest, tmp_path / "a", url, *with_cert), env=net_env())
        assert code == 0, output
        assert f"--client-key {key} can be read by other users; chmod 600 it" in output
        assert sorted(r["id"] for r in read_records(tmp_path / "a")) == sorted(ids)
        assert front.peer_certificates
        accepted = front.accepted

        code, output = await run(
            *export_args(manifest, tmp_path / "b", url, "--ca-cert", str(ca_file)), env=net_env()
        )
    assert code == 2, output
    assert output.count("demands a TLS client certificate") == 1, output
    assert "--client-cert" in output
    assert front.accepted == accepted  # no handshake without a certificate got through
    assert read_failed(tmp_path / "b") == {}


# --- tokens that rotate ----------------------------------------------------------------------------


def _write_token(path: Path, token: str) -> None:
    """Replace the token file at once, as the kubelet swaps a Secret's files."""
    fresh = path.with_suffix(".new")
    fresh.write_text(token + "\n")
    fresh.chmod(0o600)
    os.replace(fresh, path)


def _wait_for_requests(api: FakeServerHandle, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while api.stats()["requests_total"] < count:
        assert process.poll() is None, "the run ended before the token was rotated"
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    _write_token(path, TOKEN)
    return path


def _rotation_run(
    api: FakeServerHandle, tmp_path: Path, token_file: Path, ids: list[str]
) -> subprocess.Popen[bytes]:
    """A run slow enough (150 requests/s) to rotate the token under it."""
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    args = export_args(manifest, tmp_path / "out", api.url, "--token-file", str(token_file))
    return spawn(*args, "--rate", "150", "--concurrency", "4", env=net_env(token=None))


def _finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout.decode() + stderr.decode()


def test_a_token_rotated_mid_run_is_picked_up_on_the_401(
    api: FakeServerHandle, tmp_path: Path, token_file: Path
) -> None:
    """The server switches tokens while the file is rewritten: exit 0, every id exactly once, none failed."""
    ids = [f"t-{i}" for i in range(240)]
    process = _rotation_run(api, tmp_path, token_file, ids)
    _wait_for_requests(api, 60, process)
    _write_token(token_file, NEW_TOKEN)
    api.configure(token=NEW_TOKEN)
    code, output = _finish(process)
    assert code == 0, output
    out = tmp_path / "out"
    archived = [r["id"] for r in read_records(out)]
    assert sorted(archived) == sorted(ids)  # each exactly once
    assert read_failed(out) == {}
    assert api.stats()["bad_auth"] >= 1  # the old token was refused, and that was survived
    assert output.count("holds a new one: using it") == 1
    assert_nowhere([TOKEN, NEW_TOKEN], output, out)


def test_a_refused_token_the_file_still_holds_exits_3(
    api: FakeServerHandle, tmp_path: Path, token_file: Path
) -> None:
    """The file read again holds the same token: the refusal stands, exit 3 as before."""
    process = _rotation_run(api, tmp_path, token_file, [f"s-{i}" for i in range(240)])
    _wait_for_requests(api, 30, process)
    api.configure(token=NEW_TOKEN)
    code, output = _finish(process)
    assert code == 3, output
    assert "refused the token" in output
    assert output.count("read again: the same token") == 1
    assert_nowhere([TOKEN, NEW_TOKEN], output, tmp_path / "out")


def test_sighup_reads_the_token_file_again(api: FakeServerHandle, tmp_path: Path, token_file: Path) -> None:
    """A rotation announced ahead: while the API accepts both tokens, the file is rewritten and SIGHUP
    takes the new token at once; when the old one is revoked, at most the requests in flight are refused."""
    ids = [f"h-{i}" for i in range(240)]
    process = _rotation_run(api, tmp_path, token_file, ids)
    assert process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in process.stderr or []:
            lines.put(line.decode())

    reader = threading.Thread(target=read_lines)
    reader.start()
    _wait_for_requests(api, 30, process)
    api.configure(token=NEW_TOKEN, previous_token=TOKEN)  # the overlap
    _write_token(token_file, NEW_TOKEN)
    process.send_signal(signal.SIGHUP)
    expected = f"SIGHUP: read --token-file {token_file} again: a new token"
    deadline = time.monotonic() + 10
    while expected not in lines.get(timeout=max(0.01, deadline - time.monotonic())):
        pass
    api.configure(previous_token=None)  # the old token is revoked
    code = process.wait(timeout=60)
    reader.join()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert code == 0, "".join(rest)
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == sorted(ids)
    assert api.stats()["bad_auth"] <= 4  # at most the requests in flight with the old token
