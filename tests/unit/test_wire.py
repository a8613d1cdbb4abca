from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import wire
from gateway.errors import ERROR_DOMAIN
from gateway.interceptor import RpcObserver
from gateway.rpc_scope import GRPC_AIO_LOGGER
from gateway.wire import (
    SERVICE_NAME,
    MalformedMessage,
    data_message,
    parse_stage_message,
    parse_upload_message,
)
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

# Bytes no request message parses from: field 1 with the end-group wire type 4, then a truncated varint.
JUNK = b"\x0c\xff"


def untyped(channel: object) -> Any:
    """The channel without grpc's stub typing, which cannot describe raw bytes in and out."""
    return channel


# Every varint length boundary up to a few MiB: one, two, three and four length bytes.
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 4 * 2**20 + 3])
def test_hand_framed_data_is_the_protobuf_encoding(size: int) -> None:
    chunk = bytes(i % 251 for i in range(size))
    framed = data_message(chunk)
    assert framed == pb.GetImageResponse(data=chunk).SerializeToString()
    parsed = pb.GetImageResponse.FromString(framed)
    assert parsed.WhichOneof("content") == "data" and parsed.data == chunk


# The RPCs whose request streams carry image data: both parsed by the same hand parser.
UPLOAD_RPCS = [("AddImage", pb.AddImageRequest), ("StageImageData", pb.StageImageDataRequest)]


@pytest.mark.parametrize("method, request_type", UPLOAD_RPCS)
@pytest.mark.parametrize("size", [1, 127, 128, 16384, 2**20])
def test_data_only_upload_messages_parse_to_a_view_of_the_same_bytes(
    size: int, method: str, request_type: Any
) -> None:
    chunk = bytes(i % 253 for i in range(size))
    raw = request_type(data=chunk).SerializeToString()
    parsed = wire.REQUEST_PARSERS[method](raw)
    assert isinstance(parsed, memoryview) and parsed.tobytes() == chunk
    # The fast path: a view into the received bytes themselves, not a copy.
    assert parsed.obj is raw


def test_every_other_upload_message_parses_as_protobuf() -> None:
    spec = pb.AddImageRequest(spec=pb.ImageSpec(name="x", size=3))
    assert parse_upload_message(spec.SerializeToString()) == spec
    # Data followed by a spec: protobuf's last-oneof-wins must hold, so this is no data-only message.
    both = pb.AddImageRequest(data=b"abc").SerializeToString() + spec.SerializeToString()
    assert parse_upload_message(both) == pb.AddImageRequest.FromString(both)
    assert parse_upload_message(b"") == pb.AddImageRequest()


def test_every_other_stage_message_parses_as_the_stage_request() -> None:
    spec = pb.StageImageDataRequest(spec=pb.StageSpec(image_id="i", size=3, ends_with_finish=True))
    assert parse_stage_message(spec.SerializeToString()) == spec
    finish = pb.StageImageDataRequest(finish=pb.UploadFinish(md5="m"))
    assert parse_stage_message(finish.SerializeToString()) == finish
    both = pb.StageImageDataRequest(data=b"abc").SerializeToString() + spec.SerializeToString()
    parsed = parse_stage_message(both)
    assert isinstance(parsed, pb.StageImageDataRequest) and parsed.WhichOneof("content") == "spec"


@pytest.mark.parametrize("method, request_type", UPLOAD_RPCS)
@pytest.mark.parametrize("raw", [b"\x0a", b"\x0a\x05ab", b"\x0a\xff\xff", b"\x0a" + b"\xff" * 11, JUNK])
def test_malformed_upload_messages_come_back_as_malformed_not_raised(
    raw: bytes, method: str, request_type: Any
) -> None:
    with pytest.raises(Exception, match="Error parsing message"):
        request_type.FromString(raw)
    parsed = wire.REQUEST_PARSERS[method](raw)
    assert isinstance(parsed, MalformedMessage)
    assert parsed.method == method
    assert (
        parsed.describe()
        == f"the {method} request is not a valid glance.gateway.v1.{request_type.__name__} message"
    )


@pytest.mark.parametrize("request_type", [pb.GetImageRequest, pb.DownloadHeader, pb.ImageSpec])
def test_only_a_request_with_bytes_data_as_field_1_gets_the_hand_parser(request_type: Any) -> None:
    # GetImageRequest's field 1 is a string, the others have no `data`: a view would be the wrong message.
    with pytest.raises(TypeError, match="bytes data = 1"):
        wire.upload_message_parser("X", request_type)


