"""The stream limiter: up to `limit` streams at once, the next refused at once, every place given back."""

import asyncio

import grpc
import pytest

from gateway.admission import StreamLimiter
from gateway.errors import GatewayError


async def _hold(limiter: StreamLimiter, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with limiter.admit():
        entered.set()
        await release.wait()


def test_admits_up_to_the_limit_and_refuses_the_next_at_once() -> None:
    async def scenario() -> None:
        limiter = StreamLimiter(2)
        release = asyncio.Event()
        entered = [asyncio.Event(), asyncio.Event()]
        holders = [asyncio.create_task(_hold(limiter, event, release)) for event in entered]
        await asyncio.gather(*(event.wait() for event in entered))
        assert limiter.active == 2

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(GatewayError) as refused:
            async with limiter.admit():
                raise AssertionError("a third stream must not be admitted")
        assert loop.time() - started < 0.05  # refused, not queued
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_STREAMS",
        )
        assert "2" in refused.value.message
        assert limiter.active == 2  # a refusal takes no place

        release.set()
        await asyncio.gather(*holders)
        assert limiter.active == 0
        async with limiter.admit():
            assert limiter.active == 1

    asyncio.run(scenario())


def test_a_failing_or_cancelled_stream_gives_its_place_back() -> None:
    async def scenario() -> None:
        limiter = StreamLimiter(1)
        with pytest.raises(ValueError):
            async with limiter.admit():
                raise ValueError("the stream failed")
        assert limiter.active == 0

        entered, never = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(limiter, entered, never))
        await entered.wait()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert limiter.active == 0

    asyncio.run(scenario())


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StreamLimiter(0)
