"""RpcScope (gateway/rpc_scope.py) around a handler body, with a fake grpc.aio ServicerContext that records
what the scope does to the call: its status, trailing metadata and what it read of the caller's metadata."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway import call_record, tracing
from gateway.call_context import REQUEST_ID_HEADER, CallContext
from gateway.errors import ERROR_DOMAIN, GatewayError
from gateway.rpc_scope import RpcScope

C = grpc.StatusCode
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Metadata = tuple[tuple[str, str | bytes], ...]
Body = Callable[[CallContext], Awaitable[None]]


class FakeContext:
    """The part of grpc.aio.ServicerContext that RpcScope uses; abort raises AbortError as grpc.aio's does."""

    def __init__(self, metadata: Metadata = (), time_remaining: float | None = None) -> None:
        self._metadata = metadata
        self._time_remaining = time_remaining
        self.aborts: list[tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]] = []
        self.trailing: list[tuple[tuple[str, str], ...]] = []

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._time_remaining

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing.append(tuple(metadata))

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()) -> None:
        self.aborts.append((code, details, tuple(trailing_metadata)))
        raise grpc.aio.AbortError()

    @property
    def aborted(self) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
        (only,) = self.aborts
        return only


def scope(context: FakeContext, method: str = "GetImageMeta") -> RpcScope:
    return RpcScope(cast("grpc.aio.ServicerContext[Any, Any]", context), method)


async def _nothing(call: CallContext) -> None:
    pass


def run(context: FakeContext, body: Body = _nothing) -> tuple[CallContext | None, BaseException | None]:
    """Runs `body` inside a scope; the CallContext the body saw (None: it never ran) and what escaped."""
    seen: list[CallContext] = []

    async def main() -> None:
        async with scope(context) as call:
            seen.append(call)
            await body(call)

    try:
        asyncio.run(main())
    except BaseException as escaped:
        return (seen[0] if seen else None), escaped
    return (seen[0] if seen else None), None


def error_info(trailing: tuple[tuple[str, str | bytes], ...]) -> error_details_pb2.ErrorInfo:
    raw = dict(trailing)[STATUS_DETAILS_KEY]
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert info.domain == ERROR_DOMAIN
    return info


def request_ids(trailing: tuple[tuple[str, str | bytes], ...]) -> list[str | bytes]:
    return [value for key, value in trailing if key == REQUEST_ID_HEADER]


# -- failures become statuses ---------------------------------------------------------------------------


def test_a_gateway_error_becomes_its_status_with_error_info_and_glances_request_ids() -> None:
    async def body(call: CallContext) -> None:
        call.glance_request_ids.extend(["req-first", "req-last"])
        raise GatewayError(C.NOT_FOUND, "NOT_FOUND", "No image found", {"image_id": IMAGE})

    context = FakeContext()
    _, escaped = run(context, body)
    assert isinstance(escaped, grpc.aio.AbortError)
    code, details, trailing = context.aborted
    assert (code, details) == (C.NOT_FOUND, "No image found")
    info = error_info(trailing)
    assert info.reason == "NOT_FOUND"
    # The last Glance request is the one that failed: its id goes into the details as well.
    assert dict(info.metadata) == {"image_id": IMAGE, "request_id": "req-last"}
    assert request_ids(trailing) == ["req-first", "req-last"]
    # The status carries the trailers; nothing is set separately for a failed call.
    assert context.trailing == []


def test_a_gateway_errors_own_request_id_is_kept() -> None:
    async def body(call: CallContext) -> None:
        call.glance_request_ids.extend(["req-show", "req-delete"])
        raise GatewayError(C.INTERNAL, "GLANCE_INTERNAL_ERROR", "boom", {"request_id": "req-show"})

    context = FakeContext()
    run(context, body)
    _, _, trailing = context.aborted
    assert error_info(trailing).metadata["request_id"] == "req-show"


def test_any_other_exception_is_internal_logged_here_and_never_sent(caplog: pytest.LogCaptureFixture) -> None:
    secret = "password=hunter2 at /srv/glance/secret.conf"

    async def body(call: CallContext) -> None:
        call.glance_request_ids.append("req-1")
        raise KeyError(secret)

    context = FakeContext()
    _, escaped = run(context, body)
    assert isinstance(escaped, grpc.aio.AbortError)
    code, details, trailing = context.aborted
    assert (code, details) == (C.INTERNAL, "the gateway failed unexpectedly")
    info = error_info(trailing)
    assert info.reason == "INTERNAL"
    assert dict(info.metadata) == {"request_id": "req-1"}
    assert all("hunter2" not in str(value) for _, value in trailing)
    (record,) = [r for r in caplog.records if r.name == "gateway.rpc_scope"]
    assert record.levelno == logging.ERROR and "GetImageMeta failed unexpectedly" in record.getMessage()
    # The traceback goes to the log (for the operator), with the exception that was kept from the client.
    assert record.exc_info is not None and record.exc_info[1] is not None
    assert secret in str(record.exc_info[1])


def test_a_successful_call_gets_glances_request_ids_as_trailing_metadata() -> None:
    async def body(call: CallContext) -> None:
        call.glance_request_ids.extend(["req-a", "req-b"])

    context = FakeContext()
    _, escaped = run(context, body)
    assert escaped is None and context.aborts == []
    assert context.trailing == [((REQUEST_ID_HEADER, "req-a"), (REQUEST_ID_HEADER, "req-b"))]


