"""1. Downloads cancelled mid-stream: the gateway's fds and upstream connections go back to their baseline."""

from __future__ import annotations

import asyncio
import random

import grpc

from chaos.env import Env, Sampler, aio_channel, fd_count, seed_image, upstream_connections, wait_for
from chaos.model import Outcome, counts_text
from chaos.plan import Plan
from chaos.scenarios.common import MIB, Tally, bounded, download_all, unique_prefix
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

SETTLE_S = 10.0
FD_TOLERANCE = 0  # back to the baseline means back to it


def describe(plan: Plan) -> Outcome:
    return Outcome(
        number=1,
        key="cancelled_downloads",
        title="downloads cancelled mid-stream",
        done=f"{plan.cancel_downloads} GetImage calls of a {plan.cancel_image_mib} MiB image, "
        f"{plan.cancel_concurrency} at a time, each cancelled at a random point (5% before the first "
        "message, the rest after a random number of bytes)",
        must_show=f"gateway fds (/proc/PID/fd) and its connections to Glance's port back to the baseline "
        f"within {SETTLE_S:.0f} s; the gateway still serves a whole verified download",
    )


async def _cancelled_download(
    stub: pb_grpc.ImageServiceAsyncStub, image_id: str, size: int, rng: random.Random, tally: Tally
) -> None:
    call = stub.GetImage(pb.GetImageRequest(image_id=image_id), timeout=60)
    if rng.random() < 0.05:
        await asyncio.sleep(rng.random() * 0.01)
        call.cancel()
        tally.record("cancelled before the header", 0.0)
        return
    cancel_at = rng.randrange(size)
    received = 0
    try:
        async for message in call:
            received += len(message.data)
            if received >= cancel_at and message.WhichOneof("content") == "data":
                break
    except grpc.aio.AioRpcError as err:
        tally.record(f"ended {err.code().name} before the cancel", 0.0, err.details() or "")
        return
    call.cancel()
    tally.record("cancelled mid-stream" if received < size else "cancelled after the last byte", 0.0)


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    size = plan.cancel_image_mib * MIB
    image = seed_image(env.glance_url, unique_prefix("s1") + "seed", size, seed=1)
    gateway = env.gateway()
    rng = random.Random(1)

    async def traffic() -> dict[str, object]:
        async with aio_channel(gateway.address) as channel:
            stub = pb_grpc.ImageServiceStub(channel)
            # Baseline: the client's connection is up and one whole download has gone through.
            await download_all(stub, image.id, deadline=60)
            await asyncio.sleep(0.5)
            base_fds = fd_count(gateway.pid)
            base_up = len(upstream_connections(gateway.pid, env.glance_port))
            tally = Tally()
            with Sampler(gateway.pid, env.glance_port, interval=0.25) as sampler:
                jobs = [
                    (lambda: _cancelled_download(stub, image.id, size, rng, tally))
                    for _ in range(plan.cancel_downloads)
                ]
                await bounded(plan.cancel_concurrency, jobs)
            settled = await asyncio.to_thread(
                wait_for,
                lambda: (
                    fd_count(gateway.pid) <= base_fds + FD_TOLERANCE
                    and len(upstream_connections(gateway.pid, env.glance_port)) <= base_up
                ),
                SETTLE_S,
            )
            end_fds = fd_count(gateway.pid)
            end_up = upstream_connections(gateway.pid, env.glance_port)
            header, digest, length = await download_all(stub, image.id, deadline=60)
            whole_ok = header.verified and digest == image.sha512 and length == size
            return {
                "base_fds": base_fds, "base_upstream": base_up, "peak_fds": max(sampler.fds(), default=0),
                "peak_upstream": max(sampler.upstream(), default=0), "end_fds": end_fds,
                "end_upstream": len(end_up), "end_upstream_list": end_up, "settle_s": settled,
                "outcomes": dict(tally.codes), "examples": tally.examples, "whole_download_ok": whole_ok,
            }  # fmt: skip

    figures = asyncio.run(traffic())
    outcome.figures.update(figures)
    settle = figures["settle_s"]
    settle_text = "never" if settle is None else f"{settle:.1f} s"
    outcome.check(
        "fds back to baseline",
        settle is not None,
        f"fds {figures['base_fds']} before, peak {figures['peak_fds']:.0f}, {figures['end_fds']} after "
        f"(back after {settle_text})",
    )
    outcome.check(
        "upstream connections back to baseline",
        settle is not None and figures["end_upstream"] == figures["base_upstream"],
        f"connections to Glance {figures['base_upstream']} before, peak {figures['peak_upstream']:.0f}, "
        f"{figures['end_upstream']} after",
    )
    outcome.check("still serves", bool(figures["whole_download_ok"]), "a whole verified download afterwards: "
                  + ("OK" if figures["whole_download_ok"] else "FAILED"))  # fmt: skip
    outcome.note("client side: " + counts_text(figures["outcomes"]))  # type: ignore[arg-type]
