"""One measurement each: a single download, upload, metadata loop or concurrent burst, gateway or direct.

Each returns what it timed (seconds, or per-call latencies) and checks that the work really happened
(byte counts, sizes stored upstream), so a broken path fails loudly instead of looking fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import grpc
import httpx

from bench.data import CHUNK, UploadData
from bench.upstreams import SeededImage, Upstream
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

MIB = 1024 * 1024
CALL_TIMEOUT = 900.0  # seconds; far above any transfer here, only so that a hang ends
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * MIB),
    ("grpc.max_send_message_length", 16 * MIB),
    ("grpc.enable_http_proxy", 0),  # loopback: never through a proxy from the environment
]


# gRPC shares one connection between channels with the same target and options (the global subchannel
# pool); channels meant as separate clients need their own connection each.
OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


def open_channel(address: str, own_connection: bool = False) -> grpc.Channel:
    channel = grpc.insecure_channel(address, options=OWN_CONNECTION if own_connection else CHANNEL_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


# -- download ----------------------------------------------------------------------


def direct_download(client: httpx.Client, image: SeededImage) -> float:
    """Streams GET /v2/images/<id>/file, counting bytes; returns the seconds it took."""
    started = time.perf_counter()
    received = 0
    with client.stream("GET", f"/v2/images/{image.id}/file") as response:
        response.raise_for_status()
        for chunk in response.iter_raw(CHUNK):
            received += len(chunk)
    elapsed = time.perf_counter() - started
    _check(received == image.size, f"direct download got {received} of {image.size} bytes")
    return elapsed


def gateway_download(stub: pb_grpc.ImageServiceStub, image: SeededImage, verify: bool = True) -> float:
    """A whole GetImage call (header, then data chunks), counting bytes; returns the seconds it took.

    `verify=False` asks the gateway to skip hashing (skip_verification), as a direct download does."""
    started = time.perf_counter()
    request = pb.GetImageRequest(image_id=image.id, skip_verification=not verify)
    responses = stub.GetImage(request, timeout=CALL_TIMEOUT)
    first = next(responses)
    _check(first.WhichOneof("content") == "header", "the first GetImage message is not the header")
    received = 0
    for message in responses:
        received += len(message.data)
    elapsed = time.perf_counter() - started
    _check(received == image.size == first.header.length, f"GetImage got {received} of {image.size} bytes")
    _check(first.header.verified == verify, f"GetImage header says verified={first.header.verified}")
    return elapsed


def glanceclient_download(client: Any, image: SeededImage) -> float:
    """python-glanceclient's images.data(id), iterated to the end (it verifies the image's hash)."""
    started = time.perf_counter()
    received = 0
    for chunk in client.images.data(image.id):
        received += len(chunk)
    elapsed = time.perf_counter() - started
    _check(received == image.size, f"glanceclient got {received} of {image.size} bytes")
    return elapsed


# -- upload --------------------------------------------------------------------------


def direct_upload(client: httpx.Client, upstream: Upstream, data: UploadData) -> float:
    """POST /v2/images, then PUT the bytes (streamed, Content-Length set); returns the seconds it took."""
    upstream.prepare_upload(data)
    started = time.perf_counter()
    created = client.post(
        "/v2/images", json={"name": "bench-direct", "disk_format": "raw", "container_format": "bare"}
    )
    created.raise_for_status()
    image_id = str(created.json()["id"])
    response = client.put(
        f"/v2/images/{image_id}/file",
        content=data.chunks(),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(data.size)},
    )
    response.raise_for_status()
    elapsed = time.perf_counter() - started
    _finish_upload(upstream, image_id, data.size, "direct upload")
    return elapsed


def add_image_requests(data: UploadData, name: str) -> Iterator[pb.AddImageRequest]:
    spec = pb.ImageSpec(name=name, disk_format="raw", container_format="bare", size=data.size)
    yield pb.AddImageRequest(spec=spec)
    for chunk in data.chunks():
        yield pb.AddImageRequest(data=chunk)


def gateway_upload(stub: pb_grpc.ImageServiceStub, upstream: Upstream, data: UploadData) -> float:
    """AddImage: the spec (with the size), then 1 MiB data messages; returns the seconds it took."""
    upstream.prepare_upload(data)
    started = time.perf_counter()
    response = stub.AddImage(add_image_requests(data, "bench-gateway"), timeout=CALL_TIMEOUT)
    elapsed = time.perf_counter() - started
    _check(response.image.size == data.size, f"AddImage answered size {response.image.size}, not {data.size}")
    _finish_upload(upstream, response.image.id, data.size, "AddImage")
    return elapsed


def _finish_upload(upstream: Upstream, image_id: str, size: int, what: str) -> None:
    stored = upstream.uploaded_size(image_id)
    upstream.discard(image_id)
    _check(stored == size, f"{what}: the upstream stored {stored} of {size} bytes")


# -- metadata: sequential latency -------------------------------------------------------


def direct_meta_latencies(client: httpx.Client, image_id: str, calls: int) -> list[float]:
    """`calls` sequential GET /v2/images/<id> (+ JSON decoding); the seconds each took."""
    path = f"/v2/images/{image_id}"
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.get(path)
        response.raise_for_status()
        record = response.json()
        latencies.append(time.perf_counter() - started)
        _check(record["id"] == image_id, "direct GET answered another image")
    return latencies


def gateway_meta_latencies(stub: pb_grpc.ImageServiceStub, image_id: str, calls: int) -> list[float]:
    """`calls` sequential GetImageMeta calls; the seconds each took."""
    request = pb.GetImageMetaRequest(image_id=image_id)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        response = stub.GetImageMeta(request, timeout=60)
        latencies.append(time.perf_counter() - started)
        _check(response.image.id == image_id, "GetImageMeta answered another image")
    return latencies


# -- metadata: concurrent callers ------------------------------------------------------


async def _burst(callers: int, calls_each: int, call: Any) -> float:
    """Warms up (one call per caller, untimed), then `callers` tasks make `calls_each` calls each."""
    return await _burst_of([call] * callers, calls_each)


async def _burst_of(calls: list[Any], calls_each: int) -> float:
    """One task per entry of `calls` (each a coroutine function making one call): a warm-up call each,
    untimed, then `calls_each` calls each; returns the timed seconds."""

    async def caller(call: Any, count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(caller(call, 1) for call in calls))
    started = time.perf_counter()
    await asyncio.gather(*(caller(call, calls_each) for call in calls))
    return time.perf_counter() - started


def gateway_concurrent(address: str, image_id: str, callers: int, calls_each: int) -> float:
    """GetImageMeta from `callers` concurrent callers on one grpc.aio channel; returns the timed seconds."""

    async def run() -> float:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.ImageServiceStub(channel)
            request = pb.GetImageMetaRequest(image_id=image_id)

            async def call() -> None:
                response = await stub.GetImageMeta(request, timeout=60)
                _check(response.image.id == image_id, "GetImageMeta answered another image")

            return await _burst(callers, calls_each, call)

    return asyncio.run(run())


def direct_concurrent(base_url: str, image_id: str, callers: int, calls_each: int) -> float:
    """GET /v2/images/<id> + JSON from `callers` concurrent aiohttp callers on one session."""

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=callers)
        async with aiohttp.ClientSession(base_url, connector=connector, trust_env=False) as session:
            path = f"/v2/images/{image_id}"

            async def call() -> None:
                async with session.get(path) as response:
                    response.raise_for_status()
                    record = await response.json()
                _check(record["id"] == image_id, "direct GET answered another image")

            return await _burst(callers, calls_each, call)

    return asyncio.run(run())


# -- several clients at once (the --workers figures) --------------------------------------


def gateway_channels_concurrent(
    address: str,
    image_id: str,
    channels: int,
    callers_per_channel: int,
    calls_each: int,
    connected: Callable[[], None] = lambda: None,
) -> float:
    """GetImageMeta from `channels` grpc.aio channels, each its own connection (as separate client processes
    would have), with `callers_per_channel` concurrent callers on each; `connected()` runs once every
    connection is up, before the timed part. Returns the timed seconds."""

    async def run() -> float:
        opened = [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(channels)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in opened)), timeout=10)
            connected()
            request = pb.GetImageMetaRequest(image_id=image_id)
            calls = []
            for channel in opened:
                stub = pb_grpc.ImageServiceStub(channel)

                async def call(stub: pb_grpc.ImageServiceAsyncStub = stub) -> None:
                    response = await stub.GetImageMeta(request, timeout=60)
                    _check(response.image.id == image_id, "GetImageMeta answered another image")

                calls.extend([call] * callers_per_channel)
            return await _burst_of(calls, calls_each)
        finally:
            await asyncio.gather(*(c.close() for c in opened))

    return asyncio.run(run())


def gateway_parallel_downloads(
    address: str, image: SeededImage, streams: int, connected: Callable[[], None] = lambda: None
) -> float:
    """`streams` verified GetImage calls of `image` at once, each on its own channel and connection and in its
    own thread; `connected()` runs once every connection is up. Returns the seconds until the last ended."""
    channels = [open_channel(address, own_connection=True) for _ in range(streams)]
    try:
        connected()
        stubs = [pb_grpc.ImageServiceStub(channel) for channel in channels]
        with ThreadPoolExecutor(streams, thread_name_prefix="download") as pool:
            started = time.perf_counter()
            # Each call checks its own byte count and header (gateway_download).
            list(pool.map(lambda stub: gateway_download(stub, image), stubs))
            return time.perf_counter() - started
    finally:
        for channel in channels:
            channel.close()