def test_a_call_that_reached_no_glance_sets_empty_trailing_metadata() -> None:
    context = FakeContext()
    run(context)
    assert context.trailing == [()]


# -- the caller's metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((("x-auth-token", "t" * 8193),), "INVALID_TOKEN"),
        ((("authorization", "Bearer " + "t" * 8193),), "INVALID_TOKEN"),
        ((("x-auth-token", "tok\x7fen"),), "INVALID_TOKEN"),
        ((("x-request-id", "r" * 65),), "INVALID_REQUEST_ID"),
        ((("x-request-id", "req/1"),), "INVALID_REQUEST_ID"),
        ((("x-auth-token", "fine"), ("x-request-id", "bad id")), "INVALID_REQUEST_ID"),
    ],
)
def test_bad_metadata_is_invalid_argument_before_the_body_runs(metadata: Metadata, reason: str) -> None:
    context = FakeContext(metadata)
    call, escaped = run(context)
    assert call is None, "the handler body must not run"
    assert isinstance(escaped, grpc.aio.AbortError)
    code, details, trailing = context.aborted
    assert code == C.INVALID_ARGUMENT and error_info(trailing).reason == reason
    # The message states the rule; it never quotes the offending value (a token must not be echoed).
    assert all(str(value) not in details for _, value in metadata)


def test_token_and_request_id_are_read_from_metadata() -> None:
    call, _ = run(FakeContext((("x-auth-token", "tok-1"), ("x-request-id", "req-caller.1:2"))))
    assert call is not None
    assert (call.token, call.request_id) == ("tok-1", "req-caller.1:2")
    assert call.headers()["X-Auth-Token"] == "tok-1"
    assert call.headers()["X-Openstack-Request-Id"] == "req-caller.1:2"


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", "Bearer tok-2"),), "tok-2"),
        ((("authorization", "bearer   tok-3 "),), "tok-3"),
        ((("authorization", "Basic dXNlcjpwdw=="),), None),
        ((("x-auth-token", "tok-x"), ("authorization", "Bearer tok-b")), "tok-x"),
        ((("authorization", "Bearer tok-b"), ("x-auth-token", "tok-x")), "tok-x"),
        # Binary (-bin) metadata comes as bytes and is not for the scope to read.
        ((("x-trace-bin", b"\x00\x01"), ("x-auth-token", "tok-4")), "tok-4"),
        ((), None),
    ],
)
def test_x_auth_token_wins_over_a_bearer_token(metadata: Metadata, token: str | None) -> None:
    call, escaped = run(FakeContext(metadata))
    assert escaped is None and call is not None
    assert call.token == token


def test_the_callers_deadline_becomes_the_calls() -> None:
    call, _ = run(FakeContext(time_remaining=30.0))
    assert call is not None and call.deadline is not None
    remaining = call.time_remaining()
    assert remaining is not None and remaining <= 30.0
    no_deadline, _ = run(FakeContext())
    assert no_deadline is not None and no_deadline.deadline is None


def test_without_x_request_id_a_traced_call_sends_glance_one_made_from_the_trace() -> None:
    record = call_record.CallRecord(method="m", grpc_type="unary", started=0.0, trace_id=TRACE_ID)

    async def main(context: FakeContext) -> CallContext:
        token = call_record.bind(record)
        try:
            async with scope(context) as call:
                return call
        finally:
            call_record.unbind(token)

    call = asyncio.run(main(FakeContext()))
    assert (
        call.request_id
        == tracing.request_id_for_trace(TRACE_ID)
        == "req-4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    )
    assert record.request_id == call.request_id
    # The caller's own id wins over the trace's.
    record.request_id = None
    call = asyncio.run(main(FakeContext((("x-request-id", "mine"),))))
    assert call.request_id == "mine" and record.request_id == "mine"


def test_a_failure_is_noted_on_the_call_record_for_the_access_line() -> None:
    record = call_record.CallRecord(method="m", grpc_type="unary", started=0.0)

    async def main() -> None:
        token = call_record.bind(record)
        try:
            async with scope(FakeContext()):
                raise GatewayError(C.FAILED_PRECONDITION, "IMAGE_DEACTIVATED", "no", {"image_id": IMAGE})
        finally:
            call_record.unbind(token)

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(main())
    assert (record.code, record.reason, record.image_id) == (
        "FAILED_PRECONDITION",
        "IMAGE_DEACTIVATED",
        IMAGE,
    )


# -- what passes through --------------------------------------------------------------------------------


def test_a_cancelled_call_is_not_turned_into_a_status() -> None:
    context = FakeContext()

    async def main() -> None:
        started = asyncio.Event()

        async def handler() -> None:
            async with scope(context):
                started.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(handler())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert context.aborts == [] and context.trailing == []


def test_an_abort_already_made_passes_through_without_a_second_one() -> None:
    context = FakeContext()

    async def body(call: CallContext) -> None:
        await context.abort(C.RESOURCE_EXHAUSTED, "too large")

    _, escaped = run(context, body)
    assert isinstance(escaped, grpc.aio.AbortError)
    assert context.aborts == [(C.RESOURCE_EXHAUSTED, "too large", ())]


class Stop(BaseException):
    """A BaseException that is no Exception, as SystemExit or GeneratorExit."""


def test_a_base_exception_passes_through_untouched() -> None:
    async def body(call: CallContext) -> None:
        raise Stop

    context = FakeContext()
    _, escaped = run(context, body)
    assert isinstance(escaped, Stop)
    assert context.aborts == [] and context.trailing == []
