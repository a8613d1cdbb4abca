"""TLS on the gRPC listener: certificate and key, optionally a client CA (mutual TLS), reloaded on SIGHUP.

gRPC core calls the certificate-configuration fetcher of grpc.dynamic_ssl_server_credentials at the start
of each TLS handshake, on its own threads (checked under grpc.aio, gRPC 1.85): returning None keeps the
current configuration, returning one replaces it for that and later handshakes. Established connections
keep the keys they agreed on, so a reload (certificate rotation) drops no connection and no call.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from gateway.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM contents of --tls-cert, --tls-key and --tls-client-ca, checked to belong together."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes | None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert_chain)], self.client_ca)


def read_files(cert: str, key: str, client_ca: str | None) -> CertificateFiles:
    """Reads and checks the files; ValueError says what is wrong with them."""
    first = _read(cert, key, client_ca)
    _check(cert, key, client_ca)
    # Checked by path, used by content: a file replaced in between would slip past the check.
    if _read(cert, key, client_ca) != first:
        raise ValueError("the files changed while they were read; send SIGHUP again once they are written")
    return first


def _read(cert: str, key: str, client_ca: str | None) -> CertificateFiles:
    try:
        return CertificateFiles(
            Path(cert).read_bytes(),
            Path(key).read_bytes(),
            None if client_ca is None else Path(client_ca).read_bytes(),
        )
    except OSError as exc:
        raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from None


def _check(cert: str, key: str, client_ca: str | None) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=b"")
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"{cert} and {key} are not a PEM certificate chain and its private key: {exc}"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{client_ca} is not a PEM bundle of CA certificates: {exc}") from None


class ServerCertificates:
    """The listener's certificates: `credentials()` for the one TLS port, `reload()` on SIGHUP."""

    def __init__(self, cert: str, key: str, client_ca: str | None) -> None:
        self._paths = (cert, key, client_ca)
        self._current = read_files(cert, key, client_ca)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        # The fetcher runs on gRPC core's threads, reload() on the event loop's.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerCertificates | None:
        """None for plaintext; ValueError when the files are unusable."""
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)

    @property
    def mutual(self) -> bool:
        return self._paths[2] is not None

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one port: gRPC's wrapper hands the initial configuration to the first handshake
        factory it builds, so two ports sharing them would leave the second without one."""
        # The stubs say the fetcher must return a configuration; gRPC documents None as "keep the current".
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._current.configuration(), fetch, require_client_authentication=self.mutual
        )

    def reload(self) -> bool:
        """Re-reads the files; new handshakes use them once checked. Unusable files keep the current ones."""
        try:
            files = read_files(*self._paths)
        except ValueError as exc:
            log.warning("certificate reload: kept the current certificates: %s", exc)
            return False
        with self._lock:
            self._current = files
            self._pending = files.configuration()
        log.info("certificate reload: new connections use the files read now; existing ones keep theirs")
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called at every new handshake: a new configuration once after each reload, else None ("unchanged"),
        # so gRPC does not rebuild its handshaker factory per connection.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