def test_every_method_has_a_request_parser_that_never_raises() -> None:
    methods = {method.name for method in pb.DESCRIPTOR.services_by_name["ImageService"].methods}
    assert set(wire.REQUEST_PARSERS) == methods
    for name, parse in wire.REQUEST_PARSERS.items():
        malformed = parse(JUNK)
        assert isinstance(malformed, MalformedMessage), name
        assert malformed.method == name
        assert malformed.message_type == f"glance.gateway.v1.{name}Request"
        error = malformed.error()
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "MALFORMED_REQUEST"
        assert name in error.message and "Error" not in error.message and "<class" not in error.message
    assert wire.REQUEST_PARSERS["DeleteImage"](
        pb.DeleteImageRequest(image_id="x").SerializeToString()
    ) == pb.DeleteImageRequest(image_id="x")


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(wire.REQUEST_PARSERS)), st.binary(max_size=300))
def test_no_request_parser_raises_on_any_bytes(method: str, raw: bytes) -> None:
    parsed = wire.REQUEST_PARSERS[method](raw)
    assert isinstance(parsed, MalformedMessage | memoryview) or parsed.DESCRIPTOR.name == f"{method}Request"


# -- registration: a malformed request is refused before the servicer method runs ------------------------


class RecordingServicer(pb_grpc.ImageServiceServicer):
    """Answers every RPC with an empty response and records the requests it saw."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def ListImages(self, request: Any, context: Any) -> pb.ListImagesResponse:
        self.seen.append(request)
        return pb.ListImagesResponse()

    async def GetImageMeta(self, request: Any, context: Any) -> pb.GetImageMetaResponse:
        self.seen.append(request)
        return pb.GetImageMetaResponse()

    async def GetImage(self, request: Any, context: Any) -> None:  # type: ignore[override]
        self.seen.append(request)
        await context.write(pb.GetImageResponse(header=pb.DownloadHeader(length=3)))
        await context.write(data_message(b"abc"))

    async def AddImage(self, request_iterator: Any, context: Any) -> pb.AddImageResponse:
        self.seen.extend([message async for message in request_iterator])
        return pb.AddImageResponse()

    async def UpdateImage(self, request: Any, context: Any) -> pb.UpdateImageResponse:
        self.seen.append(request)
        return pb.UpdateImageResponse()

    async def DeleteImage(self, request: Any, context: Any) -> pb.DeleteImageResponse:
        self.seen.append(request)
        return pb.DeleteImageResponse()

    async def AddImageTag(self, request: Any, context: Any) -> pb.AddImageTagResponse:
        self.seen.append(request)
        return pb.AddImageTagResponse()

    async def RemoveImageTag(self, request: Any, context: Any) -> pb.RemoveImageTagResponse:
        self.seen.append(request)
        return pb.RemoveImageTagResponse()

    async def StageImageData(self, request_iterator: Any, context: Any) -> pb.StageImageDataResponse:
        self.seen.extend([message async for message in request_iterator])
        return pb.StageImageDataResponse()

    async def WatchImageImport(self, request: Any, context: Any) -> None:  # type: ignore[override]
        self.seen.append(request)
        await context.write(pb.WatchImageImportResponse(state=pb.IMPORT_STATE_SUCCEEDED))

    async def CreateImageMember(self, request: Any, context: Any) -> pb.CreateImageMemberResponse:
        self.seen.append(request)
        return pb.CreateImageMemberResponse()

    async def ListImageMembers(self, request: Any, context: Any) -> pb.ListImageMembersResponse:
        self.seen.append(request)
        return pb.ListImageMembersResponse()

    async def GetImageMember(self, request: Any, context: Any) -> pb.GetImageMemberResponse:
        self.seen.append(request)
        return pb.GetImageMemberResponse()

    async def UpdateImageMember(self, request: Any, context: Any) -> pb.UpdateImageMemberResponse:
        self.seen.append(request)
        return pb.UpdateImageMemberResponse()

    async def DeleteImageMember(self, request: Any, context: Any) -> pb.DeleteImageMemberResponse:
        self.seen.append(request)
        return pb.DeleteImageMemberResponse()

    async def ListStores(self, request: Any, context: Any) -> pb.ListStoresResponse:
        self.seen.append(request)
        return pb.ListStoresResponse()

    async def DeleteImageFromStore(self, request: Any, context: Any) -> pb.DeleteImageFromStoreResponse:
        self.seen.append(request)
        return pb.DeleteImageFromStoreResponse()

    async def ImportImage(self, request: Any, context: Any) -> pb.ImportImageResponse:
        self.seen.append(request)
        return pb.ImportImageResponse()

    async def DeactivateImage(self, request: Any, context: Any) -> pb.DeactivateImageResponse:
        self.seen.append(request)
        return pb.DeactivateImageResponse()

    async def ReactivateImage(self, request: Any, context: Any) -> pb.ReactivateImageResponse:
        self.seen.append(request)
        return pb.ReactivateImageResponse()

    async def GetQuotaUsage(self, request: Any, context: Any) -> pb.GetQuotaUsageResponse:
        self.seen.append(request)
        return pb.GetQuotaUsageResponse()


class GeneratorServicer(RecordingServicer):
    """GetImage as an async generator, grpc.aio's other streaming-handler kind."""

    async def GetImage(self, request: Any, context: Any) -> AsyncIterator[pb.GetImageResponse]:  # type: ignore[override]
        self.seen.append(request)
        yield pb.GetImageResponse(header=pb.DownloadHeader(length=3))
        yield pb.GetImageResponse(data=b"abc")


