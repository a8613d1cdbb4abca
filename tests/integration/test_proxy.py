"""Two gateway replicas behind Debian's nginx (deploy/nginx/glance-grpc-gateway.conf), before a real Glance.

The proxy config is the shipped file with only addresses and paths rewritten (harness/proxy.py). Clients
speak gRPC over TLS to nginx; nginx balances calls over two gateway processes (h2c). The walkthrough shows
every RPC and an error status pass through unchanged. The rolling restart shows what the deploy config, an
operator's `down` + `nginx -s reload` and the gateway's drain sequence (--drain-delay, --shutdown-grace)
promise together: no call is lost while each replica in turn is taken out, stopped and started again, and a
download in flight on a draining replica completes. The crash shows what nginx does alone (max_fails=0,
grpc_next_upstream): while a replica is dead every call goes to the other one, and once it is back it serves
again at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from harness.proxy import NginxProxy, self_signed_certificate
from localglance import GlanceServer
from localglance.ports import free_port

from .support import (
    CHANNEL_OPTIONS,
    MIB,
    GatewayProcess,
    ImageTracker,
    StartGateway,
    assert_error,
    download,
    open_channel,
    sha512_hex,
    unique_name,
    wait_until,
)

# A replica keeps serving this long after SIGTERM (NOT_SERVING meanwhile), then closes its port; the calls it
# has get SHUTDOWN_GRACE seconds more, which covers the throttled download below with room to spare.
DRAIN_DELAY = 1.0
SHUTDOWN_GRACE = 30.0
REPLICA_FLAGS = ("--drain-delay", str(DRAIN_DELAY), "--shutdown-grace", str(SHUTDOWN_GRACE))
# Big enough that the download is still on the wire (behind the TCP and HTTP/2 buffers of three hops) when
# its replica closes its port; the client reads slowly until then.
BIG_IMAGE = 64 * MIB
THROTTLE_SECONDS_PER_MESSAGE = 0.1


@dataclass
class Replica:
    port: int
    process: GatewayProcess

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def read_chars(self) -> int:
        """Bytes the process has read with read(2) so far (/proc/<pid>/io rchar): the image data it takes
        from Glance (uvloop reads sockets with read(2); gRPC's sendmsg(2) to nginx is not counted)."""
        return psutil.Process(self.process.pid).io_counters().read_chars

    def refuses_connections(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) != 0

    def serving(self) -> bool:
        """Its health service answers SERVING for the whole server (a readiness probe, straight to it)."""
        try:
            with open_channel(self.address) as channel:
                health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs list no methods
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Proxied:
    glance: GlanceServer
    start_gateway: StartGateway
    replicas: list[Replica]
    proxy: NginxProxy
    stub: pb_grpc.ImageServiceStub
    images: ImageTracker

    def start_replica(self, port: int) -> GatewayProcess:
        # The harness passes --port 0 first; the later --port wins (argparse).
        return self.start_gateway(self.glance.url, "--port", str(port), *REPLICA_FLAGS)

    def take_out(self, replica: Replica) -> None:
        """The operator's first step: `down` in the upstream and `nginx -s reload`, so that nginx, which never
        looks at health, sends the replica no new call before it stops. (SIGTERM alone is not enough: gRPC
        core cancels a call that reaches a server once its stop has begun, even one its GOAWAY still admits;
        measured, 2 of 75 restarts under load cost one call CANCELLED.)"""
        self.proxy.set_down([replica.address])

    def stop_and_start(self, replica: Replica) -> None:
        """SIGTERM, wait for it to exit, start it again on the same port, wait until it reports SERVING."""
        os.kill(replica.process.pid, signal.SIGTERM)
        self.wait_exit(replica)
        replica.process = self.start_replica(replica.port)
        wait_until(replica.serving, 15, f"replica {replica.address} to serve again")

    def wait_exit(self, replica: Replica) -> None:
        process = replica.process
        wait_until(lambda: process.returncode() is not None, SHUTDOWN_GRACE + 15, "the replica to exit")
        assert process.returncode() == 0, process.log_text()


@pytest.fixture
def proxied(glance: GlanceServer, start_gateway: StartGateway, tmp_path: Path) -> Iterator[Proxied]:
    ports = [free_port(), free_port()]
    start = [start_gateway(glance.url, "--port", str(port), *REPLICA_FLAGS) for port in ports]
    replicas = [Replica(port, process) for port, process in zip(ports, start, strict=True)]
    cert, key = self_signed_certificate(tmp_path)
    proxy = NginxProxy(tmp_path / "nginx", [r.address for r in replicas], free_port(), cert, key)
    checked = proxy.check()
    assert checked.returncode == 0, checked.stderr
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with proxy, grpc.secure_channel(proxy.address, credentials, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        images = ImageTracker(stub, glance.url)
        try:
            yield Proxied(glance, start_gateway, replicas, proxy, stub, images)
        finally:
            images.cleanup()


def test_client_walkthrough_through_nginx(proxied: Proxied, glance: GlanceServer) -> None:
    stub = proxied.stub
    data = os.urandom(3 * MIB + 123)  # several download chunks, not a multiple of one
    image = proxied.images(
        name=unique_name("proxy"),
        data=data,
        chunk_size=MIB,
        type=pb.IMAGE_TYPE_MACHINE,
        is_public="true",
        properties={"distro": "Ubuntu 10.10"},
    )
    assert (image.status, image.size) == (pb.IMAGE_STATUS_ACTIVE, len(data))
    assert image.os_hash_value == sha512_hex(data)

    basic = stub.ListImages(pb.ListImagesRequest(name=image.name, view=pb.IMAGE_VIEW_BASIC), timeout=30)
    full = stub.ListImages(pb.ListImagesRequest(name=image.name, view=pb.IMAGE_VIEW_FULL), timeout=30)
    assert [i.id for i in basic.images] == [i.id for i in full.images] == [image.id]
    assert not basic.images[0].properties and basic.images[0].checksum == image.checksum
    assert full.images[0].properties["distro"] == "Ubuntu 10.10"

    by_id = stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=30).image
    for uri in (f"{glance.url}/v2/images/{image.id}", f"{glance.url}/images/{image.id}"):
        assert stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=uri), timeout=30).image == by_id
    assert by_id.visibility == pb.VISIBILITY_PUBLIC

    header, received = download(stub, pb.GetImageRequest(image_id=image.id))
    assert (header.offset, header.length, header.verified) == (0, len(data), True)
    assert sha512_hex(received) == sha512_hex(data)
    header, received = download(stub, pb.GetImageRequest(image_id=image.id, offset=MIB - 10, limit=MIB + 20))
    assert (header.offset, header.length, header.verified) == (MIB - 10, MIB + 20, False)
    assert received == data[MIB - 10 : 2 * MIB + 10]

    new_name = unique_name("proxy-renamed")
    updated = stub.UpdateImage(
        pb.UpdateImageRequest(
            image_id=image.id,
            image=pb.Image(name=new_name, properties={"distro": "Debian 12"}),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "properties.distro"]),
        ),
        timeout=30,
    ).image
    assert (updated.name, updated.properties["distro"]) == (new_name, "Debian 12")

    stub.DeleteImage(pb.DeleteImageRequest(image_id=image.id), timeout=30)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=30)
    # The gateway's status and ErrorInfo detail reach the client through nginx unchanged.
    assert_error(caught.value, grpc.StatusCode.NOT_FOUND, "NOT_FOUND", glance_status=404, image_id=image.id)

    # nginx logged each call's gRPC status (NOT_FOUND is 5; nginx writes the line just after the answer)
    # and balanced the calls over both replicas.
    wait_until(
        lambda: any("grpc-status=5 " in line for line in proxied.proxy.access_log()),
        10,
        "the access log line",
    )
    log = proxied.proxy.access_log()
    for replica in proxied.replicas:
        assert any(f"upstream={replica.address} " in line for line in log), log


