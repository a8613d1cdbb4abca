"""SIGTERM drains the gateway: health turns NOT_SERVING, new calls are refused, in-flight streams finish."""

from __future__ import annotations

import os
import signal
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer
from localglance.ports import free_port

from .support import MIB, ImageTracker, StartGateway, open_channel, sha512_hex, unique_name, wait_until


def test_sigterm_lets_an_in_flight_download_finish(
    new_image: ImageTracker, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    data = os.urandom(8 * MIB)
    image = new_image(name=unique_name("drain"), data=data)
    gateway = start_gateway(glance.url)
    with open_channel(gateway.address) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs list no methods
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        stub = pb_grpc.ImageServiceStub(channel)
        responses = iter(stub.GetImage(pb.GetImageRequest(image_id=image.id), timeout=60))
        assert next(responses).header.length == len(data)
        received = [next(responses).data]  # the download is under way, the rest waits on flow control

        os.kill(gateway.pid, signal.SIGTERM)
        wait_until(
            lambda: any("stopping" in line for line in gateway.log_lines), 10, "the gateway to start draining"
        )
        # New calls are refused while the in-flight one goes on.
        with open_channel(gateway.address) as fresh:
            try:
                pb_grpc.ImageServiceStub(fresh).GetImageMeta(
                    pb.GetImageMetaRequest(image_id=image.id), timeout=5
                )
                refused = None
            except grpc.RpcError as err:
                refused = err.code()
        assert refused == grpc.StatusCode.UNAVAILABLE

        received.extend(message.data for message in responses)
    assert sha512_hex(b"".join(received)) == sha512_hex(data)
    wait_until(lambda: gateway.returncode() == 0, 15, "the drained gateway to exit cleanly")


def test_drain_delay_reports_not_serving_while_calls_are_still_served(
    new_image: ImageTracker, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    data = os.urandom(8 * MIB)
    image = new_image(name=unique_name("drain-delay"), data=data)
    health_port = free_port()
    # The delay only has to outlast a few calls made below; nothing waits for it to run out early.
    gateway = start_gateway(glance.url, "--drain-delay", "6", "--health-port", str(health_port))
    with open_channel(gateway.address) as channel, open_channel(f"127.0.0.1:{health_port}") as health_channel:
        stub = pb_grpc.ImageServiceStub(channel)
        responses = iter(stub.GetImage(pb.GetImageRequest(image_id=image.id), timeout=60))
        assert next(responses).header.length == len(data)
        received = [next(responses).data]  # in flight through the whole drain

        os.kill(gateway.pid, signal.SIGTERM)
        wait_until(lambda: "draining" in gateway.log_text(), 10, "the gateway to start draining")
        for chan in (channel, health_channel):
            for service in ("", "glance.gateway.v1.ImageService"):
                assert _status(chan, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        # A call that starts during the delay, on a new connection, is still served.
        with open_channel(gateway.address) as fresh:
            found = pb_grpc.ImageServiceStub(fresh).GetImageMeta(
                pb.GetImageMetaRequest(image_id=image.id), timeout=5
            )
        assert found.image.id == image.id
        assert "stopping" not in gateway.log_text(), "the drain delay ran out before the checks above ended"

        wait_until(lambda: "stopping" in gateway.log_text(), 15, "the drain delay to end")
        with open_channel(gateway.address) as fresh, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.ImageServiceStub(fresh).GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The health port answers to the end: here, while the download still holds the main server open.
        assert _status(health_channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING

        received.extend(message.data for message in responses)
    assert sha512_hex(b"".join(received)) == sha512_hex(data)
    wait_until(lambda: gateway.returncode() == 0, 15, "the drained gateway to exit cleanly")


def _status(channel: grpc.Channel, service: str) -> int:
    checker: Any = health_pb2_grpc.HealthStub(channel)
    status: int = checker.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    return status
