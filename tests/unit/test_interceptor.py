"""The RPC interceptor (gateway/interceptor.py) on a real grpc.aio server: every handler kind and style."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from gateway import call_record
from gateway.interceptor import RpcObserver
from gateway.observed_call import status_code

SERVICE = "test.v1.Probe"
Context = grpc.aio.ServicerContext[Any, Any]


def sample(name: str, method: str, service: str = SERVICE, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, {"grpc_service": service, "grpc_method": method, **labels})
    return value or 0.0


def rpc_counts(method: str, grpc_type: str, service: str = SERVICE) -> dict[str, float]:
    """The method's started/received/sent counters and handled counters by code."""
    labels = {"grpc_type": grpc_type}
    counts = {
        "started": sample("grpc_server_started_total", method, service, **labels),
        "received": sample("grpc_server_msg_received_total", method, service, **labels),
        "sent": sample("grpc_server_msg_sent_total", method, service, **labels),
        "seconds_count": sample("grpc_server_handling_seconds_count", method, service, **labels),
    }
    for code in grpc.StatusCode:
        value = sample("grpc_server_handled_total", method, service, grpc_code=code.name, **labels)
        if value:
            counts[code.name] = value
    return counts


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}


@dataclass(frozen=True)
class Reply:
    text: str


class Probe:
    """Handlers of every kind, with codecs of their own (kept by the interceptor, or grpc would fail to send a
    Reply and hand the handlers bytes): requests arrive as str, responses are Replys."""

    def __init__(self) -> None:
        self.records: list[call_record.CallRecord | None] = []
        self.closed = asyncio.Event()

    async def unary(self, request: str, context: Context) -> Reply:
        self.records.append(call_record.current())
        if request == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request == "boom":
            raise ValueError("a bug")
        if request == "set-code":
            context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        if request == "sleep":
            await asyncio.sleep(10)
        return Reply(f"echo {request}")

    async def writes(self, request: str, context: Context) -> None:
        self.records.append(call_record.current())
        for index in range(3):
            await context.write(Reply(f"{request} {index}"))

    async def yields(self, request: str, context: Context) -> AsyncIterator[Reply]:
        self.records.append(call_record.current())
        try:
            for index in range(3 if request != "forever" else 1000):
                yield Reply(f"{request} {index}")
                if request == "forever":
                    await asyncio.sleep(0.05)
        finally:
            self.closed.set()

    async def client_stream(self, requests: AsyncIterator[str], context: Context) -> Reply:
        self.records.append(call_record.current())
        return Reply(",".join([request async for request in requests]))

    async def bidi_yields(self, requests: AsyncIterator[str], context: Context) -> AsyncIterator[Reply]:
        async for request in requests:
            yield Reply(request.upper())

    async def bidi_reads(self, requests: AsyncIterator[str], context: Context) -> None:
        while (request := await context.read()) is not grpc.aio.EOF:
            await context.write(Reply(f"<{request}>"))

    def handler(self) -> grpc.GenericRpcHandler:
        codecs: dict[str, Callable[..., Any]] = {
            "request_deserializer": lambda raw: raw.decode(),
            "response_serializer": lambda reply: reply.text.encode(),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **codecs),
                "Writes": grpc.unary_stream_rpc_method_handler(self.writes, **codecs),
                "Yields": grpc.unary_stream_rpc_method_handler(self.yields, **codecs),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **codecs),
                "BidiYields": grpc.stream_stream_rpc_method_handler(self.bidi_yields, **codecs),
                "BidiReads": grpc.stream_stream_rpc_method_handler(self.bidi_reads, **codecs),
            },
        )


@asynccontextmanager
async def serving(*handlers: grpc.GenericRpcHandler) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[RpcObserver()])
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def untyped(channel: grpc.aio.Channel) -> Any:
    """The channel without grpc's stub typing, which cannot describe raw bytes in and out."""
    return channel


def method(channel: grpc.aio.Channel, kind: str, name: str) -> Any:
    path = f"/{SERVICE}/{name}"
    make = getattr(channel, kind)
    return make(path, request_serializer=str.encode, response_deserializer=bytes.decode)


