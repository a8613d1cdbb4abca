"""Connection policy on the wire: what the server advertises, GOAWAY on connection age and idleness and
for clients that ping too often, keepalive pings, and a port that is already taken.

The frames are read with a bare HTTP/2 connection (raw_http2.py), since gRPC clients do not show them; the
reconnection is checked with a real gRPC client whose calls must all succeed.
"""

from __future__ import annotations

import time

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer
from localglance.ports import free_port

from .raw_http2 import ENHANCE_YOUR_CALM, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS, NO_ERROR, RawHttp2
from .support import MIB, GatewayProcess, ImageTracker, StartGateway, open_channel, start_refused, unique_name


def test_server_advertises_the_stream_limit_and_window(gateway: GatewayProcess) -> None:
    # The session gateway runs with the defaults; gRPC's own would be no stream limit at all.
    with RawHttp2(gateway.address) as conn:
        settings = conn.read_server_settings()
    assert settings[MAX_CONCURRENT_STREAMS] == 256
    assert settings[INITIAL_WINDOW_SIZE] == MIB


def test_max_connection_age_sends_goaway_and_clients_reconnect_without_a_failed_call(
    glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    image = new_image(name=unique_name("age"))
    gateway = start_gateway(glance.url, "--max-connection-age", "1", "--max-connection-age-grace", "30")
    with RawHttp2(gateway.address) as conn:
        goaway = conn.next_goaway()
    assert goaway is not None, "the connection closed without a GOAWAY"
    assert (goaway.error_code, goaway.debug) == (NO_ERROR, b"max_age")

    # A client calling in a loop moves to a new connection after each GOAWAY and never sees a failure.
    ours = psutil.Process()
    connections: set[int] = set()
    calls = failures = 0
    give_up = time.monotonic() + 90
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        while len(connections) < 3 and time.monotonic() < give_up:
            try:
                stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=10)
            except grpc.RpcError:
                failures += 1
            calls += 1
            connections.update(
                conn.laddr.port
                for conn in ours.net_connections(kind="tcp")
                if conn.raddr and conn.raddr.port == gateway.port and conn.status == psutil.CONN_ESTABLISHED
            )
    assert len(connections) >= 3, f"{calls} calls used {len(connections)} connection(s)"
    assert failures == 0, f"{failures} of {calls} calls failed"


@pytest.mark.parametrize(
    ("flags", "sent_away"),
    [
        (("--min-ping-interval", "5"), True),
        # Without calls, pings are refused at any rate unless permitted.
        (("--keepalive-permit-without-calls", "false", "--min-ping-interval", "0"), True),
        # gRPC's default minimum is 5 minutes: these pings are welcome only because of the flag.
        (("--min-ping-interval", "0"), False),
    ],
    ids=["faster-than-min-interval", "without-calls-not-permitted", "no-min-interval"],
)
def test_client_pings_faster_than_allowed_get_goaway_too_many_pings(
    glance: GlanceServer, start_gateway: StartGateway, flags: tuple[str, ...], sent_away: bool
) -> None:
    gateway = start_gateway(glance.url, *flags)
    with RawHttp2(gateway.address) as conn:
        conn.read_server_settings()
        goaway = conn.ping_pong(10)
    if sent_away:
        assert goaway is not None, "ten quick pings were all accepted"
        assert (goaway.error_code, goaway.debug) == (ENHANCE_YOUR_CALM, b"too_many_pings")
    else:
        assert goaway is None, goaway


def test_idle_connection_is_closed_after_max_connection_idle(
    glance: GlanceServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(glance.url, "--max-connection-idle", "1")
    with RawHttp2(gateway.address) as conn:
        goaway = conn.next_goaway()
    assert goaway is not None and goaway.debug == b"connection idle", goaway


def test_server_keepalive_pings_and_drops_a_silent_peer(
    glance: GlanceServer, start_gateway: StartGateway
) -> None:
    # With the defaults (ping after 60 s, 20 s to answer) this would outlast the 30 s socket timeout.
    gateway = start_gateway(glance.url, "--keepalive-time", "0.5", "--keepalive-timeout", "1")
    with RawHttp2(gateway.address, timeout=30) as conn:
        goaway = conn.next_goaway(answer_pings=False)
        pings = conn.pings_received
    assert pings >= 1
    assert goaway is not None and goaway.debug == b"ping_timeout", goaway


def test_second_gateway_on_a_port_in_use_fails_to_start(
    glance: GlanceServer, start_gateway: StartGateway
) -> None:
    port = free_port()
    first = start_gateway(glance.url, "--port", str(port))
    # gRPC's default SO_REUSEPORT would let the second one bind and take half the connections.
    second = start_refused(glance.url, "--port", str(port))
    assert second.returncode() not in (None, 0)
    assert f"cannot listen on 127.0.0.1:{port}" in second.log_text()
    with open_channel(first.address) as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        answer = checker.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
