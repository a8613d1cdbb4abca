"""The gRPC listener over TLS, in front of the real Glance."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from integration.support import ImageTracker, StartGateway, open_channel, unique_name
from localglance import GlanceServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl is on every machine of this kind)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_listener_serves_verified_clients_only(
    certificate: tuple[Path, Path], glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    cert, key = certificate
    image = new_image(name=unique_name("tls"))
    gateway = start_gateway(glance.url, "--tls-cert", str(cert), "--tls-key", str(key))
    assert any("(TLS)" in line for line in gateway.log_lines)

    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(gateway.address, credentials) as channel:
        found = pb_grpc.ImageServiceStub(channel).GetImageMeta(
            pb.GetImageMetaRequest(image_id=image.id), timeout=10
        )
    assert found.image.id == image.id

    # A plaintext client cannot talk to a TLS listener.
    with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ImageServiceStub(channel).GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