@dataclass
class UnaryLoop:
    """Callers looping through the proxy, recording every outcome: `readers` over GetImageMeta and ListImages
    of `image`, and one caller changing a property of `target` with UpdateImage (a call nginx must not
    repeat, and need not: it only moves calls that reached no replica)."""

    stub: pb_grpc.ImageServiceStub
    image: pb.Image
    target: pb.Image
    readers: int = 3
    outcomes: list[tuple[float, str, str | None]] = field(default_factory=list)  # (when, RPC, error or None)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _call(self, rpc: str, number: int) -> str | None:
        try:
            if rpc == "ListImages":
                listed = self.stub.ListImages(pb.ListImagesRequest(name=self.image.name), timeout=30)
                ok = [i.id for i in listed.images] == [self.image.id]
            elif rpc == "GetImageMeta":
                meta = self.stub.GetImageMeta(pb.GetImageMetaRequest(image_id=self.image.id), timeout=30)
                ok = meta.image.id == self.image.id
            else:
                request = pb.UpdateImageRequest(
                    image_id=self.target.id,
                    image=pb.Image(properties={"counter": str(number)}),
                    update_mask=field_mask_pb2.FieldMask(paths=["properties.counter"]),
                )
                ok = self.stub.UpdateImage(request, timeout=30).image.properties["counter"] == str(number)
        except grpc.RpcError as err:
            assert isinstance(err, grpc.Call)
            return f"{err.code()}: {err.details()}"
        return None if ok else "a wrong answer"

    def _run(self, rpcs: tuple[str, ...]) -> None:
        number = 0
        while not self._stop.is_set():
            rpc = rpcs[number % len(rpcs)]
            started = time.monotonic()
            self.outcomes.append((started, rpc, self._call(rpc, number)))
            number += 1

    def __enter__(self) -> UnaryLoop:
        plans = [("GetImageMeta", "ListImages")] * self.readers + [("UpdateImage",)]
        for number, rpcs in enumerate(plans):
            thread = threading.Thread(target=self._run, args=(rpcs,), name=f"unary-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self, rpc: str, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(1 for when, called, _ in list(self.outcomes) if called == rpc and start <= when <= end)

    def failures(self) -> list[tuple[float, str, str | None]]:
        return [outcome for outcome in self.outcomes if outcome[2] is not None]


class SlowDownload(threading.Thread):
    """One GetImage through the proxy, read slowly while `throttled` is set; hashed as it arrives."""

    def __init__(self, stub: pb_grpc.ImageServiceStub, image_id: str) -> None:
        super().__init__(name="slow-download", daemon=True)
        self.stub = stub
        self.image_id = image_id
        self.throttled = threading.Event()
        self.throttled.set()
        self.received = 0
        self.header: pb.DownloadHeader | None = None
        self.error: BaseException | None = None
        self._sha512 = hashlib.sha512()

    def run(self) -> None:
        try:
            for message in self.stub.GetImage(pb.GetImageRequest(image_id=self.image_id), timeout=120):
                if message.WhichOneof("content") == "header":
                    self.header = message.header
                else:
                    self._sha512.update(message.data)
                    self.received += len(message.data)
                if self.throttled.is_set():
                    time.sleep(THROTTLE_SECONDS_PER_MESSAGE)
        except BaseException as exc:  # reported by the test, which joins this thread
            self.error = exc

    def sha512(self) -> str:
        return self._sha512.hexdigest()


def test_rolling_restart_loses_no_call(proxied: Proxied) -> None:
    data = os.urandom(BIG_IMAGE)
    image = proxied.images(name=unique_name("rolling"), data=data, chunk_size=MIB, type=pb.IMAGE_TYPE_RAW)
    target = proxied.images(name=unique_name("rolling-updated"))
    before = [replica.read_chars() for replica in proxied.replicas]

    with UnaryLoop(proxied.stub, image, target) as loop:
        reader = SlowDownload(proxied.stub, image.id)
        reader.start()
        wait_until(lambda: reader.received >= 8 * MIB or not reader.is_alive(), 30, "the download to start")
        assert reader.error is None, reader.error
        # The replica serving the download is the one that read its bytes from Glance (the unary calls read
        # a few KiB each).
        grown = [replica.read_chars() - old for replica, old in zip(proxied.replicas, before, strict=True)]
        serving = [replica for replica, read in zip(proxied.replicas, grown, strict=True) if read >= 6 * MIB]
        assert len(serving) == 1, grown
        first = serving[0]
        second = next(replica for replica in proxied.replicas if replica is not first)

        # 1. The replica serving the download is taken out of nginx, then drains: it answers for the drain
        #    delay, then closes its port while the download is still on its way; the download then runs at
        #    full speed to its end.
        windows = []
        window_start = time.monotonic()
        proxied.take_out(first)
        os.kill(first.process.pid, signal.SIGTERM)
        wait_until(first.refuses_connections, DRAIN_DELAY + 15, "the draining replica to close its port")
        assert reader.is_alive() and reader.received < BIG_IMAGE, "the download ended before the drain"
        reader.throttled.clear()
        reader.join(timeout=SHUTDOWN_GRACE)
        assert not reader.is_alive(), "the download did not finish within the shutdown grace"
        assert reader.error is None, reader.error
        assert reader.header is not None and reader.header.verified
        assert (reader.received, reader.sha512()) == (BIG_IMAGE, sha512_hex(data))
        proxied.wait_exit(first)
        first.process = proxied.start_replica(first.port)
        wait_until(first.serving, 15, f"replica {first.address} to serve again")
        proxied.proxy.set_down([])
        windows.append((window_start, time.monotonic()))

        # 2. Then the other replica, the same way (no download this time).
        window_start = time.monotonic()
        proxied.take_out(second)
        proxied.stop_and_start(second)
        proxied.proxy.set_down([])
        windows.append((window_start, time.monotonic()))
        time.sleep(0.5)  # a few more calls over both restarted replicas

    failures = loop.failures()
    counts = {rpc: loop.count(rpc) for rpc in ("GetImageMeta", "ListImages", "UpdateImage")}
    print(f"\ncalls {counts}: {len(failures)} failed")
    # The access log's lines with a status other than OK (0) and NOT_FOUND (5) tell which replica failed.
    assert failures == [], [
        line for line in proxied.proxy.access_log() if not re.search(r"grpc-status=[05] ", line)
    ]
    # Calls of each kind really ran while each replica was draining, down and starting again.
    for start, end in windows:
        for rpc in counts:
            assert loop.count(rpc, start, end) >= 1, (rpc, start, end)


def test_a_crashed_replica_costs_no_later_call(proxied: Proxied) -> None:
    """No operator, no drain: a replica is killed outright. nginx moves every call whose connection it
    refuses to the other replica (grpc_next_upstream error), and with max_fails=0 sends the replica calls
    again as soon as it is back, where nginx's default (max_fails=1 fail_timeout=10s) would bench it 10 s."""
    image = proxied.images(name=unique_name("crash"), data=os.urandom(1000), type=pb.IMAGE_TYPE_RAW)
    target = proxied.images(name=unique_name("crash-updated"))
    victim = proxied.replicas[0]
    with UnaryLoop(proxied.stub, image, target) as loop:
        wait_until(lambda: loop.count("GetImageMeta") >= 10, 15, "calls through both replicas")
        os.kill(victim.process.pid, signal.SIGKILL)
        wait_until(lambda: victim.process.returncode() is not None, 10, "the killed replica to be reaped")
        # Calls in flight on the victim when it died fail; nginx has seen its connections close by now.
        dead = time.monotonic() + 0.25
        wait_until(lambda: loop.count("GetImageMeta", dead) >= 20, 15, "calls while the replica is dead")
        victim.process = proxied.start_replica(victim.port)
        wait_until(victim.serving, 15, f"replica {victim.address} to serve again")
        back = len(proxied.proxy.access_log())
        served_by_victim = re.compile(rf" upstream={re.escape(victim.address)} ")
        wait_until(
            lambda: any(served_by_victim.search(line) for line in proxied.proxy.access_log()[back:]),
            8,
            "nginx to send the restarted replica calls (well before a 10 s fail_timeout)",
        )
    later_failures = [failure for failure in loop.failures() if failure[0] >= dead]
    assert later_failures == [], proxied.proxy.error_log()
    # $upstream_addr lists every replica a call was sent to: two when nginx moved it.
    moved = [
        line
        for line in proxied.proxy.access_log()
        if re.search(rf" upstream={re.escape(victim.address)}, ", line)
    ]
    assert moved, "no call was moved from the dead replica"
