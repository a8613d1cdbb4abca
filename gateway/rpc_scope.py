"""What surrounds every RPC: reading the caller's metadata, and turning any failure into a clear status."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any

import grpc

from gateway import call_record, tracing, validation
from gateway.call_context import REQUEST_ID_HEADER, CallContext
from gateway.errors import GatewayError

log = logging.getLogger(__name__)
# Where grpc.aio's server logs its "Unexpected ... raised by servicer method" errors.
GRPC_AIO_LOGGER = "grpc._cython.cygrpc"


class RpcScope:
    """`async with RpcScope(context, "Name") as call:` around a handler's body.

    A GatewayError becomes the call's status with ErrorInfo; any other exception becomes INTERNAL (logged
    here with its traceback, never sent); Glance's request ids go into the trailing metadata either way. The
    call's one log line is the interceptor's access line, to which this adds the failure's reason.
    """

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        self.context = context
        self.method = method
        self.call = CallContext()

    async def __aenter__(self) -> CallContext:
        try:
            read_invocation_metadata(self.context, self.call)
        except GatewayError as error:
            await self._abort(error)
        call_record.note_request_id(self.call.request_id)
        return self.call

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.context.set_trailing_metadata(self._request_id_metadata())
            return
        if isinstance(exc, GatewayError):
            await self._abort(exc)
        # A cancel (the client's, a passed deadline, a transport-level refusal such as an oversized
        # message) and an abort already are the call's outcome.
        if isinstance(exc, asyncio.CancelledError | grpc.aio.AbortError) or not isinstance(exc, Exception):
            return
        log.error("%s failed unexpectedly", self.method, exc_info=(exc_type or type(exc), exc, tb))
        await self._abort(
            GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL", "the gateway failed unexpectedly")
        )

    async def _abort(self, error: GatewayError) -> None:
        if self.call.glance_request_ids and "request_id" not in error.metadata:
            error.metadata["request_id"] = self.call.glance_request_ids[-1]
        status = error.to_status()
        call_record.note_failure(error.code.name, error.reason)
        call_record.note_image_id(error.metadata.get("image_id"))
        await self.context.abort(
            status.code,
            status.details,
            trailing_metadata=(*status.trailing_metadata, *self._request_id_metadata()),
        )

    def _request_id_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((REQUEST_ID_HEADER, request_id) for request_id in self.call.glance_request_ids)


class OneLineGrpcFailures(logging.Filter):
    """grpc.aio logs an ERROR with a traceback of its own internals for each call that fails outside a handler
    (a response over the message limit, a serializer that raises). A client can cause those at will, so each
    becomes one WARNING line (exception type and message kept, cut short) instead of a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {str(error)[:300]}"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno = min(record.levelno, logging.WARNING)
            record.levelname = logging.getLevelName(record.levelno)
        return True


def bound_grpc_logging() -> None:
    """Installs OneLineGrpcFailures on grpc.aio's server logger (once)."""
    logger = logging.getLogger(GRPC_AIO_LOGGER)
    if not any(isinstance(existing, OneLineGrpcFailures) for existing in logger.filters):
        logger.addFilter(OneLineGrpcFailures())


def read_invocation_metadata(context: grpc.aio.ServicerContext[Any, Any], call: CallContext) -> None:
    """Token, request id and deadline of the caller; the token is checked, never logged.

    Without an x-request-id, a call that is part of a trace sends Glance one made from the trace id, so
    Glance's logs of it can be found from the trace.
    """
    for key, value in context.invocation_metadata() or ():
        if not isinstance(value, str):
            continue
        if key == "x-auth-token":
            call.token = validation.auth_token(value)
        elif key == "authorization" and call.token is None:
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                call.token = validation.auth_token(token.strip())
        elif key == "x-request-id":
            call.request_id = validation.request_id(value)
    if call.request_id is None:
        trace_id = call_record.trace_id()
        if trace_id is not None:
            call.request_id = tracing.request_id_for_trace(trace_id)
    remaining = context.time_remaining()
    if remaining is not None:
        call.deadline = time.monotonic() + remaining
