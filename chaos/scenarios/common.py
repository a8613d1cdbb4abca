"""What the scenarios share: unique names, gRPC calls as the clients make them, status tallies."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from chaos.env import code_name, error_reason
from chaos.model import percentile
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from harness.data import pseudo_random_chunks

KIB = 1024
MIB = 1024 * KIB
T = TypeVar("T")


def unique_prefix(key: str) -> str:
    """A name prefix no other scenario or earlier run uses: listings by it see only this scenario's images."""
    return f"chaos-{key}-{uuid.uuid4().hex[:10]}-"


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Tally:
    """Status codes and latencies of many calls."""

    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # one details text per code, for the report
    reasons: Counter[str] = field(default_factory=Counter)  # "what: CODE REASON (Glance n)" of the failures

    def record(self, code: str, seconds: float, details: str = "") -> None:
        self.codes[code] += 1
        self.latencies.append(seconds)
        if code != "OK" and code not in self.examples:
            self.examples[code] = details[:300]

    def failed(self, what: str, err: grpc.aio.AioRpcError, seconds: float) -> None:
        code = code_name(err)
        self.record(code, seconds, err.details() or "")
        self.reasons[f"{what}: {code} {error_reason(err)}".strip()] += 1

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


async def bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Runs the jobs with at most `limit` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def download_all(
    stub: pb_grpc.ImageServiceAsyncStub,
    image_id: str,
    deadline: float,
    skip_verification: bool = False,
) -> tuple[pb.DownloadHeader, str, int]:
    """A whole GetImage: its header, the sha512 of the data and its length."""
    call = stub.GetImage(
        pb.GetImageRequest(image_id=image_id, skip_verification=skip_verification), timeout=deadline
    )
    header: pb.DownloadHeader | None = None
    sha = hashlib.sha512()
    length = 0
    async for message in call:
        if message.WhichOneof("content") == "header":
            header = message.header
        else:
            sha.update(message.data)
            length += len(message.data)
    if header is None:
        raise RuntimeError("GetImage sent no header")
    return header, sha.hexdigest(), length


async def add_image(
    stub: pb_grpc.ImageServiceAsyncStub,
    spec: pb.ImageSpec,
    data: bytes,
    deadline: float,
    chunk: int = 256 * KIB,
) -> pb.Image:
    async def requests() -> AsyncIterator[pb.AddImageRequest]:
        yield pb.AddImageRequest(spec=spec)
        for start in range(0, len(data), chunk):
            yield pb.AddImageRequest(data=data[start : start + chunk])

    response: pb.AddImageResponse = await stub.AddImage(requests(), timeout=deadline)
    return response.image


async def timed(awaitable: Awaitable[T]) -> tuple[str, float, str, T | None]:
    """Awaits a call: (status code name, seconds, details, result or None)."""
    started = time.monotonic()
    try:
        result = await awaitable
    except grpc.aio.AioRpcError as err:
        return code_name(err), time.monotonic() - started, err.details() or "", None
    return "OK", time.monotonic() - started, "", result


def random_bytes(seed: int, size: int) -> bytes:
    return b"".join(pseudo_random_chunks(seed, size))
