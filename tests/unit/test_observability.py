"""The wiring (gateway/observability.py): the interceptors, and the /metrics endpoint's lifetime."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import pytest

from gateway import observability
from gateway.config import Settings
from gateway.interceptor import RpcObserver


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_one_interceptor_observes_every_rpc() -> None:
    (interceptor,) = observability.rpc_interceptors(Settings())
    assert isinstance(interceptor, RpcObserver)


def test_metrics_are_served_while_running_and_the_port_is_closed_after() -> None:
    port = free_port()

    async def run() -> None:
        async with observability.running(Settings(metrics_port=port)):
            status, content_type, text = await asyncio.to_thread(scrape, port)
            assert status == 200 and content_type.startswith("text/plain")
            assert "# TYPE grpc_server_started_total counter" in text
            assert "# TYPE glance_gateway_glance_request_duration_seconds histogram" in text
        assert refused(port)

    asyncio.run(run())


def test_no_endpoint_without_a_port_or_under_workers() -> None:
    """With --workers N the parent serves every worker's metrics; a worker binding the port would fail."""
    port = free_port()

    async def run() -> None:
        async with observability.running(Settings()):
            pass
        async with observability.running(Settings(port=50051, metrics_port=port, workers=2)):
            assert refused(port)

    asyncio.run(run())


def test_the_endpoint_can_pick_a_port_and_serve_any_registry() -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("only_here_total", "a counter of this registry only", registry=registry).inc(3)

    async def run() -> None:
        async with observability.metrics_endpoint("127.0.0.1", 0, registry) as port:
            assert port != 0
            _, _, text = await asyncio.to_thread(scrape, port)
            assert "only_here_total 3.0" in text and "grpc_server" not in text

    asyncio.run(run())


@pytest.mark.parametrize("host", ["[::1]", "::1"])
def test_ipv6_hosts_as_grpc_writes_them(host: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def run() -> None:
        try:
            async with observability.metrics_endpoint(host, 0) as port:
                assert port != 0
        except OSError as error:  # no IPv6 loopback in this sandbox
            pytest.skip(str(error))

    asyncio.run(run())
