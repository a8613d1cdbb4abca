import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import Settings
from gateway.glance_client import GlanceClient
from gateway.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, GlanceWatch, HealthService
from gateway.wire import SERVICE_NAME


def _statuses(health: HealthService) -> tuple[int | None, int | None]:
    return health.status(""), health.status(SERVICE_NAME)


def test_image_service_needs_both_the_process_and_glance() -> None:
    health = HealthService()
    assert _statuses(health) == (NOT_SERVING, NOT_SERVING)  # not started yet
    health.set_glance_reachable(True)
    assert _statuses(health) == (NOT_SERVING, NOT_SERVING)
    health.start_serving()
    assert _statuses(health) == (SERVING, SERVING)
    health.set_glance_reachable(False)
    assert _statuses(health) == (SERVING, NOT_SERVING)
    health.set_glance_reachable(True)
    assert _statuses(health) == (SERVING, SERVING)
    assert health.status("no.such.Service") is None


def test_draining_is_for_good() -> None:
    health = HealthService()
    health.start_serving()
    health.set_glance_reachable(True)
    health.drain()
    health.start_serving()
    health.set_glance_reachable(True)
    assert _statuses(health) == (NOT_SERVING, NOT_SERVING)


class _Probe:
    """Answers the probes from a script: a bool, None ("cannot tell"), or an exception to raise."""

    def __init__(self, answers: list[bool | Exception | None]) -> None:
        self._answers: Iterator[bool | Exception | None] = iter(answers)
        self.calls: list[float] = []

    async def __call__(self, within: float) -> bool | None:
        self.calls.append(within)
        answer = next(self._answers)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def _watch_glance(answers: list[bool | Exception | None]) -> tuple[list[int | None], list[float]]:
    health = HealthService()
    health.start_serving()
    probe = _Probe(answers)
    seen = []
    watch = GlanceWatch(probe, health, interval=30)
    async with watch:  # the first probe runs on entry
        seen.append(health.status(SERVICE_NAME))
        for _ in answers[1:]:
            await watch.probe_once()
            seen.append(health.status(SERVICE_NAME))
    return seen, probe.calls


def test_probe_results_drive_the_image_service_status() -> None:
    seen, calls = asyncio.run(_watch_glance([True, False, None, True, None, RuntimeError("bug")]))
    # None keeps what was known; a failing probe counts as unreachable.
    assert seen == [SERVING, NOT_SERVING, NOT_SERVING, SERVING, SERVING, NOT_SERVING]
    assert calls == [30] * 6  # each probe is bounded by the interval


async def _watch_over_grpc() -> list[int]:
    health = HealthService()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    seen = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            seen.append((await watch.read()).status)
            health.start_serving()
            health.set_glance_reachable(True)
            seen.append((await watch.read()).status)
            health.set_glance_reachable(False)
            seen.append((await watch.read()).status)
            unknown = stub.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"))
            seen.append((await unknown.read()).status)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            health.drain()
            # A changed status is sent again only when it differs: NOT_SERVING already was, so the Watch
            # just ends; the unknown service's Watch ends too.
            assert await watch.read() is grpc.aio.EOF
            assert await unknown.read() is grpc.aio.EOF
    finally:
        await server.stop(None)
    return seen


def test_watch_follows_changes_and_ends_on_drain() -> None:
    assert asyncio.run(_watch_over_grpc()) == [NOT_SERVING, SERVING, NOT_SERVING, SERVICE_UNKNOWN]


# -- GlanceClient.reachable: the probe itself ------------------------------------------------------------


def _reachable(handler: Any, *, max_connections: int = 2, hold_all: bool = False) -> bool | None:
    async def run() -> bool | None:
        settings = Settings(glance_url="http://glance.test:9292/image", max_connections=max_connections)
        async with GlanceClient(settings, transport=httpx.MockTransport(handler)) as client:
            if hold_all:
                for _ in range(max_connections):
                    await client._slots.acquire()
            return await client.reachable(0.2)

    return asyncio.run(run())


@pytest.mark.parametrize(("status", "reachable"), [(200, True), (300, True), (401, True), (503, False)])
def test_any_answer_below_500_means_reachable(status: int, reachable: bool) -> None:
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append((request.method, str(request.url), request.headers.get("x-auth-token")))
        return httpx.Response(status)

    assert _reachable(handler) is reachable
    # Unauthenticated, below the configured URL's path.
    assert paths == [("GET", "http://glance.test:9292/image/versions", None)]


def test_no_answer_means_unreachable() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert _reachable(refused) is False

    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    assert _reachable(silent) is False


def test_a_gateway_busy_with_calls_cannot_tell() -> None:
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("the probe must not queue behind calls")

    assert _reachable(never, hold_all=True) is None


def test_the_probe_gives_its_connection_slot_back() -> None:
    answers: Iterator[httpx.Response | Exception] = iter(
        [httpx.Response(200), httpx.ConnectError("refused"), httpx.Response(200)]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def run() -> tuple[list[bool | None], bool]:
        settings = Settings(glance_url="http://glance.test:9292", max_connections=1)
        async with GlanceClient(settings, transport=httpx.MockTransport(handler)) as client:
            results = [await client.reachable(0.2) for _ in range(3)]
            return results, client._slots.all_busy()

    assert asyncio.run(run()) == ([True, False, True], False)
