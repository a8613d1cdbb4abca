"""One server interceptor for every RPC of every service: its metrics, its span and its access line.

It wraps each method's handler, whatever its kind (unary or streaming either way) and style (a streaming
response written with `await context.write(...)` by a coroutine, or yielded by an async generator), keeping
the request deserializer and response serializer. Messages are counted in plain ints; metrics are touched once
when the call starts and once when it ends, never per message.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeGuard

import grpc

from gateway.observed_call import Call, Method

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
_NAMED_CODES = {code.name: code for code in grpc.StatusCode}
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
