"""2. Uploads cancelled in bursts: no image record is left in Glance."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

from chaos.env import Env, aio_channel
from chaos.leftovers import force_delete, wait_for_none_left
from chaos.model import Outcome, counts_text
from chaos.plan import Plan
from chaos.scenarios.common import KIB, new_id, random_bytes, unique_prefix
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

CHUNK = 64 * KIB
UPLOAD_SECONDS = 0.4  # the client paces its chunks over this long: cancels after it land on the last chunk
CANCEL_WITHIN = 0.5  # each caller cancels at a random moment in [0, this) after starting


def describe(plan: Plan) -> Outcome:
    return Outcome(
        number=2,
        key="cancelled_uploads",
        title="uploads cancelled in bursts",
        done=f"{plan.cancel_uploads} AddImage calls ({plan.upload_kib} KiB each, sent in 64 KiB chunks over "
        f"~{UPLOAD_SECONDS} s) in bursts of {plan.upload_callers} concurrent callers, each cancelling at a "
        f"random moment 0{chr(0x2013)}{CANCEL_WITHIN} s after it started; then a census straight from "
        "Glance (listings with os_hidden and status=deleted, plus a GET of every id the clients used). "
        "Glance's own 500 mid-upload: not on demand here (a real Glance cannot be made to answer it); it "
        "does happen for real under concurrent uploads (SQLite 'database is locked'), and scenario 6 counts "
        "the records such uploads leave",
        must_show=f"0 records left within {plan.leftover_wait_s:.0f} s (time to 0; what was left, by status)",
    )


class Upload:
    """One paced AddImage that its caller cancels; remembers where the client was when it cancelled."""

    def __init__(self, spec: pb.ImageSpec, data: bytes) -> None:
        self.spec = spec
        self.data = data
        self.chunks_sent = 0
        self.total_chunks = (len(data) + CHUNK - 1) // CHUNK
        self.spec_sent = False

    async def requests(self) -> AsyncIterator[pb.AddImageRequest]:
        self.spec_sent = True
        yield pb.AddImageRequest(spec=self.spec)
        pause = UPLOAD_SECONDS / self.total_chunks
        for start in range(0, len(self.data), CHUNK):
            await asyncio.sleep(pause)
            yield pb.AddImageRequest(data=self.data[start : start + CHUNK])
            self.chunks_sent += 1

    def phase(self) -> str:
        if self.chunks_sent == 0:
            return "cancelled before any data (create call)"
        if self.chunks_sent < self.total_chunks:
            return "cancelled mid-data"
        return "cancelled after the last chunk was sent"


async def _await(call: Any) -> pb.AddImageResponse:
    response: pb.AddImageResponse = await call
    return response


async def _one(
    stub: pb_grpc.ImageServiceAsyncStub, upload: Upload, cancel_after: float
) -> tuple[str, str | None]:
    """Where the cancel landed, and the image id if the call completed before it."""
    call = stub.AddImage(upload.requests(), timeout=60)
    task = asyncio.ensure_future(_await(call))
    done, _ = await asyncio.wait({task}, timeout=cancel_after)
    if not done:
        phase = upload.phase()
        call.cancel()
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            await task
        return phase, None
    try:
        response = task.result()
    except grpc.aio.AioRpcError as err:
        return f"failed {err.code().name} before the cancel", None
    return "completed before the cancel", response.image.id


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    prefix = unique_prefix("s2")
    gateway = env.gateway()
    rng = random.Random(2)
    data = random_bytes(2, plan.upload_kib * KIB)
    uploads = [
        Upload(pb.ImageSpec(id=new_id(), name=f"{prefix}{i}", type=pb.IMAGE_TYPE_RAW), data)
        for i in range(plan.cancel_uploads)
    ]

    async def traffic() -> list[tuple[str, str | None]]:  # (where the cancel landed, id if it completed)
        results: list[tuple[str, str | None]] = []
        async with aio_channel(gateway.address) as channel:
            stub = pb_grpc.ImageServiceStub(channel)
            for first in range(0, len(uploads), plan.upload_callers):
                burst = uploads[first : first + plan.upload_callers]
                results += await asyncio.gather(
                    *(_one(stub, u, rng.uniform(0, CANCEL_WITHIN)) for u in burst)
                )
        return results

    started = time.monotonic()
    results = asyncio.run(traffic())
    phases = Counter(phase for phase, _ in results)
    outcome.figures["phases"] = dict(phases)
    outcome.figures["traffic_s"] = round(time.monotonic() - started, 1)
    # Uploads that finished before their cancel made real images: not leftovers; the suite deletes them.
    completed = [image_id for _, image_id in results if image_id]
    for image_id in completed:
        force_delete(env.glance_url, image_id)
    census, took = wait_for_none_left(
        env.glance_url, prefix, [u.spec.id for u in uploads], timeout=plan.leftover_wait_s
    )
    phase_of = {u.spec.id: phase for u, (phase, _) in zip(uploads, results, strict=True)}
    outcome.figures["left"] = {
        i: {**_brief(img), "cancel": phase_of.get(i)} for i, img in census.images.items()
    }
    if census.count:
        left_phases = Counter(str(phase_of.get(i, "not a client id")) for i in census.images)
        outcome.note("where the leftovers' cancels landed: " + counts_text(left_phases))
    outcome.figures["seconds_to_zero"] = took
    outcome.note("where the cancels landed: " + counts_text(phases))
    waited = census.waited_text(took)
    outcome.check(
        "0 records left",
        census.count == 0,
        f"{census.text()} {waited}; {len(completed)} of {len(uploads)} completed before their cancel "
        "(deleted by the suite)",
    )
    for image_id in census.images:
        force_delete(env.glance_url, image_id)


def _brief(image: dict[str, Any]) -> dict[str, Any]:
    return {key: image.get(key) for key in ("name", "status", "size", "os_hidden")}
