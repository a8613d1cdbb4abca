"""Traces (gateway/tracing.py): spans of the real ImageService served in process as gateway/server.py serves
it (servicer_harness.serving, the interceptor included), Glance behind MockTransport."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from unit.servicer_harness import GLANCE_REQUEST_ID, serving

from gateway import tracing, validation
from generated.glance.gateway.v1 import image_service_pb2 as pb

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
DERIVED_REQUEST_ID = "req-4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
TOKEN = "tracing-secret-token-Q7"
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
METHOD = "glance.gateway.v1.ImageService/GetImageMeta"


class Glance:
    """Answers GET /v2/images/<IMAGE> (any other image: `status`), recording each request's headers."""

    def __init__(self, status: int = 404) -> None:
        self.status = status
        self.headers: list[dict[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.headers.append({key.lower(): value for key, value in request.headers.items()})
        answer = {"x-openstack-request-id": GLANCE_REQUEST_ID}
        if request.url.path == f"/v2/images/{IMAGE}":
            body = {"id": IMAGE, "name": "n", "status": "active", "visibility": "private", "size": 3}
            return httpx.Response(200, json=body, headers=answer)
        return httpx.Response(self.status, json={"message": "no"}, headers=answer)


def get_meta(glance: Glance, image_id: str, *metadata: tuple[str, str]) -> grpc.StatusCode:
    async def run() -> grpc.StatusCode:
        async with serving(httpx.MockTransport(glance.handle)) as stub:
            call: Any = stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image_id), metadata=metadata)
            with suppress(grpc.aio.AioRpcError):
                await call
            code: grpc.StatusCode = await call.code()
            return code

    return asyncio.run(run())


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


