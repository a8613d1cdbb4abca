"""grpc.health.v1.Health against a real Glance: glance.gateway.v1.ImageService follows Glance's reachability
while "" (the process) stays SERVING, and --health-port serves the same health in plaintext beside TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer
from localglance.ports import free_port

from .support import StartGateway, assert_error, new_id, open_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IMAGE_SERVICE = "glance.gateway.v1.ImageService"


def check(channel: grpc.Channel, service: str) -> int:
    checker: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs list no methods
    status: int = checker.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
    return status


@pytest.fixture
def own_glance(tmp_path: Path) -> Iterator[GlanceServer]:
    """A Glance of this test's own, to pause and stop without disturbing the session's."""
    server = GlanceServer(state_dir=tmp_path / "glance", processes=1).start()
    try:
        yield server
    finally:
        if server.is_running():
            server.resume()
        server.stop()


def test_image_service_follows_glance_while_the_process_stays_serving(
    own_glance: GlanceServer, tmp_path: Path, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(own_glance.url, "--health-probe-interval", "0.2")
    with open_channel(gateway.address) as channel:
        watcher: Any = health_pb2_grpc.HealthStub(channel)
        watch = watcher.Watch(health_pb2.HealthCheckRequest(service=IMAGE_SERVICE), timeout=180)
        assert next(watch).status == SERVING
        assert check(channel, "") == SERVING

        # Paused: connections are accepted and never answered, so the probe times out.
        own_glance.pause()
        assert next(watch).status == NOT_SERVING
        assert check(channel, "") == SERVING
        own_glance.resume()
        assert next(watch).status == SERVING

        # Stopped: nothing listens any more.
        own_glance.stop()
        assert next(watch).status == NOT_SERVING
        assert (check(channel, ""), check(channel, IMAGE_SERVICE)) == (SERVING, NOT_SERVING)
        stub = pb_grpc.ImageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()), timeout=10)
        assert_error(caught.value, grpc.StatusCode.UNAVAILABLE, "GLANCE_UNREACHABLE")

        # Back on the same port: the same gateway reports SERVING again.
        again = GlanceServer(port=own_glance.port, state_dir=tmp_path / "glance", processes=1, fresh=False)
        again.start()
        try:
            assert next(watch).status == SERVING
            assert check(channel, IMAGE_SERVICE) == SERVING
        finally:
            watch.cancel()
            again.stop()
    assert "Glance is unreachable" in gateway.log_text()


def test_a_gateway_started_without_glance_reports_image_service_not_serving(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(f"http://127.0.0.1:{free_port()}")
    with open_channel(gateway.address) as channel:
        assert (check(channel, ""), check(channel, IMAGE_SERVICE)) == (SERVING, NOT_SERVING)
        with pytest.raises(grpc.RpcError) as caught:
            check(channel, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_port_serves_plaintext_health_beside_a_tls_port(
    glance: GlanceServer, tmp_path: Path, start_gateway: StartGateway
) -> None:
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    health_port = free_port()
    gateway = start_gateway(
        glance.url, "--tls-cert", str(cert), "--tls-key", str(key), "--health-port", str(health_port)
    )
    with open_channel(f"127.0.0.1:{health_port}") as channel:
        assert (check(channel, ""), check(channel, IMAGE_SERVICE)) == (SERVING, SERVING)
        # Only health there: the image API is on the TLS port.
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.ImageServiceStub(channel).GetImageMeta(
                pb.GetImageMetaRequest(image_id=new_id()), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
    with grpc.secure_channel(gateway.address, credentials) as channel:
        assert check(channel, IMAGE_SERVICE) == SERVING
    with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as caught:
        check(channel, "")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
