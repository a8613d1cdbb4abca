"""Builds the gRPC server around the servicer, runs it with its health and certificates, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway import observability, wire
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.glance_client import GlanceClient
from gateway.health import GlanceWatch, HealthService, health_port
from gateway.listening import bind, server_options
from gateway.servicer import ImageService
from gateway.sweep import Sweep
from gateway.tls import ServerCertificates
from gateway.upload import Uploads

log = logging.getLogger(__name__)


def create_server(
    settings: Settings, glance: GlanceClient, health_service: HealthService, janitor: Janitor
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=observability.rpc_interceptors(settings),
        options=server_options(settings),
    )
    uploads = Uploads(glance, janitor, settings.stall_timeout)
    wire.add_image_service(
        ImageService(settings, glance, uploads), server, max_message_size=settings.max_message_size
    )
    # Standard health checks (Kubernetes probes, Envoy) and reflection (grpcurl) for users in other languages.
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    reflection.enable_server_reflection(
        (wire.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


@contextlib.asynccontextmanager
async def main_server(
    settings: Settings,
    glance: GlanceClient,
    janitor: Janitor,
    health_service: HealthService,
    certificates: ServerCertificates | None,
) -> AsyncIterator[tuple[grpc.aio.Server, int]]:
    """The started main server and its bound port; a drain stops it first, else leaving cuts its calls."""
    server = create_server(settings, glance, health_service, janitor)
    credentials = None if certificates is None else certificates.credentials()
    port = bind(server, settings.host, settings.port, credentials)
    await server.start()
    try:
        yield server, port
    finally:
        await server.stop(None)


async def serve(settings: Settings) -> None:
    try:
        certificates = ServerCertificates.from_settings(settings)
    except ValueError as exc:
        log.error("cannot serve TLS: %s", exc)
        raise SystemExit(1) from None
    # Before anything starts: a signal during start-up must not kill the process half way (SIGHUP's default
    # action is to terminate), and tests and scripts may signal as soon as the listening line is logged.
    stop = _stop_event(certificates)
    health_service = HealthService()
    # Exits in reverse order: the Glance probe and the sweep stop, the health port closes (after the drain, so
    # probes see NOT_SERVING to the end), pending clean-ups get their grace, then the Glance client closes.
    async with (
        observability.running(settings),
        GlanceClient(settings) as glance,
        Janitor(glance) as janitor,
        main_server(settings, glance, janitor, health_service, certificates) as (server, port),
        health_port(settings, health_service),
        Sweep(glance, janitor, settings.sweep_age, settings.sweep_interval, settings.sweep_token_file),
        GlanceWatch(glance.reachable, health_service, settings.health_probe_interval),
    ):
        health_service.start_serving()
        # Tests and scripts read this line to learn the port (with --port 0 the OS picks it).
        log.info(
            "gateway listening on %s:%d (%s), Glance at %s",
            settings.host,
            port,
            _security(certificates),
            settings.glance_base,
        )
        await stop.wait()
        await drain(server, health_service, settings)


def _security(certificates: ServerCertificates | None) -> str:
    if certificates is None:
        return "plaintext"
    return "mutual TLS" if certificates.mutual else "TLS"


def _stop_event(certificates: ServerCertificates | None) -> asyncio.Event:
    """Set on SIGTERM or SIGINT; each SIGHUP meanwhile reloads the certificates. The handlers stay for the
    loop's life: a second signal (Ctrl-C twice, or the workers' parent passing on a terminal's SIGINT) must
    not kill the process half way through its drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if certificates is None:
        loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP: no certificates to reload (plaintext)")
    else:
        loop.add_signal_handler(signal.SIGHUP, certificates.reload)
    return stop


async def drain(server: grpc.aio.Server, health_service: HealthService, settings: Settings) -> None:
    """Load balancers and Kubernetes endpoints see NOT_SERVING first and stop routing here while calls are
    still served (--drain-delay); then new calls are refused and in-flight ones get --shutdown-grace."""
    health_service.drain()
    if settings.drain_delay > 0:
        log.info("draining: health is NOT_SERVING, new calls are still served for %g s", settings.drain_delay)
        await asyncio.sleep(settings.drain_delay)
    log.info("stopping: in-flight calls get %g s", settings.shutdown_grace)
    await server.stop(settings.shutdown_grace)
