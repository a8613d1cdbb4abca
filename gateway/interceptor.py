"""One server interceptor for every RPC of every service: its metrics, its span and its access line.

It wraps each method's handler, whatever its kind (unary or streaming either way) and style (a streaming
response written with `await context.write(...)` by a coroutine, or yielded by an async generator), keeping
the request deserializer and response serializer. Messages are counted in plain ints; metrics are touched once
when the call starts and once when it ends, never per message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeGuard

import grpc

from gateway import call_record, logs, metrics, tracing
from gateway.call_record import CallRecord

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # not subscriptable at run time
    Handler = grpc.RpcMethodHandler[Any, Any]
Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[..., Any]

# (request streams, response streams) -> grpc_type, as go-grpc-prometheus names them.
GRPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_TRACEPARENT = "traceparent"


class RpcObserver(grpc.aio.ServerInterceptor):
    """Observes every RPC: `grpc.aio.server(interceptors=[RpcObserver()])`."""

    def __init__(self) -> None:
        # grpc.aio asks the interceptor for every call; each method's handler is wrapped once.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: grpc answers UNIMPLEMENTED itself
        path = handler_call_details.method
        known = self._wrapped.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        observed = observe_handler(path, handler)
        self._wrapped[path] = (handler, observed)
        return observed


class Method:
    """What is fixed for every call of one method: its names and metric series."""

    __slots__ = ("grpc_type", "metrics", "name", "unary_response")

    def __init__(self, path: str, grpc_type: str) -> None:
        self.name = path.lstrip("/")  # "glance.gateway.v1.ImageService/GetImage"
        self.grpc_type = grpc_type
        self.unary_response = grpc_type in ("unary", "client_stream")
        service, _, method = self.name.rpartition("/")
        self.metrics = metrics.RpcMetrics(grpc_type, service, method)


def observe_handler(path: str, handler: Handler) -> Handler:
    """`handler` with every call observed; a handler that is not async is returned as it is."""
    kind = (handler.request_streaming, handler.response_streaming)
    method = Method(path, GRPC_TYPES[kind])
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    behavior: Behavior | None
    if kind == (False, False):
        behavior = handler.unary_unary
        if inspect.iscoroutinefunction(behavior):
            return grpc.unary_unary_rpc_method_handler(_unary_unary(method, behavior), **codecs)
    elif kind == (True, False):
        behavior = handler.stream_unary
        if inspect.iscoroutinefunction(behavior):
            return grpc.stream_unary_rpc_method_handler(_stream_unary(method, behavior), **codecs)
    elif kind == (False, True):
        behavior = handler.unary_stream
        if _is_async(behavior):
            return grpc.unary_stream_rpc_method_handler(_unary_stream(method, behavior), **codecs)
    else:
        behavior = handler.stream_stream
        if _is_async(behavior):
            return grpc.stream_stream_rpc_method_handler(_stream_stream(method, behavior), **codecs)
    log.warning("%s: a synchronous handler is served without metrics, traces or access lines", method.name)
    return handler


def _is_async(behavior: Behavior | None) -> TypeGuard[Behavior]:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


# The wrappers are coroutine functions in every case: grpc.aio picks a handler's style by inspecting it, and
# a coroutine that writes an async generator's responses itself closes that generator in the call's own task
# (a cancel lands there), so the call's context (record, current span) is set and reset in one place.


def _unary_unary(method: Method, behavior: Behavior) -> Behavior:
    async def unary_unary(request: Any, context: Context) -> Any:
        call = Call(method, context)
        try:
            response = await behavior(request, context)
        except BaseException as error:
            call.end(context, error, received=1, sent=0)
            raise
        call.end(context, None, received=1, sent=1)
        return response

    return unary_unary


def _stream_unary(method: Method, behavior: Behavior) -> Behavior:
    async def stream_unary(request_iterator: AsyncIterator[Any], context: Context) -> Any:
        call = Call(method, context)
        counting = CountingContext(context)
        try:
            response = await behavior(CountedRequests(request_iterator, counting), counting)
        except BaseException as error:
            call.end(context, error, counting.received, 0)
            raise
        call.end(context, None, counting.received, 1)
        return response

    return stream_unary


def _unary_stream(method: Method, behavior: Behavior) -> Behavior:
    generator = inspect.isasyncgenfunction(behavior)

    async def unary_stream(request: Any, context: Context) -> None:
        call = Call(method, context)
        counting = CountingContext(context)
        try:
            if generator:
                await _write_all(behavior(request, counting), counting)
            else:
                await behavior(request, counting)
        except BaseException as error:
            call.end(context, error, 1, counting.sent)
            raise
        call.end(context, None, 1, counting.sent)

    return unary_stream


def _stream_stream(method: Method, behavior: Behavior) -> Behavior:
    generator = inspect.isasyncgenfunction(behavior)

    async def stream_stream(request_iterator: AsyncIterator[Any], context: Context) -> None:
        call = Call(method, context)
        counting = CountingContext(context)
        requests = CountedRequests(request_iterator, counting)
        try:
            if generator:
                await _write_all(behavior(requests, counting), counting)
            else:
                await behavior(requests, counting)
        except BaseException as error:
            call.end(context, error, counting.received, counting.sent)
            raise
        call.end(context, None, counting.received, counting.sent)

    return stream_stream


async def _write_all(responses: AsyncIterator[Any], context: CountingContext) -> None:
    async with aclosing(responses):  # type: ignore[type-var]
        async for response in responses:
            await context.write(response)


class CountingContext:
    """The servicer context as the handler sees it: the same, but counting messages written and read."""

    __slots__ = ("_context", "received", "sent")

    def __init__(self, context: Context) -> None:
        self._context = context
        self.sent = 0
        self.received = 0

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self.sent += 1

    async def read(self) -> Any:
        message = await self._context.read()
        if message is not grpc.aio.EOF:
            self.received += 1
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CountedRequests:
    """A request stream that counts its messages (into the call's CountingContext)."""

    __slots__ = ("_counts", "_iterator", "_requests")

    def __init__(self, requests: AsyncIterator[Any], counts: CountingContext) -> None:
        self._requests = requests
        # Made on first use: grpc's request stream warns when its iterator is made and never run (a handler
        # that reads with context.read()).
        self._iterator: AsyncIterator[Any] | None = None
        self._counts = counts

    def __aiter__(self) -> CountedRequests:
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = aiter(self._requests)
        message = await anext(self._iterator)
        self._counts.received += 1
        return message


class Call:
    """One RPC from its start to its end: its record (current while the handler runs) and span."""

    __slots__ = ("_span", "_token", "method", "record")

    def __init__(self, method: Method, context: Context) -> None:
        self.method = method
        record = self.record = CallRecord(method.name, method.grpc_type, time.perf_counter())
        metadata = context.invocation_metadata() or ()
        self._span: tracing.ServerSpan | None = None
        if tracing.ENABLED:
            try:
                self._span = tracing.ServerSpan(method.name, metadata)
                record.trace_id = self._span.trace_id
            except Exception:  # observing must never change a call's outcome
                log.exception("starting the span of %s failed", method.name)
        else:
            for key, value in metadata:
                if key == _TRACEPARENT and isinstance(value, str):
                    record.trace_id = tracing.trace_id_from_traceparent(value)
                    break
        self._token = call_record.bind(record)
        method.metrics.started()

    def end(self, context: Context, error: BaseException | None, received: int, sent: int) -> None:
        record = self.record
        seconds = time.perf_counter() - record.started
        try:
            code = status_code(context, error)
            if code is not grpc.StatusCode.OK and self.method.unary_response:
                sent = 0  # grpc sends a unary response only with OK, even when the handler returned one
            record.code = code.name
            record.peer = context.peer()
            self.method.metrics.handled(code.name, seconds, received, sent)
            if record.bytes_sent:
                metrics.DOWNLOAD_BYTES.inc(record.bytes_sent)
            if record.bytes_received:
                metrics.UPLOAD_BYTES.inc(record.bytes_received)
            if self._span is not None:
                self._span.end(code, _span_attributes(record))
            logs.access_line(record, seconds)
        except Exception:  # observing must never change a call's outcome
            log.exception("observing the end of %s failed", record.method)
        finally:
            call_record.unbind(self._token)


def status_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The call's status: what the handler set or aborted with, else what grpc makes of `error`."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        code: grpc.StatusCode | int | None = context.code()
        if code is None:
            return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
        return code if isinstance(code, grpc.StatusCode) else _CODES.get(code, grpc.StatusCode.UNKNOWN)
    if isinstance(error, asyncio.CancelledError):
        # grpc cancels the handler for a client's cancel and for a passed deadline alike.
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _span_attributes(record: CallRecord) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {}
    if record.reason:
        attributes["glance_gateway.reason"] = record.reason
    if record.image_id:
        attributes["glance_gateway.image_id"] = record.image_id
    if record.request_id:
        attributes["glance_gateway.request_id"] = record.request_id
    if record.bytes_sent:
        attributes["glance_gateway.image_bytes_sent"] = record.bytes_sent
    if record.bytes_received:
        attributes["glance_gateway.image_bytes_received"] = record.bytes_received
    return attributes
