"""3. Glance SIGKILLed mid-download and mid-upload, then restarted on the same port and state dir."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

from chaos.env import Env, aio_channel, code_name, error_reason, seed_image, upstream_connections
from chaos.leftovers import force_delete, wait_for_none_left
from chaos.model import BUG_CODES, Outcome, counts_text
from chaos.plan import Plan
from chaos.scenarios.common import KIB, MIB, add_image, download_all, new_id, random_bytes, unique_prefix
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

UPLOAD_MIB = 16
CHUNK = 64 * KIB
UPLOAD_SECONDS = 8.0  # paced, so the uploads are still sending when Glance dies
# Older than the paced uploads (a sweep must never take an upload still in flight), young enough to act
# within the leftover wait.
SWEEP_FLAGS = ("--sweep-age", "15", "--sweep-interval", "3")
HOLD_FLAGS = ("--stall-timeout", "60")


def describe(plan: Plan) -> Outcome:
    return Outcome(
        number=3,
        key="glance_killed",
        title="Glance killed mid-transfer",
        done=f"{plan.killed_downloads} GetImage of a {plan.killed_image_mib} MiB image (one message read, "
        f"then held until the kill) and {plan.killed_uploads} AddImage of {UPLOAD_MIB} MiB (paced) in "
        "flight; SIGKILL of the whole uWSGI group; a GetImageMeta while it is down; Glance restarted at once "
        "on the same port and state dir (while the in-flight calls end); new calls through the same gateway "
        "process",
        must_show="in-flight calls end UNAVAILABLE (never UNKNOWN/INTERNAL); 0 records left once Glance is "
        f"back (gateway's background clean-up allowed {plan.leftover_wait_s:.0f} s); the same gateway "
        "serves new calls",
    )


async def _held_download(
    stub: pb_grpc.ImageServiceAsyncStub, image_id: str, first: asyncio.Event, killed: asyncio.Event
) -> str:
    """Reads the first data message, then holds off (well within the stall timeout) until Glance is killed:
    the rest of the image is still upstream when it dies."""
    try:
        call = stub.GetImage(pb.GetImageRequest(image_id=image_id), timeout=120)
        async for message in call:
            if message.WhichOneof("content") == "data" and not first.is_set():
                first.set()
                await killed.wait()
    except grpc.aio.AioRpcError as err:
        first.set()
        return "GetImage " + _ending(err)
    return "GetImage OK"


async def _paced_upload(stub: pb_grpc.ImageServiceAsyncStub, spec: pb.ImageSpec, data: bytes,
                        first: asyncio.Event) -> str:  # fmt: skip
    async def requests() -> AsyncIterator[pb.AddImageRequest]:
        yield pb.AddImageRequest(spec=spec)
        pause = UPLOAD_SECONDS / (len(data) // CHUNK)
        for start in range(0, len(data), CHUNK):
            yield pb.AddImageRequest(data=data[start : start + CHUNK])
            first.set()
            await asyncio.sleep(pause)

    try:
        await stub.AddImage(requests(), timeout=120)
    except grpc.aio.AioRpcError as err:
        first.set()
        return "AddImage " + _ending(err)
    return "AddImage OK"


def _ending(err: grpc.aio.AioRpcError) -> str:
    """UNAVAILABLE as it is; any other code with its reason, and its message when it is a bug code."""
    code = code_name(err)
    if code == "UNAVAILABLE":
        return code
    return f"{code} {error_reason(err)}" + (f" ({err.details()})" if code in BUG_CODES else "")


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    prefix = unique_prefix("s3")
    image = seed_image(env.glance_url, prefix + "seed", plan.killed_image_mib * MIB, seed=3)
    sweep = env.has_flags("--sweep-age", "--sweep-interval")
    # The held downloads must not trip the stall timeout (scenario 8's subject) before Glance dies.
    flags = (*(SWEEP_FLAGS if sweep else ()), *(HOLD_FLAGS if env.has_flags("--stall-timeout") else ()))
    gateway = env.gateway(*flags)
    outcome.note(
        "gateway run with "
        + (" ".join(flags) if flags else "no flags (no --sweep-age, no --stall-timeout)")
        + ("" if sweep else "; it has no sweep")
    )
    data = random_bytes(3, UPLOAD_MIB * MIB)
    specs = [pb.ImageSpec(id=new_id(), name=f"{prefix}{i}", type=pb.IMAGE_TYPE_RAW)
             for i in range(plan.killed_uploads)]  # fmt: skip
    figures: dict[str, Any] = {}

    async def scenario() -> None:
        async with aio_channel(gateway.address) as channel:
            stub = pb_grpc.ImageServiceStub(channel)
            # Uploads first (paced, they keep going), then the downloads, each held after its first message.
            up_events = [asyncio.Event() for _ in specs]
            down_events = [asyncio.Event() for _ in range(plan.killed_downloads)]
            killed = asyncio.Event()
            started = time.monotonic()
            tasks = [asyncio.ensure_future(_paced_upload(stub, spec, data, event))
                     for spec, event in zip(specs, up_events, strict=True)]  # fmt: skip
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in up_events)), timeout=30)
            figures["uploads_sending_after_s"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            tasks += [asyncio.ensure_future(_held_download(stub, image.id, event, killed))
                      for event in down_events]  # fmt: skip
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in down_events)), timeout=15)
            figures["downloads_streaming_after_s"] = round(time.monotonic() - started, 1)
            await asyncio.sleep(0.5)
            figures["upstream_before_kill"] = len(upstream_connections(gateway.pid, env.glance_port))
            env.log("killing glance (SIGKILL to the uWSGI group)")
            killed_at = time.monotonic()
            await asyncio.to_thread(env.kill_glance)
            killed.set()
            try:
                await stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=30)
                figures["while_down"] = "OK"
            except grpc.aio.AioRpcError as err:
                figures["while_down"] = code_name(err)
            # Glance comes back while the in-flight calls are still ending, as a supervisor would restart it.
            restart = asyncio.ensure_future(asyncio.to_thread(env.restart_glance))
            results = await asyncio.gather(*tasks)
            figures["in_flight_ended_s"] = round(time.monotonic() - killed_at, 1)
            figures["in_flight"] = dict(Counter(results))
            figures["restart_s"] = round(await restart, 1)
            # The same gateway process, after the restart: metadata, a verified download, an upload, a delete.
            new_calls: list[str] = []
            try:
                await stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=30)
                header, digest, _ = await download_all(stub, image.id, deadline=120)
                new_calls.append("download " + ("verified" if digest == image.sha512 and header.verified
                                                else "WRONG DATA"))  # fmt: skip
                spec = pb.ImageSpec(id=new_id(), name=f"{prefix}after", type=pb.IMAGE_TYPE_RAW)
                added = await add_image(stub, spec, data[:MIB], deadline=60)
                await stub.DeleteImage(pb.DeleteImageRequest(image_id=added.id), timeout=30)
                new_calls.append("upload+delete OK")
            except grpc.aio.AioRpcError as err:
                new_calls.append(f"{code_name(err)}: {err.details()}")
            figures["new_calls"] = new_calls

    asyncio.run(scenario())
    outcome.figures.update(figures)
    in_flight: dict[str, int] = figures["in_flight"]
    outcome.check(
        "in-flight calls end UNAVAILABLE",
        all(kind.endswith(" UNAVAILABLE") for kind in in_flight)
        and figures["upstream_before_kill"] >= plan.killed_downloads + plan.killed_uploads,
        f"{counts_text(in_flight)} ({figures['upstream_before_kill']} upstream connections at the kill, "
        f"for {plan.killed_downloads + plan.killed_uploads} calls; the "
        f"last ended {figures['in_flight_ended_s']} s after it); GetImageMeta while down: "
        f"{figures['while_down']}",
    )
    census, took = wait_for_none_left(
        env.glance_url, prefix, [s.id for s in specs], timeout=plan.leftover_wait_s, keep=[image.id]
    )
    outcome.figures["left"] = {i: img.get("status") for i, img in census.images.items()}
    waited = census.waited_text(took)
    outcome.check(
        "0 records left", census.count == 0,
        f"{census.text()} {waited} once Glance was back (restart took {figures['restart_s']} s)",
    )  # fmt: skip
    alive = gateway.returncode() is None
    served = alive and len(figures["new_calls"]) == 2 and "verified" in figures["new_calls"][0]
    outcome.check(
        "same gateway serves again", served,
        f"pid {gateway.pid} {'still running' if alive else 'EXITED'}: {'; '.join(figures['new_calls'])}",
    )  # fmt: skip
    for image_id in [*census.images, image.id]:
        force_delete(env.glance_url, image_id)
