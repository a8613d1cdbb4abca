"""One observed RPC from its start to its end: its record, metrics, span and access line."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from gateway import call_record, logs, metrics, tracing
from gateway.call_record import CallRecord

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_NAMED_CODES = {code.name: code for code in grpc.StatusCode}
_TRACEPARENT = "traceparent"


class Method:
    """What is fixed for every call of one method: its names and metric series."""

    __slots__ = ("grpc_type", "metrics", "name", "unary_response")

    def __init__(self, path: str, grpc_type: str) -> None:
        self.name = path.lstrip("/")  # "glance.gateway.v1.ImageService/GetImage"
        self.grpc_type = grpc_type
        self.unary_response = grpc_type in ("unary", "client_stream")
        service, _, method = self.name.rpartition("/")
        self.metrics = metrics.RpcMetrics(grpc_type, service, method)


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
            code = status_code(context, error, record.code)
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


def status_code(context: Context, error: BaseException | None, noted: str | None = None) -> grpc.StatusCode:
    """The call's status: what the handler set or aborted with, else what grpc makes of `error`; `noted` is
    the code RpcScope aborted with (call_record.note_failure)."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        code: grpc.StatusCode | int | None = context.code()
        if code is None:
            if error is None:
                return grpc.StatusCode.OK
            return _NAMED_CODES.get(noted or "", grpc.StatusCode.UNKNOWN)
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
