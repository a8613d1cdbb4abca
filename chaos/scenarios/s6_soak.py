"""6. Many concurrent streams (uploads and verified downloads) for a while: no errors, memory and fds flat."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from typing import Any

import grpc

from chaos.env import Env, Sampler, aio_channel, fd_count, seed_image, vmhwm_mib, wait_for
from chaos.leftovers import force_delete, wait_for_none_left
from chaos.model import Outcome, Samples, counts_text, fmt
from chaos.plan import Plan
from chaos.scenarios.common import MIB, Tally, add_image, download_all, new_id, unique_prefix
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

RSS_LIMIT_MIB = 150.0
RSS_GROWTH_MIB = 10.0  # last quarter over second quarter (medians)
FD_SETTLE_S = 10.0
SEEDED = 4
CHANNELS = 10
DB_LOCKED = "database is locked"  # Glance's SQLite under concurrent writers


def describe(plan: Plan) -> Outcome:
    return Outcome(
        number=6,
        key="soak",
        title="concurrent streams, sustained",
        done=f"{plan.soak_streams} concurrent callers for {plan.soak_seconds:.0f} s over {CHANNELS} "
        f"connections, each looping: a verified GetImage of one of {SEEDED} {plan.soak_image_mib} MiB images "
        "(sha512 checked by the client too) or an AddImage of fresh data with expected_sha512, then its "
        "DeleteImage",
        must_show=f"0 errors; no record left by a failed upload; gateway RSS {chr(0x2264)} "
        f"{RSS_LIMIT_MIB:.0f} MiB (VmHWM) and flat (last quarter {chr(0x2264)} second quarter + "
        f"{RSS_GROWTH_MIB:.0f} MiB); fds back to the start within {FD_SETTLE_S:.0f} s",
    )


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    prefix = unique_prefix("s6")
    size = plan.soak_image_mib * MIB
    images = [seed_image(env.glance_url, f"{prefix}seed{i}", size, seed=60 + i) for i in range(SEEDED)]
    payloads = [random.Random(600 + i).randbytes(size) for i in range(4)]
    digests = [hashlib.sha512(p).hexdigest() for p in payloads]
    gateway = env.gateway()
    tally = Tally()
    counts = {"downloads": 0, "uploads": 0}
    upload_ids: list[str] = []
    undeleted: list[str] = []  # uploads that worked but whose DeleteImage failed: the client's to clean up

    async def caller(stub: pb_grpc.ImageServiceAsyncStub, rng: random.Random, until: float) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            what = "GetImage"
            try:
                if rng.random() < 0.5:
                    image = rng.choice(images)
                    header, digest, length = await download_all(stub, image.id, deadline=120)
                    if not header.verified or digest != image.sha512 or length != image.size:
                        tally.record("WRONG DATA", time.monotonic() - started)
                        continue
                    counts["downloads"] += 1
                else:
                    what = "AddImage"
                    which = rng.randrange(len(payloads))
                    upload_ids.append(new_id())
                    spec = pb.ImageSpec(id=upload_ids[-1], name=f"{prefix}up", type=pb.IMAGE_TYPE_RAW,
                                        expected_sha512=digests[which])  # fmt: skip
                    added = await add_image(stub, spec, payloads[which], deadline=120)
                    what = "DeleteImage"
                    undeleted.append(added.id)
                    await stub.DeleteImage(pb.DeleteImageRequest(image_id=added.id), timeout=60)
                    undeleted.remove(added.id)
                    counts["uploads"] += 1
            except grpc.aio.AioRpcError as err:
                tally.failed(what, err, time.monotonic() - started)
                continue
            tally.record("OK", time.monotonic() - started)

    async def traffic() -> dict[str, Any]:
        channels = [aio_channel(gateway.address, own_connection=True) for _ in range(CHANNELS)]
        stubs = [pb_grpc.ImageServiceStub(c) for c in channels]
        try:
            for stub in stubs:
                await stub.GetImageMeta(pb.GetImageMetaRequest(image_id=images[0].id), timeout=30)
            await asyncio.sleep(0.5)
            start_fds = fd_count(gateway.pid)
            with Sampler(gateway.pid, env.glance_port, interval=0.5) as sampler:
                until = time.monotonic() + plan.soak_seconds
                await asyncio.gather(*(caller(stubs[i % CHANNELS], random.Random(i), until)
                                       for i in range(plan.soak_streams)))  # fmt: skip
            settled = await asyncio.to_thread(
                wait_for, lambda: fd_count(gateway.pid) <= start_fds, FD_SETTLE_S
            )
            return {
                "start_fds": start_fds, "rss": sampler.rss(), "fds": sampler.fds(), "settled": settled,
                "end_fds": fd_count(gateway.pid), "upstream_peak": max(sampler.upstream(), default=0),
            }  # fmt: skip
        finally:
            for channel in channels:
                await channel.close()

    locked_before, answers_before = env.glance_log_count(DB_LOCKED), env.glance_responses()
    result = asyncio.run(traffic())
    locked = env.glance_log_count(DB_LOCKED) - locked_before
    glance_5xx = Counter(
        {k: v for k, v in (env.glance_responses() - answers_before).items() if k.endswith(("500", "503"))}
    )
    hwm = vmhwm_mib(gateway.pid)
    rss = Samples(result["rss"])
    fds = Samples(result["fds"])
    calls = sum(tally.codes.values())
    errors = calls - tally.codes["OK"]
    outcome.figures.update({
        "calls": calls, "codes": dict(tally.codes), "examples": tally.examples, **counts,
        "p50_s": tally.p(50), "p99_s": tally.p(99), "rss_start_mib": rss.start, "rss_peak_mib": rss.peak,
        "rss_end_mib": rss.end, "rss_growth_mib": rss.growth(), "vmhwm_mib": hwm,
        "fds_start": result["start_fds"],
        "fds_peak": fds.peak, "fds_end": result["end_fds"], "fds_settled_s": result["settled"],
        "upstream_peak": result["upstream_peak"], "reasons": dict(tally.reasons),
        "glance_log_database_locked": locked, "glance_5xx": dict(glance_5xx),
    })  # fmt: skip
    outcome.check(
        "0 errors",
        errors == 0 and calls > 0,
        f"{calls} calls ({counts['downloads']} verified downloads, {counts['uploads']} uploads+deletes): "
        f"{counts_text(tally.codes)}; p50 {fmt(tally.p(50), 2)} s, p99 {fmt(tally.p(99), 2)} s"
        + (f"; failures: {counts_text(tally.reasons)}" if tally.reasons else "")
        + (f"; Glance answered {counts_text(glance_5xx)}" if glance_5xx else "")
        + (f"; Glance's log has {locked} '{DB_LOCKED}' lines from this run" if locked else ""),
    )
    outcome.check(
        "RSS bounded and flat",
        hwm <= RSS_LIMIT_MIB and rss.flat(RSS_GROWTH_MIB),
        f"RSS start {fmt(rss.start)} / peak {fmt(rss.peak)} / end {fmt(rss.end)} MiB, VmHWM {fmt(hwm)} MiB, "
        f"growth {fmt(rss.growth())} MiB",
    )
    # A failed AddImage (Glance's own 500s included) must not leave its record behind. Uploads that worked but
    # whose DeleteImage then failed are the client's to clean up: the suite deletes them before counting.
    for image_id in undeleted:
        force_delete(env.glance_url, image_id)
    failed = [i for i in upload_ids if i not in set(undeleted)]
    census, took = wait_for_none_left(
        env.glance_url, f"{prefix}up", failed, timeout=plan.leftover_wait_s, keep=[i.id for i in images]
    )
    outcome.figures["left"] = {i: img.get("status") for i, img in census.images.items()}
    outcome.figures["undeleted_by_client"] = len(undeleted)
    failed_adds = sum(n for key, n in tally.reasons.items() if key.startswith("AddImage:"))
    outcome.check(
        "failed uploads leave no record",
        census.count == 0,
        f"of {len(upload_ids)} uploads ({failed_adds} failed): "
        f"{census.text()} {census.waited_text(took)}; {len(undeleted)} uploaded "
        "images whose DeleteImage failed were deleted by the suite first",
    )
    for image_id in [*census.images, *(i.id for i in images)]:
        force_delete(env.glance_url, image_id)
    settled = result["settled"]
    outcome.check(
        "fds flat",
        settled is not None,
        f"fds start {result['start_fds']} / peak {fmt(fds.peak, 0)} / after {result['end_fds']} "
        + (f"(back after {settled:.1f} s)" if settled is not None else "(not back)")
        + f"; upstream connections peak {result['upstream_peak']:.0f}",
    )