async def eventually(condition: Callable[[], bool]) -> None:
    """Server-side ends of cancelled calls land a moment after the client has moved on."""
    deadline = time.monotonic() + 5.0
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_every_kind_and_style_is_counted_with_codecs_kept() -> None:
    probe = Probe()
    kinds = {
        "Unary": "unary", "Writes": "server_stream", "Yields": "server_stream",
        "ClientStream": "client_stream", "BidiYields": "bidi_stream", "BidiReads": "bidi_stream",
    }  # fmt: skip
    before = {name: rpc_counts(name, grpc_type) for name, grpc_type in kinds.items()}

    async def run() -> None:
        async with serving(probe.handler()) as channel:
            assert await method(channel, "unary_unary", "Unary")("hi") == "echo hi"
            assert [m async for m in method(channel, "unary_stream", "Writes")("w")] == ["w 0", "w 1", "w 2"]
            assert [m async for m in method(channel, "unary_stream", "Yields")("y")] == ["y 0", "y 1", "y 2"]
            assert (
                await method(channel, "stream_unary", "ClientStream")(iter(["a", "b", "c", "d"])) == "a,b,c,d"
            )
            bidi = method(channel, "stream_stream", "BidiYields")(iter(["x", "y"]))
            assert [m async for m in bidi] == ["X", "Y"]
            bidi = method(channel, "stream_stream", "BidiReads")(iter(["p", "q", "r"]))
            assert [m async for m in bidi] == ["<p>", "<q>", "<r>"]

    asyncio.run(run())
    one = {"started": 1, "seconds_count": 1, "OK": 1}
    expected = {
        "Unary": {**one, "received": 1, "sent": 1},
        "Writes": {**one, "received": 1, "sent": 3},
        "Yields": {**one, "received": 1, "sent": 3},
        "ClientStream": {**one, "received": 4, "sent": 1},
        "BidiYields": {**one, "received": 2, "sent": 2},
        "BidiReads": {**one, "received": 3, "sent": 3},
    }
    for name, grpc_type in kinds.items():
        assert delta(before[name], rpc_counts(name, grpc_type)) == expected[name], name
    # The record was current in every handler that looked, with the method's full name and type.
    assert [(r.method, r.grpc_type) for r in probe.records if r is not None] == [
        (f"{SERVICE}/Unary", "unary"), (f"{SERVICE}/Writes", "server_stream"),
        (f"{SERVICE}/Yields", "server_stream"), (f"{SERVICE}/ClientStream", "client_stream"),
    ]  # fmt: skip
    assert None not in probe.records


