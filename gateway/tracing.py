"""Traces over OpenTelemetry, off unless the standard OTEL_* environment asks for them.

On when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or OTEL_TRACES_EXPORTER is
set and not `none`; always off with OTEL_SDK_DISABLED=true. Spans go out over OTLP/HTTP (protobuf) in batches.
While off, `ENABLED` is False and callers create no span at all: one module attribute read per call.

The trace-id helpers at the bottom need no SDK: a request id is derived from a caller's traceparent even when
tracing is off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "glance-grpc-gateway"
INSTRUMENTATION_NAME = "gateway"
# gRPC codes that make a server span an error (OpenTelemetry's RPC semantic conventions for gRPC servers).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
    }
)  # fmt: skip
# W3C trace context: version-traceid-parentid-flags, lower-case hex; version ff and all-zero ids are invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:-.*)?")
_ZERO_TRACE_ID = "0" * 32

# Read once per call by the interceptor and once per Glance request by the Glance client.
ENABLED = False
_tracer: trace.Tracer | None = None


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(endpoint or exporter)


@asynccontextmanager
async def running(environ: Mapping[str, str] | None = None) -> AsyncIterator[bool]:
    """Traces on while inside, when configured (yields whether they are); exports what is left on exit.

    Entered in the serving process itself: the batch processor's thread does not survive a fork.
    """
    environ = os.environ if environ is None else environ
    if not configured(environ):
        yield False
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    install(provider)
    try:
        yield True
    finally:
        uninstall()
        # The flush may wait for the collector (at most the exporter's timeout): not on the event loop.
        await asyncio.to_thread(provider.shutdown)


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    names = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    if "console" in names:
        return ConsoleSpanExporter()  # spans as JSON on stdout, for a look without a collector
    if any(name not in ("otlp", "") for name in names):
        log.warning(
            "OTEL_TRACES_EXPORTER=%s: only otlp and console are supported; using otlp", ",".join(names)
        )
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(variable, "http/protobuf").strip().lower()
        if protocol != "http/protobuf":
            log.warning("%s=%s: the gateway exports over http/protobuf only", variable, protocol)
            break
    # Imported only when traces are on: it brings requests and the OTLP protobuf modules along.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def install(provider: trace.TracerProvider) -> None:
    """Turns spans on with `provider` (`running` does this; tests pass one with an in-memory exporter)."""
    global ENABLED, _tracer
    _tracer = provider.get_tracer(INSTRUMENTATION_NAME)
    ENABLED = True


def uninstall() -> None:
    global ENABLED, _tracer
    ENABLED = False
    _tracer = None


def _get_tracer() -> trace.Tracer:
    if _tracer is None:
        raise RuntimeError("tracing is off: check tracing.ENABLED first")
    return _tracer


# -- spans ---------------------------------------------------------------------------------------------------


class ServerSpan:
    """The span of one RPC, current (so Glance requests become its children) from start to `end`."""

    __slots__ = ("_token", "span")

    def __init__(self, method: str, metadata: Iterable[tuple[str, Any]]) -> None:
        # Only text metadata can carry a traceparent; the propagator reads just the keys it knows.
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        parent = propagate.extract(carrier)
        self.span = _get_tracer().start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system.name": "grpc", "rpc.method": method},
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def end(self, code: grpc.StatusCode, attributes: Mapping[str, str | int]) -> None:
        span = self.span
        span.set_attribute("rpc.response.status_code", code.name)
        # The older numeric attribute: what many tracing back-ends still key their gRPC views on.
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        for key, value in attributes.items():
            span.set_attribute(key, value)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", code.name)
        otel_context.detach(self._token)
        span.end()


def client_span(name: str, attributes: Mapping[str, str | int]) -> Span:
    """A span for a request the gateway makes (a child of the current RPC's span); the caller ends it."""
    return _get_tracer().start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def inject(span: Span, headers: MutableMapping[str, str]) -> None:
    """Adds `traceparent` (and `tracestate` when there is one) naming `span` as the parent."""
    propagate.inject(headers, context=trace.set_span_in_context(span))


# -- trace ids without the SDK -------------------------------------------------------------------------------


def trace_id_from_traceparent(value: str) -> str | None:
    """The trace id of a W3C traceparent header, or None when the header is not a valid one."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match.group(1) == "ff" or match.group(2) == _ZERO_TRACE_ID:
        return None
    if match.group(1) == "00" and len(value) != 55:
        return None  # version 00 has exactly four fields
    return match.group(2)


def request_id_for_trace(trace_id: str) -> str:
    """`req-<trace id as a UUID>`, Glance's own request id format (40 characters): its logs join the trace."""
    t = trace_id
    return f"req-{t[:8]}-{t[8:12]}-{t[12:16]}-{t[16:20]}-{t[20:32]}"
