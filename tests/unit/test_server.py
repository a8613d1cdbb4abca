import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.glance_client import GlanceClient
from gateway.health import HealthService
from gateway.server import create_server, drain
from gateway.wire import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _probe() -> tuple[list[int], list[str]]:
    settings = Settings(glance_url="http://127.0.0.1:9", shutdown_grace=0)
    glance = GlanceClient(settings)
    health_service = HealthService()
    server = create_server(settings, glance, health_service, Janitor(glance))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    statuses = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The grpc stubs' types describe the sync channel only.
            checker: Any = health_pb2_grpc.HealthStub(channel)
            health_service.start_serving()
            health_service.set_glance_reachable(True)
            statuses.append((await checker.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))).status)
            reflect: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for answer in reflect.ServerReflectionInfo(iter([request])):
                services = [service.name for service in answer.list_services_response.service]
            watch = checker.Watch(health_pb2.HealthCheckRequest(service=""))
            statuses.append((await watch.read()).status)
            health_service.drain()
            statuses.append((await watch.read()).status)
            # Then the Watch ends, so it cannot hold the server's stop for its whole grace.
            assert await watch.read() is grpc.aio.EOF
            await drain(server, health_service, settings)
    finally:
        await server.stop(None)
        await glance.aclose()
    return statuses, services


def test_health_follows_serving_state_and_reflection_lists_the_service() -> None:
    statuses, services = asyncio.run(_probe())
    assert statuses == [SERVING, SERVING, NOT_SERVING]
    assert SERVICE_NAME == "glance.gateway.v1.ImageService"
    assert SERVICE_NAME in services
    assert "grpc.health.v1.Health" in services
