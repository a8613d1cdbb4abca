"""Builds the gRPC server around the servicer and runs it until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway import wire
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.glance_client import GlanceClient
from gateway.servicer import ImageService
from gateway.sweep import Sweep
from gateway.upload import Uploads

log = logging.getLogger(__name__)

# In-flight calls get this long to finish on SIGTERM (a rolling restart behind a load balancer).
SHUTDOWN_GRACE_SECONDS = 10.0


def create_server(
    settings: Settings, glance: GlanceClient, health_servicer: health.aio.HealthServicer, janitor: Janitor
) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", settings.max_message_size),
            ("grpc.max_receive_message_length", settings.max_message_size),
            # A fixed receive window instead of gRPC's adaptive (BDP-probed) one: the adaptive window grew
            # while a long upload ran into a slower Glance, and the gateway's memory with it (bench/NOTES.md).
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", settings.upload_window),
        ]
    )
    uploads = Uploads(glance, janitor, settings.stall_timeout)
    wire.add_image_service(
        ImageService(settings, glance, uploads), server, max_message_size=settings.max_message_size
    )
    # Standard health checks (Kubernetes probes, Envoy) and reflection (grpcurl) for users in other languages.
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (wire.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


def add_port(server: grpc.aio.Server, settings: Settings) -> int:
    """Listens with TLS when a certificate is configured, else plaintext; 0 means the port was not bound."""
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert and settings.tls_key:
        with open(settings.tls_cert, "rb") as cert, open(settings.tls_key, "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", wire.SERVICE_NAME):
        await health_servicer.set(name, status)


async def serve(settings: Settings) -> None:
    # Exits in reverse order: the sweep stops, then pending clean-ups get their grace, then the Glance client.
    async with (
        GlanceClient(settings) as glance,
        Janitor(glance) as janitor,
        Sweep(glance, janitor, settings.sweep_age, settings.sweep_interval),
    ):
        await _serve_until_stopped(settings, glance, janitor)


async def _serve_until_stopped(settings: Settings, glance: GlanceClient, janitor: Janitor) -> None:
    health_servicer = health.aio.HealthServicer()
    server = create_server(settings, glance, health_servicer, janitor)
    port = add_port(server, settings)
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.host}:{settings.port}")
    await server.start()
    await set_serving(health_servicer, True)
    # Tests and scripts read this line to learn the port (with --port 0 the OS picks it).
    log.info(
        "gateway listening on %s:%d (%s), Glance at %s",
        settings.host,
        port,
        "TLS" if settings.tls_cert else "plaintext",
        settings.glance_base,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: in-flight calls get %.0f s", SHUTDOWN_GRACE_SECONDS)
    # Load balancers stop sending new calls while in-flight ones finish.
    await set_serving(health_servicer, False)
    await server.stop(SHUTDOWN_GRACE_SECONDS)
