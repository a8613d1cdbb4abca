"""grpc.health.v1.Health for probes and load balancers, on the main port and optionally a plaintext one.

Two services are reported: "" (the process serves) and glance.gateway.v1.ImageService (the process serves
and Glance answers a light probe). On SIGTERM both turn NOT_SERVING for good before calls are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import background
from gateway.config import Settings
from gateway.listening import bind, reuse_port
from gateway.wire import SERVICE_NAME

log = logging.getLogger(__name__)

# HealthCheckResponse.ServingStatus values.
Status = int
SERVING: Status = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Status = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

# `probe(within)`: True when Glance answered within that many seconds, False when it did not, None when
# it cannot tell.
Probe = Callable[[float], Awaitable[bool | None]]


class HealthService(health_pb2_grpc.HealthServicer):
    """The health of this process, shared by every port that serves grpc.health.v1.Health.

    grpc_health's own servicer keeps a Watch open for ever, which holds a server's shutdown for its whole
    grace; here a Watch ends once it has reported the drain's NOT_SERVING.
    """

    def __init__(self) -> None:
        self._serving = False
        self._draining = False
        self._glance_reachable: bool | None = None  # unknown until the first probe
        self._changed = asyncio.Event()

    def status(self, service: str) -> Status | None:
        """The status of a service, None for a service this gateway does not have."""
        if service == "":
            return SERVING if self._serving else NOT_SERVING
        if service == SERVICE_NAME:
            return SERVING if self._serving and self._glance_reachable is True else NOT_SERVING
        return None

    def start_serving(self) -> None:
        if not self._draining:
            self._serving = True
            self._notify()

    def drain(self) -> None:
        """NOT_SERVING for every service from now on (SIGTERM)."""
        self._draining = True
        self._serving = False
        self._notify()

    def set_glance_reachable(self, reachable: bool) -> None:
        if reachable == self._glance_reachable:
            return
        if not reachable:
            log.warning("Glance is unreachable: %s is NOT_SERVING until it answers again", SERVICE_NAME)
        elif self._glance_reachable is False:
            log.info("Glance answers again: %s is SERVING", SERVICE_NAME)
        self._glance_reachable = reachable
        self._notify()

    def _notify(self) -> None:
        # Watchers wait on the event of their time; each change wakes them all with a fresh one for later.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        last: Status | None = None
        while True:
            changed = self._changed
            status = self.status(request.service)
            if status is None:
                status = SERVICE_UNKNOWN
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._draining:
                return
            await changed.wait()


class GlanceWatch:
    """`async with GlanceWatch(probe, health, interval):` probes Glance every interval while the block runs;
    the first probe runs on entry, so the health is right from the first Check."""

    def __init__(self, probe: Probe, health: HealthService, interval: float) -> None:
        self._probe = probe
        self._health = health
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GlanceWatch:
        await self.probe_once()
        self._task = asyncio.create_task(self._run(), name="glance-health-probe")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await background.stop(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.probe_once()

    async def probe_once(self) -> None:
        try:
            # Bounded by the interval, so probes never pile up behind a Glance that does not answer.
            reachable = await self._probe(self._interval)
        except Exception:
            log.exception("the Glance health probe failed")
            reachable = False
        if reachable is not None:
            self._health.set_glance_reachable(reachable)


@contextlib.asynccontextmanager
async def health_port(settings: Settings, health: HealthService) -> AsyncIterator[int | None]:
    """`--health-port`: only the health service, in plaintext (Kubernetes gRPC probes cannot present client
    certificates or trust the gateway's CA), on its own server; yields the bound port (None when off)."""
    if settings.health_port is None:
        yield None
        return
    server = grpc.aio.server(options=reuse_port(settings))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = bind(server, settings.host, settings.health_port, None)
    await server.start()
    log.info("health service on %s:%d (plaintext)", settings.host, port)
    try:
        yield port
    finally:
        await server.stop(None)
