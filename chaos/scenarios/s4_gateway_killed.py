"""4. The gateway SIGKILLed mid-upload, then restarted: its sweep removes the unfinished record only."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from chaos.env import Env, FeatureMissing, aio_channel, code_name, wait_for
from chaos.leftovers import force_delete, glance_image
from chaos.model import Outcome
from chaos.plan import Plan
from chaos.scenarios.common import KIB, MIB, new_id, random_bytes, unique_prefix
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

SWEEP_AGE_S = 5
SWEEP_INTERVAL_S = 2
SWEEP_FLAGS = ("--sweep-age", str(SWEEP_AGE_S), "--sweep-interval", str(SWEEP_INTERVAL_S))
UPLOAD_MIB = 16
CHUNK = 64 * KIB
UPLOAD_SECONDS = 10.0
# After the unfinished record is gone, the reservation is watched through this many more sweeps.
SWEEPS_AFTER = 3


def describe(plan: Plan) -> Outcome:
    return Outcome(
        number=4,
        key="gateway_killed",
        title="gateway killed mid-upload",
        done="a reservation (AddImage with only a spec: a queued image), then a paced AddImage; the "
        "gateway SIGKILLed once Glance has the record in `saving`; a new gateway started with "
        + " ".join(SWEEP_FLAGS),
        must_show=f"the sweep removes the unfinished record (within {plan.sweep_wait_s:.0f} s); the "
        f"reservation survives every sweep (watched until {SWEEPS_AFTER} sweep intervals past the removal)",
    )


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    prefix = unique_prefix("s4")
    first = env.gateway()
    data = random_bytes(4, UPLOAD_MIB * MIB)
    upload_id = new_id()
    figures: dict[str, Any] = {}

    async def before_the_kill() -> str:
        async with aio_channel(first.address) as channel:
            stub = pb_grpc.ImageServiceStub(channel)
            reserved = await stub.AddImage(
                _requests(pb.ImageSpec(name=f"{prefix}reservation"), b""), timeout=30
            )
            figures["reservation"] = reserved.image.id
            spec = pb.ImageSpec(id=upload_id, name=f"{prefix}upload", type=pb.IMAGE_TYPE_RAW)
            call = stub.AddImage(_requests(spec, data), timeout=120)
            task = asyncio.ensure_future(_result(call))
            saving = await asyncio.to_thread(wait_for, lambda: _status(env, upload_id) == "saving", 20.0)
            figures["saving_after_s"] = saving
            os.kill(first.pid, signal.SIGKILL)
            figures["killed_at"] = time.monotonic()
            return await task

    figures["killed_call"] = asyncio.run(before_the_kill())
    first.stop()  # reaps it
    reservation = str(figures["reservation"])
    # Glance unwinds the broken upload on its own; what it leaves is the record the sweep must find.
    wait_for(lambda: _status(env, upload_id) != "saving", 30.0, interval=0.25)
    figures["left_by_the_kill"] = _status(env, upload_id)
    outcome.note(
        f"the killed gateway's client got {figures['killed_call']}; Glance then had the upload's record as "
        f"`{figures['left_by_the_kill']}` and the reservation as `{_status(env, reservation)}`"
    )
    outcome.figures.update({k: v for k, v in figures.items() if k != "killed_at"})
    try:
        second = env.gateway(*SWEEP_FLAGS)
    except FeatureMissing as missing:
        outcome.not_available(str(missing))
        _cleanup(env, upload_id, reservation)
        return
    started = time.monotonic()
    reservation_seen: list[str | None] = []

    def swept() -> bool:
        reservation_seen.append(_status(env, reservation))
        return _status(env, upload_id) is None

    removed = wait_for(swept, plan.sweep_wait_s, interval=0.5)
    watch_until = time.monotonic() + SWEEPS_AFTER * SWEEP_INTERVAL_S + 0.5
    while time.monotonic() < watch_until:
        reservation_seen.append(_status(env, reservation))
        time.sleep(0.5)
    outcome.figures["removed_after_s"] = removed
    outcome.figures["reservation_statuses"] = sorted({str(s) for s in reservation_seen})
    outcome.figures["gateway_alive"] = second.returncode() is None
    outcome.check(
        "sweep removes the unfinished record",
        removed is not None,
        f"gone {removed:.1f} s after the new gateway started"
        if removed is not None
        else f"still `{_status(env, upload_id)}` {time.monotonic() - started:.0f} s after the new gateway",
    )
    kept = all(s == "queued" for s in reservation_seen)
    outcome.check(
        "reservation survives",
        kept,
        f"reservation `queued` in all {len(reservation_seen)} looks"
        if kept
        else f"reservation seen as {sorted({str(s) for s in reservation_seen})}",
    )
    _cleanup(env, upload_id, reservation)


async def _requests(spec: pb.ImageSpec, data: bytes) -> AsyncIterator[pb.AddImageRequest]:
    yield pb.AddImageRequest(spec=spec)
    if not data:
        return
    pause = UPLOAD_SECONDS / (len(data) // CHUNK)
    for start in range(0, len(data), CHUNK):
        yield pb.AddImageRequest(data=data[start : start + CHUNK])
        await asyncio.sleep(pause)


async def _result(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return code_name(err)
    return "OK"


def _status(env: Env, image_id: str) -> str | None:
    image = glance_image(env.glance_url, image_id)
    return None if image is None else str(image.get("status"))


def _cleanup(env: Env, *image_ids: str) -> None:
    for image_id in image_ids:
        force_delete(env.glance_url, image_id)