Outcome = tuple[grpc.StatusCode, str, str, int]  # code, details, ErrorInfo reason, responses received

# Every unary RPC of the service, from its descriptor: a new one is covered without editing this list.
UNARY = [
    m.name
    for m in pb.DESCRIPTOR.services_by_name["ImageService"].methods
    if not m.client_streaming and not m.server_streaming
]


async def _call_raw(
    servicer: RecordingServicer,
    calls: list[tuple[str, list[bytes]]],
    max_message_size: int | None = None,
    server_options: list[tuple[str, Any]] | None = None,
) -> list[Outcome]:
    server = grpc.aio.server(options=server_options, interceptors=[RpcObserver()])
    wire.add_image_service(servicer, server, max_message_size=max_message_size)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    outcomes: list[Outcome] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method, messages in calls:
                path = f"/{SERVICE_NAME}/{method}"
                received = 0
                call: Any
                if method == "GetImage":
                    call = untyped(channel).unary_stream(path)(messages[0])
                elif method in ("AddImage", "StageImageData"):
                    call = untyped(channel).stream_unary(path)(iter(messages))
                else:
                    call = untyped(channel).unary_unary(path)(messages[0])
                try:
                    if method == "GetImage":
                        async for _ in call:
                            received += 1
                    else:
                        await call
                        received = 1
                except grpc.aio.AioRpcError:
                    pass
                code = await call.code()
                reason = ""
                if code != grpc.StatusCode.OK:
                    # grpc's own refusals carry no details: reason stays empty.
                    status = await rpc_status.aio.from_call(call)
                    if status is not None:
                        info = error_details_pb2.ErrorInfo()
                        assert status.details[0].Unpack(info)
                        assert info.domain == ERROR_DOMAIN
                        reason = info.reason
                outcomes.append((code, await call.details() or "", reason, received))
    finally:
        await server.stop(None)
    return outcomes


