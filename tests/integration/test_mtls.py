"""Mutual TLS on the gRPC listener (--tls-client-ca), and certificates reloaded on SIGHUP without dropping
connections or calls. Certificates come from trustme's throwaway CAs."""

from __future__ import annotations

import datetime
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import (
    CHANNEL_OPTIONS,
    MIB,
    GatewayProcess,
    ImageTracker,
    StartGateway,
    open_channel,
    sha512_hex,
    start_refused,
    unique_name,
    wait_until,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
# A channel of its own connection: the default global subchannel pool would let a new channel reuse
# another's connection, which would hide a handshake.
OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


@dataclass
class Files:
    cert: Path
    key: Path
    client_ca: Path

    def flags(self) -> tuple[str, ...]:
        return (
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
            "--tls-client-ca",
            str(self.client_ca),
        )

    def install(self, server_ca: trustme.CA, client_ca: trustme.CA) -> None:
        """The gateway's certificate issued by `server_ca`, and `client_ca` as the one it trusts."""
        certificate = server_ca.issue_cert("127.0.0.1", "localhost")
        certificate.cert_chain_pems[0].write_to_path(str(self.cert))
        certificate.private_key_pem.write_to_path(str(self.key))
        client_ca.cert_pem.write_to_path(str(self.client_ca))


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "client-ca.pem")


def secure_channel(address: str, server_ca: trustme.CA, client: trustme.LeafCert | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server_ca.cert_pem.bytes(),
        private_key=None if client is None else client.private_key_pem.bytes(),
        certificate_chain=None if client is None else client.cert_chain_pems[0].bytes(),
    )
    return grpc.secure_channel(address, credentials, options=OWN_CONNECTION)


def health_of(channel: grpc.Channel) -> int | grpc.StatusCode:
    """The overall health status, or the code of the failed call (UNAVAILABLE when the handshake failed)."""
    checker: Any = health_pb2_grpc.HealthStub(channel)
    try:
        status: int = checker.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return status


def status_with(
    address: str, server_ca: trustme.CA, client: trustme.LeafCert | None
) -> int | grpc.StatusCode:
    with secure_channel(address, server_ca, client) as channel:
        return health_of(channel)


def test_mutual_tls_accepts_only_valid_certificates_of_the_client_ca(
    glance: GlanceServer, files: Files, start_gateway: StartGateway
) -> None:
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    files.install(server_ca, client_ca)
    gateway = start_gateway(glance.url, *files.flags())
    assert any("(mutual TLS)" in line for line in gateway.log_lines)

    now = datetime.datetime.now(datetime.UTC)
    expired = client_ca.issue_cert(
        "client@example.org",
        not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )
    assert status_with(gateway.address, server_ca, client_ca.issue_cert("client@example.org")) == SERVING
    # Refused at the handshake: no certificate, one from another CA, an expired one.
    assert status_with(gateway.address, server_ca, None) == grpc.StatusCode.UNAVAILABLE
    assert status_with(gateway.address, server_ca, other_ca.issue_cert("client@example.org")) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert status_with(gateway.address, server_ca, expired) == grpc.StatusCode.UNAVAILABLE
    # And no plaintext.
    with open_channel(gateway.address) as channel:
        assert health_of(channel) == grpc.StatusCode.UNAVAILABLE


def test_sighup_reloads_certificates_for_new_connections_without_dropping_calls(
    glance: GlanceServer, files: Files, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    data = os.urandom(8 * MIB)
    image = new_image(name=unique_name("reload"), data=data)
    old_server_ca, old_client_ca = trustme.CA(), trustme.CA()
    new_server_ca, new_client_ca = trustme.CA(), trustme.CA()
    old_client, new_client = (
        old_client_ca.issue_cert("a@example.org"),
        new_client_ca.issue_cert("b@example.org"),
    )
    files.install(old_server_ca, old_client_ca)
    gateway = start_gateway(glance.url, *files.flags())

    with secure_channel(gateway.address, old_server_ca, old_client) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        responses = iter(stub.GetImage(pb.GetImageRequest(image_id=image.id), timeout=60))
        assert next(responses).header.length == len(data)
        received = [next(responses).data]  # the rest waits on flow control, through the reload

        files.install(new_server_ca, new_client_ca)
        reload(gateway, "new connections use the files read now")

        received.extend(message.data for message in responses)
        assert sha512_hex(b"".join(received)) == sha512_hex(data)
        # The connection itself was kept: a reconnect would fail now, this client trusting only the old CA.
        assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=10).image.id == image.id

    # New connections get the new certificate and must present one of the new client CA.
    assert status_with(gateway.address, new_server_ca, new_client) == SERVING
    assert status_with(gateway.address, old_server_ca, old_client) == grpc.StatusCode.UNAVAILABLE
    assert status_with(gateway.address, new_server_ca, old_client) == grpc.StatusCode.UNAVAILABLE

    # Unusable files are refused and the current certificates kept.
    files.cert.write_text("not a certificate\n")
    reload(gateway, "kept the current certificates")
    assert any("WARNING" in line and "kept the current certificates" in line for line in gateway.log_lines)
    assert status_with(gateway.address, new_server_ca, new_client) == SERVING


def reload(gateway: GatewayProcess, expected: str) -> None:
    before = gateway.log_text().count(expected)
    os.kill(gateway.pid, signal.SIGHUP)
    wait_until(lambda: gateway.log_text().count(expected) > before, 10, f"a log line with {expected!r}")


def test_sighup_without_tls_is_harmless(glance: GlanceServer, start_gateway: StartGateway) -> None:
    gateway = start_gateway(glance.url)
    reload(gateway, "no certificates to reload")
    with open_channel(gateway.address) as channel:
        assert health_of(channel) == SERVING
    assert gateway.returncode() is None


def test_unusable_certificate_files_stop_the_start(glance: GlanceServer, files: Files) -> None:
    files.install(trustme.CA(), trustme.CA())
    files.key.write_text("not a key\n")
    gateway = start_refused(glance.url, *files.flags())
    assert gateway.returncode() == 1
    assert "cannot serve TLS" in gateway.log_text() and "Traceback" not in gateway.log_text()
