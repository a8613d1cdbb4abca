"""7. Overload: many more concurrent calls than the 3-worker Glance can serve, each with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2

from chaos.env import Env, Sampler, aio_channel, code_name, seed_image, vmhwm_mib
from chaos.model import BUG_CODES, Outcome, Samples, counts_text, fmt, outside
from chaos.plan import Plan
from chaos.scenarios.common import KIB, Tally, download_all, unique_prefix
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

RSS_LIMIT_MIB = 300.0
CALLS_PER_CONNECTION = 20
HEALTH_EVERY_S = 0.5
HEALTH_TIMEOUT_S = 5.0


def describe(plan: Plan) -> Outcome:
    return Outcome(
        number=7,
        key="overload",
        title="overload",
        done=f"{plan.overload_streams} concurrent GetImage streams of a {plan.overload_image_kib} KiB image, "
        f"then separately {plan.overload_unary} concurrent GetImageMeta, each with a "
        f"{plan.overload_deadline_s:.0f} s deadline, {CALLS_PER_CONNECTION} calls per client connection, "
        f'against the 3-worker Glance (gateway with default flags); Health/Check("") polled every '
        f"{HEALTH_EVERY_S} s on its own connection",
        must_show=f"no UNKNOWN/INTERNAL, no crash, gateway RSS {chr(0x2264)} {RSS_LIMIT_MIB:.0f} MiB, health "
        "SERVING throughout (report codes, p50/p99, peak RSS)",
    )


class HealthPoller:
    def __init__(self, address: str) -> None:
        self.address = address
        self.answers: Counter[str] = Counter()
        self.slowest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        async with aio_channel(self.address, own_connection=True) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            while True:
                started = time.monotonic()
                try:
                    reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_S)
                    self.answers[health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)] += 1
                except grpc.aio.AioRpcError as err:
                    self.answers[f"failed {code_name(err)}"] += 1
                self.slowest = max(self.slowest, time.monotonic() - started)
                await asyncio.sleep(HEALTH_EVERY_S)

    def __enter__(self) -> HealthPoller:
        self._task = asyncio.ensure_future(self._poll())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def serving_throughout(self) -> bool:
        return set(self.answers) == {"SERVING"}


# A string: the async stub class exists only in the type stubs.
Make: TypeAlias = "Callable[[pb_grpc.ImageServiceAsyncStub], Awaitable[Any]]"


async def _burst(address: str, what: str, calls: int, make: Make, tally: Tally) -> None:
    connections = (calls + CALLS_PER_CONNECTION - 1) // CALLS_PER_CONNECTION
    channels = [aio_channel(address, own_connection=True) for _ in range(connections)]
    try:
        for channel in channels:
            await channel.channel_ready()
        stubs = [pb_grpc.ImageServiceStub(c) for c in channels]
        gate = asyncio.Event()

        async def one(i: int) -> None:
            await gate.wait()
            started = time.monotonic()
            try:
                await make(stubs[i % connections])
            except grpc.aio.AioRpcError as err:
                tally.failed(what, err, time.monotonic() - started)
                return
            tally.record("OK", time.monotonic() - started)

        tasks = [asyncio.ensure_future(one(i)) for i in range(calls)]
        await asyncio.sleep(0)
        gate.set()  # all at once
        await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    prefix = unique_prefix("s7")
    image = seed_image(env.glance_url, prefix + "seed", plan.overload_image_kib * KIB, seed=7)
    gateway = env.gateway()
    max_streams = env.has_flags("--max-streams")
    outcome.note(
        "gateway flags: defaults; "
        + ("it has --max-streams (left at its default)" if max_streams else "it has no --max-streams option")
    )
    deadline = plan.overload_deadline_s

    async def download(stub: pb_grpc.ImageServiceAsyncStub) -> None:
        header, _, length = await download_all(stub, image.id, deadline=deadline)
        if length != header.length:
            raise RuntimeError("short download")

    async def meta(stub: pb_grpc.ImageServiceAsyncStub) -> None:
        await stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=deadline)

    phases: dict[str, dict[str, Any]] = {}

    async def traffic() -> None:
        for name, calls, make in (("GetImage", plan.overload_streams, download),
                                  ("GetImageMeta", plan.overload_unary, meta)):  # fmt: skip
            tally = Tally()
            with (
                Sampler(gateway.pid, env.glance_port, interval=0.25) as sampler,
                HealthPoller(gateway.address) as health,
            ):
                started = time.monotonic()
                await _burst(gateway.address, name, calls, make, tally)
                took = time.monotonic() - started
            rss = Samples(sampler.rss())
            phases[name] = {
                "calls": calls, "codes": dict(tally.codes), "examples": tally.examples, "p50_s": tally.p(50),
                "p99_s": tally.p(99), "seconds": took, "rss_peak_mib": rss.peak,
                "upstream_peak": max(sampler.upstream(), default=0), "health": dict(health.answers),
                "health_slowest_s": health.slowest, "serving": health.serving_throughout,
                "reasons": dict(tally.reasons),
            }  # fmt: skip

    asyncio.run(traffic())
    hwm = vmhwm_mib(gateway.pid) if gateway.returncode() is None else float("nan")
    outcome.figures.update(
        {"phases": phases, "vmhwm_mib": hwm, "gateway_alive": gateway.returncode() is None}
    )
    for name, phase in phases.items():
        codes: dict[str, int] = phase["codes"]
        outcome.note(
            f"{name}: {phase['calls']} calls in {phase['seconds']:.1f} s: {counts_text(codes)}; p50 "
            f"{fmt(phase['p50_s'], 2)} s, p99 {fmt(phase['p99_s'], 2)} s; "
            f"RSS peak {fmt(phase['rss_peak_mib'])} MiB; "
            f"upstream connections peak {phase['upstream_peak']:.0f}; health {counts_text(phase['health'])} "
            f"(slowest {phase['health_slowest_s']:.2f} s)"
        )
        if phase["reasons"]:
            outcome.note(f"{name} failures: {counts_text(phase['reasons'])}")
        for code, details in phase["examples"].items():
            outcome.note(f"{name} {code}: {details[:200]}")
    bugs = {n: outside(p["codes"], set(p["codes"]) - BUG_CODES) for n, p in phases.items()}
    outcome.check(
        "no UNKNOWN/INTERNAL",
        not any(bugs.values()),
        "; ".join(f"{n}: {counts_text(p['codes'])} (p50 {fmt(p['p50_s'], 2)} s, p99 {fmt(p['p99_s'], 2)} s)"
                  for n, p in phases.items()),
    )  # fmt: skip
    code = gateway.returncode()
    outcome.check("no crash", code is None, "gateway still running" if code is None else f"exited {code}")
    outcome.check("RSS bounded", hwm <= RSS_LIMIT_MIB, f"gateway VmHWM {fmt(hwm)} MiB")
    outcome.check(
        "health SERVING",
        all(p["serving"] for p in phases.values()),
        "; ".join(
            f"{n}: {counts_text(p['health'])}, slowest {p['health_slowest_s']:.2f} s"
            for n, p in phases.items()
        ),
    )