def hex_id(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def by_kind(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ReadableSpan]:
    finished = exporter.get_finished_spans()
    (server,) = [span for span in finished if span.kind == SpanKind.SERVER]
    (client,) = [span for span in finished if span.kind == SpanKind.CLIENT]
    return server, client


def all_attribute_text(exporter: InMemorySpanExporter) -> str:
    return " ".join(
        f"{key}={value!r}"
        for span in exporter.get_finished_spans()
        for key, value in (span.attributes or {}).items()
    )


def test_server_span_continues_the_callers_trace_and_glance_requests_are_its_children(
    spans: InMemorySpanExporter,
) -> None:
    glance = Glance()
    code = get_meta(glance, IMAGE, ("traceparent", TRACEPARENT), ("x-auth-token", TOKEN))
    assert code == grpc.StatusCode.OK
    server, client = by_kind(spans)
    assert server.name == METHOD
    assert server.context is not None and server.parent is not None
    assert hex_id(server.context.trace_id, 32) == TRACE_ID
    assert hex_id(server.parent.span_id, 16) == CALLER_SPAN_ID and server.parent.is_remote
    assert server.attributes is not None
    assert server.attributes["rpc.system.name"] == "grpc" and server.attributes["rpc.method"] == METHOD
    assert server.attributes["rpc.response.status_code"] == "OK"
    assert server.attributes["glance_gateway.request_id"] == DERIVED_REQUEST_ID
    assert server.status.status_code == StatusCode.UNSET

    assert client.name == "GET /v2/images/{image_id}"
    assert client.context is not None and client.parent is not None
    assert client.context.trace_id == server.context.trace_id
    assert client.parent.span_id == server.context.span_id
    assert client.attributes is not None
    assert client.attributes["http.request.method"] == "GET"
    assert client.attributes["url.full"] == f"http://glance.test/v2/images/{IMAGE}"
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["http.response.header.x-openstack-request-id"] == (GLANCE_REQUEST_ID,)

    (sent,) = glance.headers
    client_span_id = hex_id(client.context.span_id, 16)
    assert sent["traceparent"] == f"00-{TRACE_ID}-{client_span_id}-01"
    # Without an x-request-id from the caller, Glance gets one made from the trace id.
    assert sent["x-openstack-request-id"] == DERIVED_REQUEST_ID
    assert sent["x-auth-token"] == TOKEN  # forwarded to Glance ...
    assert TOKEN not in all_attribute_text(spans)  # ... never recorded


@pytest.mark.parametrize(
    ("glance_status", "code", "server_error"),
    [(404, grpc.StatusCode.NOT_FOUND, False), (500, grpc.StatusCode.INTERNAL, True)],
)
def test_failed_calls_mark_their_spans(
    glance_status: int, code: grpc.StatusCode, server_error: bool, spans: InMemorySpanExporter
) -> None:
    missing = str(uuid.uuid4())
    assert get_meta(Glance(glance_status), missing, ("authorization", f"Bearer {TOKEN}")) == code
    server, client = by_kind(spans)
    assert server.attributes is not None and client.attributes is not None
    assert server.attributes["rpc.response.status_code"] == code.name
    assert server.attributes["glance_gateway.image_id"] == missing
    # A client's NOT_FOUND is no server error (OpenTelemetry's gRPC conventions); Glance's 500 is.
    assert (server.status.status_code == StatusCode.ERROR) is server_error
    assert client.status.status_code == StatusCode.ERROR
    assert client.attributes["http.response.status_code"] == glance_status
    assert client.attributes["error.type"] == str(glance_status)
    assert TOKEN not in all_attribute_text(spans)


def test_the_callers_request_id_wins_and_a_call_without_traceparent_starts_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    glance = Glance()
    get_meta(glance, IMAGE, ("traceparent", TRACEPARENT), ("x-request-id", "req-mine"))
    get_meta(glance, IMAGE)
    assert [headers["x-openstack-request-id"] for headers in glance.headers[:1]] == ["req-mine"]
    new_trace = [span for span in spans.get_finished_spans() if span.kind == SpanKind.SERVER][1]
    assert new_trace.parent is None and new_trace.context is not None
    trace_id = hex_id(new_trace.context.trace_id, 32)
    assert trace_id != TRACE_ID
    assert glance.headers[1]["x-openstack-request-id"] == tracing.request_id_for_trace(trace_id)


def test_with_tracing_off_a_traceparent_still_names_the_request_id() -> None:
    assert not tracing.ENABLED
    glance = Glance()
    get_meta(glance, IMAGE, ("traceparent", TRACEPARENT))
    get_meta(glance, IMAGE, ("traceparent", "00-not-a-trace"))  # a bad one is ignored, not an error
    get_meta(glance, IMAGE)
    derived, bad, plain = glance.headers
    assert derived["x-openstack-request-id"] == DERIVED_REQUEST_ID
    assert "traceparent" not in derived  # no spans while off: nothing to name as parent
    assert "x-openstack-request-id" not in bad and "x-openstack-request-id" not in plain


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_only_the_standard_environment_turns_traces_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.configured(environ) is on


def test_running_turns_spans_on_inside_only() -> None:
    async def run() -> None:
        async with tracing.running({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) as on:
            assert not on and not tracing.ENABLED
        # The OTLP exporter is made (nothing is sent: no span is ever started here).
        async with tracing.running(
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}
        ) as on:
            assert on and tracing.ENABLED
        assert not tracing.ENABLED

    asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        (TRACEPARENT, TRACE_ID),
        (f"01-{TRACE_ID}-{CALLER_SPAN_ID}-01-future-field", TRACE_ID),  # a later version may add fields
        (f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01-extra", None),  # version 00 has exactly four
        (f"ff-{TRACE_ID}-{CALLER_SPAN_ID}-01", None),
        (f"00-{'0' * 32}-{CALLER_SPAN_ID}-01", None),
        (f"00-{TRACE_ID.upper()}-{CALLER_SPAN_ID}-01", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_trace_id_from_traceparent(header: str, trace_id: str | None) -> None:
    assert tracing.trace_id_from_traceparent(header) == trace_id


def test_a_derived_request_id_is_glances_format_and_passes_validation() -> None:
    derived = tracing.request_id_for_trace(TRACE_ID)
    assert derived == DERIVED_REQUEST_ID and len(derived) == 40
    assert derived == f"req-{uuid.UUID(TRACE_ID)}"
    assert validation.request_id(derived) == derived
