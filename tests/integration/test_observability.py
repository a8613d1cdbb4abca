"""Metrics, traces and access lines of a real gateway process in front of a real Glance.

A fake Glance only where a real one cannot be made to fail so (corrupt data), and a small OTLP/HTTP receiver
standing in for an OpenTelemetry collector.
"""

from __future__ import annotations

import json
import random
import re
import socket
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from integration.support import (
    KIB,
    FakeGlance,
    GatewayProcess,
    ImageTracker,
    LoopbackHttpServer,
    StartGateway,
    new_id,
    open_channel,
    unique_name,
    wait_until,
)
from localglance import GlanceServer

SERVICE = "glance.gateway.v1.ImageService"
HEALTH = "grpc.health.v1.Health"
TRACE_ID = "5e0c63257de34c92bf9efcd03927272e"
CALLER_SPAN_ID = "e457b5a2e4d86bd1"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
TOKEN = "obs-secret-token-7f3a9c"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Scrape:
    """One GET /metrics, by sample name and labels."""

    def __init__(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            self.text = response.read().decode()
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        }

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def rpc(
        self, name: str, grpc_type: str, method: str, service: str = SERVICE, **labels: str
    ) -> float | None:
        return self.get(name, grpc_type=grpc_type, grpc_service=service, grpc_method=method, **labels)

    def labelled(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}


def glance_counts(scrape: Scrape) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["operation"], dict(labels)["status"]): value
        for labels, value in scrape.labelled("glance_gateway_glance_request_duration_seconds_count").items()
    }


# -- metrics -----------------------------------------------------------------------------------------------


def test_metrics_of_each_kind_of_call(glance: GlanceServer, start_gateway: StartGateway) -> None:
    port = free_port()
    gateway = start_gateway(glance.url, "--metrics-port", str(port))
    # The start-up sweep lists marked images (two list calls); Glance counts are compared from after it.
    wait_until(lambda: sum(glance_counts(Scrape(port)).values()) >= 2, 10, "the start-up sweep")
    before = glance_counts(Scrape(port))
    data = random.Random(8).randbytes(300 * KIB)
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        images = ImageTracker(stub, glance.url)
        try:
            image = images(name=unique_name("metrics"), data=data, chunk_size=64 * KIB)  # spec + 5 chunks
            listed = stub.ListImages(pb.ListImagesRequest(name=image.name))
            assert [found.id for found in listed.images] == [image.id]
            with pytest.raises(grpc.RpcError) as missing:
                stub.GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()))
            assert isinstance(missing.value, grpc.Call) and missing.value.code() == grpc.StatusCode.NOT_FOUND
            responses = list(stub.GetImage(pb.GetImageRequest(image_id=image.id)))
            assert b"".join(response.data for response in responses[1:]) == data
            health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs list no methods
            assert (
                health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            )
            watch = health.Watch(health_pb2.HealthCheckRequest())
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        finally:
            images.cleanup()
    wait_until(
        lambda: (
            Scrape(port).rpc(
                "grpc_server_handled_total", "server_stream", "Watch", HEALTH, grpc_code="CANCELLED"
            )
            == 1
        ),
        10,
        "the cancelled Watch to be counted",
    )
    scrape = Scrape(port)

    def rpc(grpc_type: str, method: str, service: str = SERVICE) -> dict[str, float | None]:
        return {
            name: scrape.rpc(f"grpc_server_{name}", grpc_type, method, service)
            for name in ("started_total", "msg_received_total", "msg_sent_total", "handling_seconds_count")
        }

    def handled(grpc_type: str, method: str, service: str = SERVICE) -> dict[str, float]:
        found = scrape.labelled("grpc_server_handled_total")
        expected = {("grpc_type", grpc_type), ("grpc_service", service), ("grpc_method", method)}
        return {dict(labels)["grpc_code"]: value for labels, value in found.items() if expected <= labels}

    def counts(started: int, received: int, sent: int) -> dict[str, float | None]:
        return {
            "started_total": started,
            "msg_received_total": received,
            "msg_sent_total": sent,
            "handling_seconds_count": started,
        }

    assert rpc("client_stream", "AddImage") == counts(1, 6, 1)
    assert handled("client_stream", "AddImage") == {"OK": 1}
    assert rpc("unary", "ListImages") == counts(1, 1, 1)
    assert handled("unary", "ListImages") == {"OK": 1}
    assert rpc("unary", "GetImageMeta") == counts(1, 1, 0)
    assert handled("unary", "GetImageMeta") == {"NOT_FOUND": 1}
    assert rpc("server_stream", "GetImage") == counts(1, 1, len(responses))
    assert handled("server_stream", "GetImage") == {"OK": 1}
    assert rpc("unary", "Check", HEALTH) == counts(1, 1, 1)
    assert handled("unary", "Check", HEALTH) == {"OK": 1}
    assert rpc("server_stream", "Watch", HEALTH) == counts(1, 1, 1)
    assert handled("server_stream", "Watch", HEALTH) == {"CANCELLED": 1}
    # Nothing else was called: no other gRPC series.
    assert {dict(labels)["grpc_method"] for labels in scrape.labelled("grpc_server_started_total")} == {
        "AddImage", "ListImages", "GetImageMeta", "GetImage", "Check", "Watch",
    }  # fmt: skip

    assert scrape.get("glance_gateway_download_bytes_total") == len(data)
    assert scrape.get("glance_gateway_upload_bytes_total") == len(data)
    assert scrape.get("glance_gateway_streams_in_flight") == 0
    assert scrape.get("glance_gateway_checksum_failures_total", operation="download") == 0
    assert scrape.get("glance_gateway_upload_cleanups_pending") == 0
    after = glance_counts(scrape)
    glance_calls = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert glance_calls == {
        ("create", "201"): 1,  # AddImage: the record ...
        ("upload", "204"): 1,  # ... its data ...
        ("show", "200"): 2,  # ... the image as it ended up; and GetImage's look before the download
        ("list", "200"): 1,
        ("show", "404"): 1,
        ("download", "200"): 1,
    }


