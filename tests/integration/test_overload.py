"""Overload against the real Glance (3 workers): refused excess streams, bounded waits, stalled readers.

The gateway under test runs with small limits (8 streams, 4 upstream connections, a 2 s stall timeout) so a
handful of calls overloads it. No timing is asserted beyond generous bounds.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import (
    MIB,
    GatewayProcess,
    ImageTracker,
    StartGateway,
    add_requests,
    assert_error,
    error_info,
    new_id,
    open_channel,
    pseudo_random_chunks,
    unique_name,
    upstream_connections,
    wait_until,
)

MAX_STREAMS = 8
STALL_TIMEOUT = 2.0
# Bigger than every flow-control window between the gateway and a client (about 19 MiB measured), so a
# client that stops reading leaves the gateway's handler blocked in a write.
BIG = 64 * MIB


@dataclass(frozen=True)
class BigImage:
    id: str
    sha512: str


@pytest.fixture(scope="module")
def big_image(module_images: ImageTracker, stub: pb_grpc.ImageServiceStub) -> BigImage:
    spec = pb.ImageSpec(name=unique_name("overload"), id=new_id(), type=pb.IMAGE_TYPE_RAW, size=BIG)
    module_images.track(spec.id)
    digest = hashlib.sha512()

    def hashed() -> Iterator[bytes]:
        for chunk in pseudo_random_chunks(2048, BIG):
            digest.update(chunk)
            yield chunk

    stub.AddImage(add_requests(spec, hashed()), timeout=300)
    return BigImage(spec.id, digest.hexdigest())


@pytest.fixture(scope="module")
def small_gateway(glance: GlanceServer) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        glance.url,
        "--max-streams", str(MAX_STREAMS), "--max-connections", "4", "--stall-timeout", str(STALL_TIMEOUT),
    ).start()  # fmt: skip
    try:
        yield process
    finally:
        process.stop()


@dataclass
class Outcome:
    code: grpc.StatusCode
    reason: str = ""
    seconds: float = 0.0
    sha512: str = ""


def _outcome(err: grpc.RpcError, started: float) -> Outcome:
    assert isinstance(err, grpc.Call)
    code = err.code()
    try:
        reason = error_info(err).reason
    except AssertionError:
        reason = ""  # the client library's own status (its deadline), with no details
    return Outcome(code, reason, time.monotonic() - started)


def _download(stub: pb_grpc.ImageServiceStub, image_id: str, pause_after_header: float) -> Outcome:
    """A whole GetImage, hashed; the pause (shorter than the stall timeout) keeps the stream open a while."""
    started = time.monotonic()
    digest = hashlib.sha512()
    try:
        responses = iter(stub.GetImage(pb.GetImageRequest(image_id=image_id), timeout=120))
        assert next(responses).WhichOneof("content") == "header"
        time.sleep(pause_after_header)
        for message in responses:
            digest.update(message.data)
    except grpc.RpcError as err:
        return _outcome(err, started)
    return Outcome(grpc.StatusCode.OK, seconds=time.monotonic() - started, sha512=digest.hexdigest())


def _meta(stub: pb_grpc.ImageServiceStub, image_id: str, timeout: float) -> Outcome:
    started = time.monotonic()
    try:
        stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image_id), timeout=timeout)
    except grpc.RpcError as err:
        return _outcome(err, started)
    return Outcome(grpc.StatusCode.OK, seconds=time.monotonic() - started)


class HealthWatch:
    """Asks Health.Check("") over and over on a thread of its own; every answer is kept."""

    def __init__(self, address: str) -> None:
        self._channel = open_channel(address)
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)  # its type stubs list no methods
        self._stop = threading.Event()
        self.answers: list[Any] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self._health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
            except grpc.RpcError as err:
                self.answers.append(err.code())
            time.sleep(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._channel.close()

    def assert_always_serving(self) -> None:
        assert len(self.answers) >= 3, self.answers
        assert set(self.answers) == {health_pb2.HealthCheckResponse.SERVING}, set(self.answers)


def _run_all(calls: list[Callable[[], Outcome]]) -> list[Outcome]:
    """Starts every call at the same moment, each on its own thread."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Outcome]) -> Outcome:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_streams_beyond_the_limit_are_refused_at_once_while_unary_calls_wait(
    big_image: BigImage, small_gateway: GatewayProcess
) -> None:
    streams = MAX_STREAMS + 8
    unary = 100
    with open_channel(small_gateway.address) as channel, HealthWatch(small_gateway.address) as health:
        stub = pb_grpc.ImageServiceStub(channel)
        # Every admitted stream stays open for at least its pause, longer than it takes all calls to arrive;
        # the unary calls compete with the streams for the 4 upstream connections.
        calls: list[Callable[[], Outcome]] = [
            lambda: _download(stub, big_image.id, pause_after_header=0.5) for _ in range(streams)
        ]
        calls += [lambda: _meta(stub, big_image.id, timeout=30) for _ in range(unary)]
        outcomes = _run_all(calls)
    downloads, metas = outcomes[:streams], outcomes[streams:]

    refused = [o for o in downloads if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    served = [o for o in downloads if o.code == grpc.StatusCode.OK]
    assert len(refused) == streams - MAX_STREAMS, downloads
    assert len(served) == MAX_STREAMS, downloads
    assert {o.reason for o in refused} == {"TOO_MANY_STREAMS"}
    assert all(o.seconds < 5 for o in refused), [o.seconds for o in refused]  # at once, not queued
    assert {o.sha512 for o in served} == {big_image.sha512}
    # The unary calls waited for a connection and got through (30 s is ample for this load).
    assert [o for o in metas if o.code != grpc.StatusCode.OK] == []
    health.assert_always_serving()


def test_unary_calls_past_their_deadline_while_connections_are_busy_end_with_a_defined_status(
    big_image: BigImage, small_gateway: GatewayProcess
) -> None:
    with open_channel(small_gateway.address) as channel, HealthWatch(small_gateway.address) as health:
        stub = pb_grpc.ImageServiceStub(channel)
        calls: list[Callable[[], Outcome]] = [
            lambda: _download(stub, big_image.id, pause_after_header=1.0) for _ in range(4)
        ]
        calls += [lambda: _meta(stub, big_image.id, timeout=0.5) for _ in range(200)]
        outcomes = _run_all(calls)
    metas = outcomes[4:]
    allowed = {
        (grpc.StatusCode.OK, ""),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ""),  # the client library's own deadline
        (grpc.StatusCode.DEADLINE_EXCEEDED, "GATEWAY_BUSY"),
        # A call that got a connection, whose deadline passed while Glance was still answering (a loaded
        # machine makes this one likely too).
        (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    }
    assert {(o.code, o.reason) for o in metas} <= allowed, {(o.code, o.reason) for o in metas}
    assert all(o.seconds < 10 for o in metas)
    assert {o.code for o in outcomes[:4]} == {grpc.StatusCode.OK}
    health.assert_always_serving()


def test_the_wait_for_a_busy_connection_ends_unavailable_when_no_deadline_is_nearer(
    big_image: BigImage, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(glance.url, "--max-connections", "1", "--read-timeout", "1")
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        # A slowly read download holds the one upstream connection (it never stalls: it reads every 50 ms).
        holder = stub.GetImage(pb.GetImageRequest(image_id=big_image.id), timeout=120)
        responses = iter(holder)
        assert next(responses).WhichOneof("content") == "header"
        assert upstream_connections(gateway.pid, glance.port)
        done = threading.Event()

        def read_slowly() -> None:
            with contextlib.suppress(grpc.RpcError):  # the cancel at the end
                for _ in responses:
                    if done.is_set():
                        break
                    time.sleep(0.05)

        reader = threading.Thread(target=read_slowly, daemon=True)
        reader.start()
        try:
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetImageMeta(pb.GetImageMetaRequest(image_id=big_image.id), timeout=30)
            assert_error(caught.value, grpc.StatusCode.UNAVAILABLE, "GATEWAY_BUSY")
        finally:
            done.set()
            holder.cancel()
            reader.join(10)


def test_a_stalled_reader_releases_glance_within_the_stall_timeout(
    big_image: BigImage, small_gateway: GatewayProcess, glance: GlanceServer
) -> None:
    def released() -> bool:
        return not upstream_connections(small_gateway.pid, glance.port)

    wait_until(released, 10, "no connection from the gateway to Glance before the test")
    with open_channel(small_gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        responses = iter(stub.GetImage(pb.GetImageRequest(image_id=big_image.id), timeout=120))
        assert next(responses).WhichOneof("content") == "header"
        received = len(next(responses).data)
        assert upstream_connections(small_gateway.pid, glance.port), "the download holds no connection"
        # The client reads no further. Glance's own send timeout (uWSGI socket-timeout, 10 s here) would
        # not free the gateway's side of the connection at all; the stall timeout must.
        wait_until(released, STALL_TIMEOUT + 6, "the gateway to close its connection to Glance")

        with pytest.raises(grpc.RpcError) as caught:
            for message in responses:
                received += len(message.data)
        assert_error(caught.value, grpc.StatusCode.DEADLINE_EXCEEDED, "CLIENT_STALLED", image_id=big_image.id)
        assert "offset" in (caught.value.details() or "")
        assert received < BIG

        # Glance is free again: the download resumes from where the client got to and completes.
        resumed = list(stub.GetImage(pb.GetImageRequest(image_id=big_image.id, offset=received), timeout=120))
    assert resumed[0].header.offset == received
    assert sum(len(message.data) for message in resumed[1:]) == BIG - received
