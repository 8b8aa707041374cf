"""The TLS context of a run: whom to trust, which client certificate to show, and a refusal told apart.

A server that refuses us for our certificate is told from any other broken
connection.

`client_context` builds the one `ssl.SSLContext` of a run from `TlsSettings`:
the system's CA store plus `--ca-cert` (or `--ca-cert` alone with
`--ca-cert-only`), and `--client-cert`/`--client-key` for mutual TLS. Hostname
checking and certificate verification stay on; there is no way to turn them off.

A server that demands a certificate we lack, or refuses ours, will refuse
every connection the same way, so that is a `ConnectionSetupError` (exit 2 at
the first request), not a network error to retry. With TLS 1.2 the refusal
is an alert during the handshake. With TLS 1.3 the client's handshake is
done before the server looks at the certificate, and the server's alert
often races our request and is lost to a reset; so `CertificateRequests`
notes which connections the server asked for a certificate on (Python has
no public API for it: `SSLContext._msg_callback`, CPython's hook to OpenSSL's
message callback since 3.8, sees the handshake messages). A connection we
showed no certificate on, that was asked for one, and that the server closed
before answering, was refused for the certificate.
"""

from __future__ import annotations

import ssl
import weakref
from typing import Any

from exporter.config import TlsSettings
from exporter.errors import ConnectionSetupError, UsageError

# RFC 8446 §4 / RFC 5246 §7.4: the record content type `handshake` and the message `certificate_request`.
_HANDSHAKE = 22
_CERTIFICATE_REQUEST = 13

#: Alerts a server sends about the client's certificate (RFC 8446 §6.2), by OpenSSL's reason name.
_REFUSED_OURS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate_revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
}


class _Passphrase(Exception):
    """The client key is encrypted: OpenSSL asked for a passphrase we do not have."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal, which hangs a cron job.
    raise _Passphrase


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The SSL context for the API, or UsageError naming the file that cannot be used and why."""
    ca = settings.ca_cert
    if settings.ca_cert_only and ca is None:
        raise UsageError("--ca-cert-only needs --ca-cert PATH: the CA bundle to trust instead of the system")
    try:
        if ca is not None and settings.ca_cert_only:
            context = ssl.create_default_context(cafile=str(ca))
        else:
            context = ssl.create_default_context()
            if ca is not None:
                context.load_verify_locations(cafile=str(ca))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot use --ca-cert {ca}: {_reason(exc)}; it must be a PEM file of CA certificates"
        ) from exc
    if settings.client_key is not None and settings.client_cert is None:
        raise UsageError("--client-key needs --client-cert PATH: the certificate that goes with the key")
    if settings.client_cert is not None:
        names = f"--client-cert {settings.client_cert}"
        if settings.client_key is not None:
            names += f" and --client-key {settings.client_key}"
        try:
            context.load_cert_chain(
                str(settings.client_cert),
                str(settings.client_key) if settings.client_key is not None else None,
                password=_no_passphrase,
            )
        except _Passphrase:
            raise UsageError(
                f"the key of {names} is encrypted; passphrases are not supported: give an unencrypted "
                "key file (mode 0600), e.g. from `openssl pkey -in KEY -out KEY.plain`"
            ) from None
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot use {names}: {_reason(exc)}; they must be PEM files, the key unencrypted and "
                "matching the certificate (or inside the certificate file)"
            ) from exc
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


class CertificateRequests:
    """Which TLS connections the server asked for a client certificate on (see the module docstring).

    Watches only a context that shows no certificate: with one, a refusal
    is told by the alert alone. The watch costs: CPython turns every record's
    header into enums for the callback, about 15-20 µs a request on ~10 KB
    bodies. So it is on only until the server first answers (then it serves
    us without a certificate) and again after a new connection closed
    unanswered, to tell whether the next one is refused for the certificate.
    """

    __slots__ = ("__weakref__", "_asked", "_context", "watching")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._asked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._context = context
        self.watching = False
        self.watch(on=True)

    def watch(self, *, on: bool) -> None:
        """Turn the watch on (new connections are watched) or off."""
        if on != self.watching and hasattr(self._context, "_msg_callback"):
            setattr(self._context, "_msg_callback", self._message if on else None)  # noqa: B010 - private
            self.watching = on

    def _message(
        self, conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: Any
    ) -> None:
        # Called for every TLS record header too: keep it to a comparison or two.
        if msg_type == _CERTIFICATE_REQUEST and content_type == _HANDSHAKE and direction == "read":
            self._asked.add(conn)

    def asked(self, ssl_object: object) -> bool:
        """Whether the server asked for a client certificate on the connection of `ssl_object`."""
        return ssl_object is not None and ssl_object in self._asked


def demanded_certificate(host: str) -> ConnectionSetupError:
    """A server that asked for a certificate we lack and closed the connection without answering."""
    return ConnectionSetupError(
        f"the API at {host} demands a TLS client certificate and closed the connection without one: "
        "pass --client-cert PATH and --client-key PATH"
    )


def certificate_refusal(
    exc: ssl.SSLError, host: str, *, have_certificate: bool
) -> ConnectionSetupError | None:
    """The error for a TLS alert that refuses us for our client certificate; None for any other."""
    reason = str(exc.reason or "")
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or (
        reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and not have_certificate
    ):
        alert = "certificate_required" if "CERTIFICATE_REQUIRED" in reason else "handshake_failure"
        return ConnectionSetupError(
            f"the API at {host} refused the TLS handshake ({alert}): it demands a client certificate; "
            "pass --client-cert PATH and --client-key PATH"
        )
    if have_certificate and reason in _REFUSED_OURS:
        return ConnectionSetupError(
            f"the API at {host} refused our TLS client certificate ({_REFUSED_OURS[reason]}): check that "
            "--client-cert is the one it expects, signed by a CA it trusts and not expired"
        )
    return None