def test_a_checksum_failure_is_counted(start_gateway: StartGateway) -> None:
    port = free_port()
    with FakeGlance() as fake:
        image_id = fake.add(bytes(range(256)) * 64, mode="corrupt")
        gateway = start_gateway(fake.url, "--metrics-port", str(port))
        received = 0
        with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as caught:
            for response in pb_grpc.ImageServiceStub(channel).GetImage(pb.GetImageRequest(image_id=image_id)):
                received += len(response.data)
        assert isinstance(caught.value, grpc.Call) and caught.value.code() == grpc.StatusCode.DATA_LOSS
        # The status reaches the client before the interceptor counts the call (a CI run under load scraped
        # in between): wait for the count, then read everything from one scrape.
        wait_until(
            lambda: (
                Scrape(port).rpc(
                    "grpc_server_handled_total", "server_stream", "GetImage", grpc_code="DATA_LOSS"
                )
                is not None
            ),
            10,
            "the failed GetImage to be counted",
        )
        scrape = Scrape(port)
    assert scrape.get("glance_gateway_checksum_failures_total", operation="download") == 1
    assert scrape.rpc("grpc_server_handled_total", "server_stream", "GetImage", grpc_code="DATA_LOSS") == 1
    assert scrape.get("glance_gateway_download_bytes_total") == received == 256 * 64
    assert (
        scrape.get("glance_gateway_glance_request_duration_seconds_count", operation="download", status="200")
        == 1
    )


# -- access lines ------------------------------------------------------------------------------------------


