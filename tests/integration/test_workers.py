"""`--workers 2`: two server processes behind one port, supervised by the process started, against a real
Glance. Which worker holds a connection is read from the workers' own sockets (psutil)."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import psutil
from prometheus_client.parser import text_string_to_metric_families

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer
from localglance.ports import free_port

from .support import (
    CHANNEL_OPTIONS,
    MIB,
    GatewayProcess,
    ImageTracker,
    StartGateway,
    sha512_hex,
    start_refused,
    unique_name,
    wait_until,
)

# Each channel its own connection (the global subchannel pool would share one between them).
OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


def start_workers(start_gateway: StartGateway, glance_url: str, *flags: str) -> GatewayProcess:
    gateway = start_gateway(glance_url, "--port", str(free_port()), "--workers", "2", *flags)
    wait_until(lambda: gateway.log_text().count("gateway listening on") == 2, 30, "both workers to listen")
    return gateway


def workers_of(gateway: GatewayProcess) -> list[psutil.Process]:
    children = psutil.Process(gateway.pid).children()
    assert len(children) == 2, children
    return children


def holder(workers: list[psutil.Process], port: int, client_port: int) -> int | None:
    """The pid of the worker that holds the connection from `client_port`."""
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr.port == port and conn.raddr and conn.raddr.port == client_port:
                return worker.pid
    return None


def our_ports_to(port: int) -> set[int]:
    return {
        conn.laddr.port
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    }


def channels_on_both_workers(
    gateway: GatewayProcess, stack: ExitStack, limit: int = 40
) -> Iterator[grpc.Channel]:
    """Opens channels (one connection each) and yields each once connected, until both workers hold one."""
    workers = workers_of(gateway)
    holders: set[int] = set()
    for _ in range(limit):
        before = our_ports_to(gateway.port)
        channel = stack.enter_context(grpc.insecure_channel(gateway.address, options=OWN_CONNECTION))
        grpc.channel_ready_future(channel).result(timeout=10)
        (new_port,) = our_ports_to(gateway.port) - before
        worker = holder(workers, gateway.port, new_port)
        assert worker is not None, "no worker holds the new connection"
        holders.add(worker)
        yield channel
        if len(holders) == 2:
            return
    raise AssertionError(f"{limit} connections all went to one worker")


def test_two_workers_share_the_port_and_both_serve(
    glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    image = new_image(name=unique_name("workers"))
    gateway = start_workers(start_gateway, glance.url)
    workers = workers_of(gateway)
    for worker in workers:
        assert f"pid {worker.pid}" in gateway.log_text()
        # uvloop runs in each worker (it is imported only there).
        assert any("uvloop" in region.path for region in worker.memory_maps())
    assert not any("uvloop" in region.path for region in psutil.Process(gateway.pid).memory_maps())
    # SIGHUP (certificate reload) reaches every worker.
    os.kill(gateway.pid, signal.SIGHUP)
    wait_until(lambda: gateway.log_text().count("no certificates to reload") == 2, 10, "both workers' SIGHUP")

    with ExitStack() as stack:
        channels = list(channels_on_both_workers(gateway, stack))
        for channel in channels:
            found = pb_grpc.ImageServiceStub(channel).GetImageMeta(
                pb.GetImageMetaRequest(image_id=image.id), timeout=10
            )
            assert found.image.id == image.id


def test_a_port_in_use_stops_a_second_gateway_with_or_without_workers(
    glance: GlanceServer, start_gateway: StartGateway
) -> None:
    gateway = start_workers(start_gateway, glance.url)
    for extra in ((), ("--workers", "2")):
        # SO_REUSEPORT lets workers share their port; the parent's check keeps another gateway out of it.
        second = start_refused(glance.url, "--port", str(gateway.port), *extra)
        assert second.returncode() not in (None, 0)
        assert f"cannot listen on 127.0.0.1:{gateway.port}" in second.log_text()
    # And the other way round: workers do not join a single gateway's port.
    single = start_gateway(glance.url)
    workers = start_refused(glance.url, "--port", str(single.port), "--workers", "2")
    assert workers.returncode() not in (None, 0)


def test_sigterm_drains_every_worker_and_exits_0(
    glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    data = os.urandom(4 * MIB)
    image = new_image(name=unique_name("workers-drain"), data=data)
    gateway = start_workers(start_gateway, glance.url)
    workers = workers_of(gateway)
    with ExitStack() as stack:
        downloads = []
        for channel in channels_on_both_workers(gateway, stack):
            responses = iter(
                pb_grpc.ImageServiceStub(channel).GetImage(pb.GetImageRequest(image_id=image.id))
            )
            assert next(responses).header.length == len(data)
            downloads.append(([next(responses).data], responses))  # in flight on every worker

        os.kill(gateway.pid, signal.SIGTERM)
        wait_until(lambda: gateway.log_text().count("stopping:") == 2, 10, "both workers to drain")
        for received, responses in downloads:
            received.extend(message.data for message in responses)
            assert sha512_hex(b"".join(received)) == sha512_hex(data)
    wait_until(lambda: gateway.returncode() is not None, 30, "the gateway to exit")
    assert gateway.returncode() == 0
    assert not any(worker.is_running() for worker in workers)


def test_a_worker_that_dies_stops_the_gateway_with_an_error(
    glance: GlanceServer, start_gateway: StartGateway
) -> None:
    gateway = start_workers(start_gateway, glance.url)
    first, second = workers_of(gateway)
    first.kill()
    wait_until(lambda: gateway.returncode() is not None, 30, "the gateway to exit")
    assert gateway.returncode() == 128 + signal.SIGKILL
    assert "exited unasked" in gateway.log_text()
    assert not second.is_running()


def test_workers_end_when_their_parent_is_killed(glance: GlanceServer, start_gateway: StartGateway) -> None:
    gateway = start_workers(start_gateway, glance.url)
    workers = workers_of(gateway)
    os.kill(gateway.pid, signal.SIGKILL)

    def ended(worker: psutil.Process) -> bool:
        try:
            return not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(ended(worker) for worker in workers), 30, "the orphaned workers to exit")


def test_one_metrics_endpoint_sums_every_worker(
    glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    image = new_image(name=unique_name("workers-metrics"))
    metrics_port = free_port()
    gateway = start_workers(start_gateway, glance.url, "--metrics-port", str(metrics_port))
    workers = workers_of(gateway)
    calls = 0
    with ExitStack() as stack:
        for channel in channels_on_both_workers(gateway, stack):
            for _ in range(3):
                pb_grpc.ImageServiceStub(channel).GetImageMeta(
                    pb.GetImageMetaRequest(image_id=image.id), timeout=10
                )
                calls += 1

    # The workers' metrics files (prometheus_client's multiprocess mode maps them into memory).
    files = {
        Path(region.path)
        for worker in workers
        for region in worker.memory_maps()
        if region.path.endswith(".db")
    }
    (metrics_dir,) = {path.parent for path in files}
    assert metrics_dir.name.startswith("glance-gateway-metrics-")

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    handled = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "GetImageMeta"
        and sample.labels.get("grpc_code") == "OK"
    ]
    # Calls went to both workers, so only a sum over both processes gives the whole count.
    assert sum(handled) == calls, text

    gateway.stop()
    assert gateway.returncode() == 0
    assert not metrics_dir.exists()
