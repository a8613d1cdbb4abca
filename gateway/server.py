"""Builds the gRPC server around the servicer and runs it until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from gateway.config import Settings
from gateway.glance_client import GlanceClient
from gateway.servicer import ImageService
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# In-flight calls get this long to finish on SIGTERM (a rolling restart behind a load balancer).
SHUTDOWN_GRACE_SECONDS = 10.0


def create_server(settings: Settings, glance: GlanceClient) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", settings.max_message_size),
            ("grpc.max_receive_message_length", settings.max_message_size),
        ]
    )
    pb_grpc.add_ImageServiceServicer_to_server(ImageService(settings, glance), server)
    return server


async def serve(settings: Settings) -> None:
    glance = GlanceClient(settings)
    server = create_server(settings, glance)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.host}:{settings.port}")
    await server.start()
    # Tests and scripts read this line to learn the port (with --port 0 the OS picks it).
    log.info("gateway listening on %s:%d, Glance at %s", settings.host, port, settings.glance_base)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: in-flight calls get %.0f s", SHUTDOWN_GRACE_SECONDS)
    await server.stop(SHUTDOWN_GRACE_SECONDS)
    await glance.aclose()