@pytest.mark.parametrize("servicer_type", [RecordingServicer, GeneratorServicer])
def test_malformed_requests_end_invalid_argument_before_the_servicer_runs(
    servicer_type: type[RecordingServicer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    servicer = servicer_type()
    rng = random.Random(7)
    junk = [JUNK, b"\x0a\x05ab", b"\xff" * 11, *(rng.randbytes(rng.randrange(1, 300)) for _ in range(20))]
    calls = [(method, [raw]) for method in [*UNARY, "GetImage"] for raw in junk]
    calls = [
        (method, [raw])
        for method, [raw] in calls
        if isinstance(wire.REQUEST_PARSERS[method](raw), MalformedMessage)
    ]
    assert len(calls) > 60
    outcomes = asyncio.run(_call_raw(servicer, calls))
    assert servicer.seen == []
    for (method, _), (code, details, reason, received) in zip(calls, outcomes, strict=True):
        assert (code, reason, received) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST", 0)
        assert details == f"the {method} request is not a valid glance.gateway.v1.{method}Request message"
    # One INFO line per refused call (the access line), never a traceback or grpc's "Unexpected ..." ERROR.
    assert all(record.levelno <= logging.INFO and record.exc_info is None for record in caplog.records)
    refused = [r for r in caplog.records if getattr(r, "reason", None) == "MALFORMED_REQUEST"]
    assert len(refused) == len(calls)
    assert all(r.name == "gateway.access" and r.levelno == logging.INFO for r in refused)


@pytest.mark.parametrize("servicer_type", [RecordingServicer, GeneratorServicer])
def test_well_formed_requests_still_reach_the_servicer(servicer_type: type[RecordingServicer]) -> None:
    servicer = servicer_type()
    requests: list[tuple[str, list[bytes]]] = [
        ("ListImages", [pb.ListImagesRequest(page_size=3).SerializeToString()]),
        ("GetImageMeta", [pb.GetImageMetaRequest(image_id="x").SerializeToString()]),
        ("GetImage", [pb.GetImageRequest(image_id="y").SerializeToString()]),
        ("UpdateImage", [pb.UpdateImageRequest(image_id="z").SerializeToString()]),
        ("DeleteImage", [b""]),
        (
            "AddImage",
            [pb.AddImageRequest(spec=pb.ImageSpec(name="n")).SerializeToString(), data_message(b"d")],
        ),
    ]
    outcomes = asyncio.run(_call_raw(servicer, requests))
    assert [(code, received) for code, _, _, received in outcomes] == [
        (grpc.StatusCode.OK, 1), (grpc.StatusCode.OK, 1), (grpc.StatusCode.OK, 2), (grpc.StatusCode.OK, 1),
        (grpc.StatusCode.OK, 1), (grpc.StatusCode.OK, 1),
    ]  # fmt: skip
    assert servicer.seen[:5] == [
        pb.ListImagesRequest(page_size=3), pb.GetImageMetaRequest(image_id="x"),
        pb.GetImageRequest(image_id="y"), pb.UpdateImageRequest(image_id="z"), pb.DeleteImageRequest(),
    ]  # fmt: skip
    spec, data = servicer.seen[5:]
    assert spec == pb.AddImageRequest(spec=pb.ImageSpec(name="n"))
    assert isinstance(data, memoryview) and data.tobytes() == b"d"


def test_stage_data_messages_reach_the_servicer_as_views() -> None:
    servicer = RecordingServicer()
    spec = pb.StageImageDataRequest(spec=pb.StageSpec(image_id="i"))
    finish = pb.StageImageDataRequest(finish=pb.UploadFinish())
    messages = [spec.SerializeToString(), data_message(b"dd"), finish.SerializeToString(), JUNK]
    outcomes = asyncio.run(_call_raw(servicer, [("StageImageData", messages)]))
    assert outcomes[0][0] == grpc.StatusCode.OK
    first, data, last, junk = servicer.seen
    assert (first, last) == (spec, finish)
    assert isinstance(data, memoryview) and data.tobytes() == b"dd"
    assert junk == MalformedMessage("StageImageData", "glance.gateway.v1.StageImageDataRequest")


def test_a_junk_upload_message_is_an_item_of_the_request_stream() -> None:
    servicer = RecordingServicer()
    spec = pb.AddImageRequest(spec=pb.ImageSpec(name="n")).SerializeToString()
    outcomes = asyncio.run(_call_raw(servicer, [("AddImage", [spec, JUNK])]))
    assert outcomes[0][0] == grpc.StatusCode.OK
    assert servicer.seen[1] == MalformedMessage("AddImage", "glance.gateway.v1.AddImageRequest")


class OversizedServicer(RecordingServicer):
    """ListImages answers with a big page, GetImageMeta with the wrong type."""

    async def ListImages(self, request: Any, context: Any) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=[pb.Image(name="n" * 500) for _ in range(10)])

    async def GetImageMeta(self, request: Any, context: Any) -> Any:
        return "not a message"


def test_a_response_over_the_message_limit_is_resource_exhausted_with_error_info() -> None:
    outcomes = asyncio.run(_call_raw(OversizedServicer(), [("ListImages", [b""])], max_message_size=4000))
    code, details, reason, _ = outcomes[0]
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE")
    assert "over the 4000-byte message limit" in details
    ok = asyncio.run(_call_raw(OversizedServicer(), [("ListImages", [b""])], max_message_size=6000))
    assert ok[0][0] == grpc.StatusCode.OK


def test_a_handler_that_returns_the_wrong_type_is_internal_not_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = asyncio.run(_call_raw(OversizedServicer(), [("GetImageMeta", [b""])]))
    assert outcomes[0][:3] == (grpc.StatusCode.INTERNAL, "the gateway failed unexpectedly", "INTERNAL")
    # A gateway bug: logged once with its traceback, by RpcScope.
    assert [record.levelno for record in caplog.records if record.exc_info] == [logging.ERROR]


def test_grpcs_own_failure_logs_are_one_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Without max_message_size, grpc itself refuses the big response after the handler returned, and logs it.
    options = [("grpc.max_send_message_length", 4000)]
    outcomes = asyncio.run(
        _call_raw(OversizedServicer(), [("ListImages", [b""])] * 3, server_options=options)
    )
    assert {outcome[0] for outcome in outcomes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    failures = [record for record in caplog.records if record.name == GRPC_AIO_LOGGER and record.levelno > 10]
    assert len(failures) == 3
    for record in failures:
        assert record.levelno == logging.WARNING and record.exc_info is None and record.exc_text is None
        assert "ExecuteBatchError" in record.getMessage() and "\n" not in record.getMessage()