@pytest.mark.parametrize(
    ("request_text", "code"),
    [
        ("abort", grpc.StatusCode.NOT_FOUND),
        ("set-code", grpc.StatusCode.ALREADY_EXISTS),
        ("boom", grpc.StatusCode.UNKNOWN),
    ],
)
def test_the_status_comes_from_the_abort_the_code_set_or_the_exception(
    request_text: str, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    before = rpc_counts("Unary", "unary")

    async def run() -> grpc.StatusCode:
        async with serving(Probe().handler()) as channel:
            call = method(channel, "unary_unary", "Unary")(request_text)
            with suppress(grpc.aio.AioRpcError):
                await call
            result: grpc.StatusCode = await call.code()
            return result

    assert asyncio.run(run()) == code
    # No message sent: grpc sends a unary response only with OK (set-code returned one all the same).
    changed = delta(before, rpc_counts("Unary", "unary"))
    assert changed == {"started": 1, "seconds_count": 1, "received": 1, code.name: 1}
    (line,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert line.__dict__["code"] == code.name and line.__dict__["method"] == f"{SERVICE}/Unary"


def test_a_cancelled_generator_stream_is_closed_in_its_call_and_counted_cancelled() -> None:
    probe = Probe()
    before = rpc_counts("Yields", "server_stream")

    async def run() -> None:
        async with serving(probe.handler()) as channel:
            call = method(channel, "unary_stream", "Yields")("forever")
            assert await call.read() == "forever 0"
            call.cancel()
            await asyncio.wait_for(probe.closed.wait(), 5)
            await eventually(lambda: "CANCELLED" in rpc_counts("Yields", "server_stream"))

    asyncio.run(run())
    changed = delta(before, rpc_counts("Yields", "server_stream"))
    assert changed["CANCELLED"] == 1 and changed["started"] == 1 and changed["sent"] >= 1


def test_a_passed_deadline_is_deadline_exceeded() -> None:
    before = rpc_counts("Unary", "unary")

    async def run() -> None:
        async with serving(Probe().handler()) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await method(channel, "unary_unary", "Unary")("sleep", timeout=0.2)
            await eventually(lambda: "DEADLINE_EXCEEDED" in rpc_counts("Unary", "unary"))

    asyncio.run(run())
    assert delta(before, rpc_counts("Unary", "unary"))["DEADLINE_EXCEEDED"] == 1


def test_the_stock_health_service_check_and_watch() -> None:
    """Health.Watch is a coroutine that writes with context.write; Check a plain unary call."""
    service = "grpc.health.v1.Health"
    before_check = rpc_counts("Check", "unary", service)
    before_watch = rpc_counts("Watch", "server_stream", service)

    async def run() -> None:
        servicer = health.aio.HealthServicer()
        server = grpc.aio.server(interceptors=[RpcObserver()])
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs list no methods
                answer = await stub.Check(health_pb2.HealthCheckRequest())
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
                watch = stub.Watch(health_pb2.HealthCheckRequest())
                first = await watch.read()
                assert isinstance(first, health_pb2.HealthCheckResponse)
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()
                await eventually(lambda: "CANCELLED" in rpc_counts("Watch", "server_stream", service))
        finally:
            await server.stop(None)

    asyncio.run(run())
    one = {"started": 1, "seconds_count": 1, "received": 1, "sent": 1}
    assert delta(before_check, rpc_counts("Check", "unary", service)) == {**one, "OK": 1}
    assert delta(before_watch, rpc_counts("Watch", "server_stream", service)) == {**one, "CANCELLED": 1}


def test_an_unknown_method_is_left_to_grpc() -> None:
    async def run() -> grpc.StatusCode:
        async with serving(Probe().handler()) as channel:
            call = untyped(channel).unary_unary(f"/{SERVICE}/Nope")(b"")
            with pytest.raises(grpc.aio.AioRpcError):
                await call
            code: grpc.StatusCode = await call.code()
            return code

    assert asyncio.run(run()) == grpc.StatusCode.UNIMPLEMENTED
    assert sample("grpc_server_started_total", "Nope", grpc_type="unary") == 0


def test_each_method_is_wrapped_once() -> None:
    probe = Probe()
    generic = probe.handler()
    observer = RpcObserver()

    class Details:
        method = f"/{SERVICE}/Unary"
        invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return generic.service(details)

    async def run() -> None:
        first = await observer.intercept_service(continuation, Details())
        again = await observer.intercept_service(continuation, Details())
        assert first is not None and first is again
        original = generic.service(Details())
        assert original is not None and first is not original
        assert first.request_deserializer is original.request_deserializer
        assert first.response_serializer is original.response_serializer

    asyncio.run(run())


def test_record_helpers_do_nothing_without_a_call() -> None:
    assert call_record.current() is None
    call_record.note_failure("NOT_FOUND", "X")
    call_record.note_image_id("id")
    call_record.note_request_id("req")
    call_record.add_bytes(sent=5)
    assert call_record.current() is None and call_record.trace_id() is None


def test_the_access_line_carries_the_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def handler(request: bytes, context: Context) -> bytes:
        call_record.note_image_id("11111111-2222-3333-4444-555555555555")
        call_record.note_image_id("not-this-one")  # the first image named is the call's
        call_record.add_bytes(sent=7)
        call_record.note_failure("NOT_FOUND", "SOME_REASON")
        return b"ok"

    generic = grpc.method_handlers_generic_handler(
        SERVICE, {"Noted": grpc.unary_unary_rpc_method_handler(handler)}
    )

    async def run() -> None:
        async with serving(generic) as channel:
            noted = untyped(channel).unary_unary(f"/{SERVICE}/Noted")
            await noted(b"", metadata=(("traceparent", traceparent),))

    asyncio.run(run())
    (line,) = [r for r in caplog.records if r.name == "gateway.access"]
    fields = line.__dict__
    assert fields["method"] == f"{SERVICE}/Noted" and fields["code"] == "OK"
    assert fields["image_id"] == "11111111-2222-3333-4444-555555555555"
    assert fields["bytes_sent"] == 7 and fields["bytes_received"] == 0
    assert fields["reason"] == "SOME_REASON"
    # Tracing is off here: the trace id still comes from the caller's traceparent.
    assert fields["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert fields["peer"].startswith("ipv4:127.0.0.1:") and fields["duration_ms"] >= 0
    assert line.getMessage().startswith(f"{SERVICE}/Noted OK in ")


def test_an_abort_that_left_no_code_keeps_the_code_the_handler_noted() -> None:
    class Finished:
        """A context whose abort could not reach the client (grpc left no code on it)."""

        def code(self) -> None:
            return None

    context: Any = Finished()
    abort = grpc.aio.AbortError()
    assert status_code(context, abort, "DEADLINE_EXCEEDED") is grpc.StatusCode.DEADLINE_EXCEEDED
    assert status_code(context, abort, None) is grpc.StatusCode.UNKNOWN
    assert status_code(context, None, "NOT_FOUND") is grpc.StatusCode.OK
