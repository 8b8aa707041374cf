"""tls.py and the client's refusals that stop a run: real TLS servers on loopback with trustme certificates.

The TLS 1.2 servers here are OpenSSL through the blocking `ssl` module on a thread, because such a
server sends its alert before closing (asyncio's TLS server drops the connection instead), as nginx
does: the client must turn that alert into one clear error rather than a retry.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from loopback import ConnectProxy, connect_proxy, server_tls

from exporter.config import HttpSettings, ProxySettings, Secret, TlsSettings
from exporter.errors import ConnectionSetupError, UsageError
from exporter.transport.client import RecordingsClient
from exporter.transport.tls import client_context

TOKEN = "tok-tls-Rr4"


def write_identity(identity: trustme.LeafCert, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "client.pem", directory / "client.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in identity.cert_chain_pems))
    identity.private_key_pem.write_to_path(str(key))
    return cert, key


@contextmanager
def blocking_tls_server(context: ssl.SSLContext) -> Iterator[int]:
    """OpenSSL on a thread: handshake, read a request, answer 200; alerts are sent before a close."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.recv(65536)
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"ok":1}')
            except (OSError, ssl.SSLError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def tls12_demanding(ca: trustme.CA, client_ca: trustme.CA) -> ssl.SSLContext:
    context = server_tls(ca, client_ca=client_ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def client(port: int, tls: TlsSettings) -> RecordingsClient:
    return RecordingsClient(HttpSettings(base_url=f"https://localhost:{port}", token=Secret(TOKEN), tls=tls))


async def test_tls12_server_demanding_a_certificate_we_lack(ca: trustme.CA, ca_file: Path) -> None:
    with blocking_tls_server(tls12_demanding(ca, trustme.CA())) as port:
        async with client(port, TlsSettings(ca_cert=ca_file)) as api:
            with pytest.raises(ConnectionSetupError, match="demands a client certificate; pass --client"):
                await api.get("r")


async def test_tls12_server_refusing_our_certificate(ca: trustme.CA, ca_file: Path, tmp_path: Path) -> None:
    """A certificate from a CA the server does not trust: refused for good, said as such."""
    cert, key = write_identity(trustme.CA().issue_cert("exporter@corp.example"), tmp_path)
    with blocking_tls_server(tls12_demanding(ca, trustme.CA())) as port:
        async with client(port, TlsSettings(ca_cert=ca_file, client_cert=cert, client_key=key)) as api:
            with pytest.raises(ConnectionSetupError, match=r"refused our TLS client cert\w+ \(unknown_ca"):
                await api.get("r")


async def test_tls12_mutual_tls_succeeds(ca: trustme.CA, ca_file: Path, tmp_path: Path) -> None:
    client_ca = trustme.CA()
    cert, key = write_identity(client_ca.issue_cert("exporter@corp.example"), tmp_path)
    with blocking_tls_server(tls12_demanding(ca, client_ca)) as port:
        async with client(port, TlsSettings(ca_cert=ca_file, client_cert=cert, client_key=key)) as api:
            assert (await api.get("r")).body == b'{"ok":1}'


def test_unusable_tls_files_are_usage_errors(ca: trustme.CA, ca_file: Path, tmp_path: Path) -> None:
    """Each bad combination or file is one UsageError naming the option, before any connection."""
    cert, key = write_identity(ca.issue_cert("exporter@corp.example"), tmp_path)
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("x@y").private_key_pem.write_to_path(str(other_key))
    cases = [
        (TlsSettings(ca_cert_only=True), "--ca-cert-only needs --ca-cert"),
        (TlsSettings(ca_cert=tmp_path / "missing.pem"), "cannot use --ca-cert"),
        (TlsSettings(ca_cert=key), "cannot use --ca-cert"),
        (TlsSettings(client_key=key), "--client-key needs --client-cert"),
        (TlsSettings(client_cert=cert, client_key=other_key), "cannot use --client-cert"),
        (TlsSettings(client_cert=cert), "cannot use --client-cert"),  # no key in the certificate file
    ]
    for settings, fragment in cases:
        with pytest.raises(UsageError, match=fragment):
            client_context(settings)
    assert client_context(TlsSettings(ca_cert=ca_file, client_cert=cert, client_key=key)) is not None


def test_an_encrypted_client_key_is_refused_without_a_prompt(ca: trustme.CA, tmp_path: Path) -> None:
    """OpenSSL would ask for the passphrase on the terminal (a hung cron job): a UsageError instead."""
    cert, key = write_identity(ca.issue_cert("exporter@corp.example"), tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass-phrase"),
        )
    )
    with pytest.raises(UsageError, match="is encrypted; passphrases are not supported"):
        client_context(TlsSettings(client_cert=cert, client_key=key))


async def test_a_proxy_wanting_another_scheme_says_so(ca_file: Path) -> None:
    """A 407 asking for Negotiate/NTLM only: the error says the exporter speaks Basic, and stops the run."""
    proxy = ConnectProxy(
        refuse_with=b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Negotiate\r\n"
        b"Proxy-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n"
    )
    async with connect_proxy(proxy) as proxy_port:
        settings = HttpSettings(
            base_url="https://localhost:9",
            token=Secret(TOKEN),
            proxy=ProxySettings(
                host="127.0.0.1",
                port=proxy_port,
                credentials=Secret("ops:pw-Zz1"),
                source="HTTPS_PROXY",
                credentials_from="HTTPS_PROXY",
            ),
            tls=TlsSettings(ca_cert=ca_file),
        )
        async with RecordingsClient(settings) as api:
            with pytest.raises(ConnectionSetupError) as caught:
                await api.get("r")
    message = str(caught.value)
    assert f"the proxy 127.0.0.1:{proxy_port} refused the credentials from HTTPS_PROXY" in message
    assert "it asks for Negotiate, NTLM, and the exporter speaks only Basic" in message
    assert "pw-Zz1" not in message
    assert TOKEN not in message