def test_one_text_access_line_per_call(
    gateway: GatewayProcess, stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    image = new_image(name=unique_name("access"), data=b"x" * 1000)
    missing = new_id()
    with pytest.raises(grpc.RpcError):
        stub.GetImageMeta(
            pb.GetImageMetaRequest(image_id=missing), metadata=(("x-request-id", "req-access-1"),)
        )
    list(stub.GetImage(pb.GetImageRequest(image_id=image.id), metadata=(("x-request-id", "req-access-2"),)))
    wait_until(lambda: "req-access-2" in gateway.log_text(), 5, "the access lines")
    (failed,) = [line for line in gateway.log_lines if "req-access-1" in line]
    assert re.search(
        rf" INFO gateway.access: {SERVICE}/GetImageMeta NOT_FOUND in \d+\.\d ms reason=NOT_FOUND "
        rf"peer=ipv4:127.0.0.1:\d+ request_id=req-access-1 image_id={missing}$",
        failed,
    ), failed
    (served,) = [line for line in gateway.log_lines if "req-access-2" in line]
    assert f"{SERVICE}/GetImage OK in " in served
    assert f"image_id={image.id} bytes_sent=1000" in served


def test_json_access_lines(glance: GlanceServer, start_gateway: StartGateway) -> None:
    gateway = start_gateway(glance.url, "--log-format", "json")
    data = b"j" * 5000
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        images = ImageTracker(stub, glance.url)
        try:
            image = images(name=unique_name("json"), data=data, chunk_size=1000)
            list(
                stub.GetImage(pb.GetImageRequest(image_id=image.id), metadata=(("traceparent", TRACEPARENT),))
            )
            with pytest.raises(grpc.RpcError):
                stub.DeleteImage(
                    pb.DeleteImageRequest(image_id="not-a-uuid"), metadata=(("x-request-id", "r-1"),)
                )
        finally:
            images.cleanup()
    wait_until(lambda: "DeleteImage" in gateway.log_text(), 5, "the access lines")
    entries = []
    for line in gateway.log_lines:
        if line.startswith("{"):
            entries.append(json.loads(line))
        else:  # only gRPC's C core writes lines of its own (glog style), never the gateway
            assert re.match(r"[IWEF]\d{4} ", line), line
    assert entries[0]["logger"] and all(
        {"time", "level", "logger", "message"} <= entry.keys() for entry in entries
    )
    access = {
        entry["method"].rsplit("/", 1)[1]: entry for entry in entries if entry["logger"] == "gateway.access"
    }
    assert set(access) == {"AddImage", "GetImage", "DeleteImage"}
    assert access["AddImage"]["bytes_received"] == len(data) and access["AddImage"]["image_id"] == image.id
    assert access["AddImage"]["grpc_type"] == "client_stream" and access["AddImage"]["code"] == "OK"
    got = access["GetImage"]
    assert got["bytes_sent"] == len(data) and got["image_id"] == image.id and got["code"] == "OK"
    assert got["trace_id"] == TRACE_ID and got["request_id"] == f"req-{uuid.UUID(TRACE_ID)}"
    deleted = access["DeleteImage"]
    assert (deleted["code"], deleted["reason"], deleted["request_id"]) == (
        "INVALID_ARGUMENT",
        "INVALID_IMAGE_ID",
        "r-1",
    )
    assert isinstance(deleted["duration_ms"], float) and deleted["peer"].startswith("ipv4:127.0.0.1:")


# -- traces, and tokens nowhere ----------------------------------------------------------------------------


class OtlpReceiver(LoopbackHttpServer):
    """An OTLP/HTTP endpoint that keeps every ExportTraceServiceRequest body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces", self.path
                receiver.bodies.append(body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler, "otlp-receiver")

    @property
    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{self.port}/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the calls
        }

    def spans(self) -> list[tuple[dict[str, Any], trace_pb2.Span]]:
        """Every span received, with its resource's attributes."""
        found: list[tuple[dict[str, Any], trace_pb2.Span]] = []
        for body in list(self.bodies):
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found


def attributes(pairs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        value = getattr(pair.value, kind)
        if kind == "array_value":
            value = [getattr(item, item.WhichOneof("value")) for item in value.values]
        values[pair.key] = value
    return values


def in_trace(receiver: OtlpReceiver) -> list[trace_pb2.Span]:
    return [span for _, span in receiver.spans() if span.trace_id.hex() == TRACE_ID]


def server_spans(receiver: OtlpReceiver) -> list[trace_pb2.Span]:
    return [span for _, span in receiver.spans() if span.kind == trace_pb2.Span.SPAN_KIND_SERVER]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


def test_traces_reach_a_collector(
    glance: GlanceServer, new_image: ImageTracker, receiver: OtlpReceiver
) -> None:
    image = new_image(name=unique_name("traced"), data=b"t" * 3000)
    with GatewayProcess(glance.url, env=receiver.env) as gateway, open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        with_trace = (("traceparent", TRACEPARENT),)
        _, call = stub.GetImageMeta.with_call(pb.GetImageMetaRequest(image_id=image.id), metadata=with_trace)
        list(stub.GetImage(pb.GetImageRequest(image_id=image.id), metadata=with_trace))
        wait_until(lambda: len(in_trace(receiver)) >= 5, 10, "2 server spans and 3 client spans exported")
    spans = {
        span.name: (resource, span) for resource, span in receiver.spans() if span.trace_id.hex() == TRACE_ID
    }
    resource, meta = spans[f"{SERVICE}/GetImageMeta"]
    assert resource["service.name"] == "glance-grpc-gateway"
    assert meta.kind == trace_pb2.Span.SPAN_KIND_SERVER and meta.parent_span_id.hex() == CALLER_SPAN_ID
    assert attributes(meta.attributes)["rpc.response.status_code"] == "OK"

    servers = [span for _, span in spans.values() if span.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    clients = [span for _, span in receiver.spans() if span.kind == trace_pb2.Span.SPAN_KIND_CLIENT]
    assert sorted(span.name for span in servers) == [f"{SERVICE}/GetImage", f"{SERVICE}/GetImageMeta"]
    children = {
        server.name.rsplit("/", 1)[1]: sorted(c.name for c in clients if c.parent_span_id == server.span_id)
        for server in servers
    }
    assert children == {
        "GetImageMeta": ["GET /v2/images/{image_id}"],
        "GetImage": ["GET /v2/images/{image_id}", "GET /v2/images/{image_id}/file"],
    }
    (show,) = [c for c in clients if c.parent_span_id == meta.span_id]
    show_attributes = attributes(show.attributes)
    assert show.trace_id.hex() == TRACE_ID
    assert show_attributes["http.request.method"] == "GET"
    assert show_attributes["url.full"] == f"{glance.url}/v2/images/{image.id}"
    assert show_attributes["http.response.status_code"] == 200
    # Glance's request id, as the caller also got it in the trailing metadata.
    trailing = [value for key, value in call.trailing_metadata() if key == "x-openstack-request-id"]
    assert show_attributes["http.response.header.x-openstack-request-id"] == trailing
    # The access line names the request id sent to Glance: made from the trace id.
    (line,) = [line for line in gateway.log_lines if f"{SERVICE}/GetImageMeta OK" in line]
    assert f"request_id=req-{uuid.UUID(TRACE_ID)}" in line and f"trace_id={TRACE_ID}" in line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tokens_appear_in_no_log_line_and_no_span(
    log_format: str, glance: GlanceServer, receiver: OtlpReceiver
) -> None:
    gateway = GatewayProcess(glance.url, "--log-format", log_format, log_level="DEBUG", env=receiver.env)
    with_token = (("x-auth-token", TOKEN), ("traceparent", TRACEPARENT))
    bearer = (("authorization", f"Bearer {TOKEN}"),)
    with gateway, open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        name = unique_name("token")
        spec = pb.ImageSpec(name=name, id=new_id(), type=pb.IMAGE_TYPE_RAW)
        messages = [pb.AddImageRequest(spec=spec), pb.AddImageRequest(data=b"d" * 2000)]
        images = ImageTracker(stub, glance.url)
        images.track(spec.id)
        try:
            stub.AddImage(iter(messages), metadata=with_token)
            stub.GetImageMeta(pb.GetImageMetaRequest(image_id=spec.id), metadata=bearer)
            stub.ListImages(pb.ListImagesRequest(name=name), metadata=with_token)
            list(stub.GetImage(pb.GetImageRequest(image_id=spec.id), metadata=bearer))
            failing: list[Callable[[], object]] = [
                lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()), metadata=with_token),
                lambda: stub.DeleteImage(pb.DeleteImageRequest(image_id="bad"), metadata=bearer),
                lambda: stub.GetImageMeta(
                    pb.GetImageMetaRequest(image_id=spec.id),
                    metadata=(*with_token, ("x-request-id", "bad id")),
                ),
            ]
            for call in failing:
                with pytest.raises(grpc.RpcError):
                    call()
            wait_until(lambda: len(server_spans(receiver)) >= 7, 10, "the spans of the 7 calls exported")
        finally:
            images.cleanup()
    # Stopped: every line written, every span flushed.
    text = gateway.log_text()
    assert " DEBUG " in text or '"level": "DEBUG"' in text  # the level where libraries say the most
    assert text.count("gateway.access") >= 7
    assert TOKEN not in text
    assert receiver.bodies and not [body for body in receiver.bodies if TOKEN.encode() in body]
