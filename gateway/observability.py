"""What the server wires in for metrics, traces and access logs: its interceptors, and what runs beside it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway import tracing
from gateway.config import Settings
from gateway.interceptor import RpcObserver

log = logging.getLogger(__name__)


def rpc_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptors: one, for every RPC's metrics, span and access line."""
    return [RpcObserver()]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[None]:
    """Traces (when the OTEL_* environment asks for them) and the /metrics endpoint (with --metrics-port)
    for as long as the server runs; spans still buffered are exported on the way out."""
    async with AsyncExitStack() as stack:
        if await stack.enter_async_context(tracing.running()):
            log.info("traces on: exporting spans over OTLP/HTTP")
        # With --workers N the parent process serves every worker's metrics (multiprocess mode), not each one.
        if settings.metrics_port is not None and settings.workers == 1:
            await stack.enter_async_context(metrics_endpoint(settings.host, settings.metrics_port))
        yield


@asynccontextmanager
async def metrics_endpoint(
    host: str, port: int, registry: CollectorRegistry = REGISTRY
) -> AsyncIterator[int]:
    """`GET http://host:port/metrics` on this event loop while inside; yields the port (0 picks one)."""
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    # No access log: Prometheus scrapes every few seconds.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]"), port)
        await site.start()
        bound = _bound_port(runner, port)
        log.info("metrics at http://%s:%d/metrics", host, bound)
        yield bound
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return asked
