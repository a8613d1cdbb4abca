"""How ImageService's messages go on the wire: the generated codecs, except image data, framed by hand."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

from gateway.errors import C, GatewayError, invalid_argument
from gateway.rpc_scope import RpcScope, bound_grpc_logging
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

_SERVICE = pb.DESCRIPTOR.services_by_name["ImageService"]
SERVICE_NAME: str = _SERVICE.full_name
# GetImageResponse.data (and the upload requests' data) is field 1, wire type 2 (length-delimited): tag byte
# (1 << 3) | 2.
_DATA_TAG = b"\x0a"
Request = TypeVar("Request", bound=Message)


@dataclass(frozen=True)
class MalformedMessage:
    """What a request deserializer returns for bytes that are not the request message.

    grpc answers a deserializer that raises with UNKNOWN ("Unexpected <class 'DecodeError'>...") and logs a
    traceback per call, before any handler runs; this stands in for the message instead, so the call ends
    with INVALID_ARGUMENT through the same status path as every other bad input.
    """

    method: str  # the RPC, e.g. "GetImageMeta"
    message_type: str  # the full name of the message it should have been

    def describe(self) -> str:
        return f"the {self.method} request is not a valid {self.message_type} message"

    def error(self) -> GatewayError:
        return invalid_argument("MALFORMED_REQUEST", self.describe())


def request_parser(method: str, request_type: Any) -> Callable[[bytes], Any]:
    """`request_type.FromString` that returns a MalformedMessage instead of raising."""
    malformed = MalformedMessage(method, request_type.DESCRIPTOR.full_name)
    from_string = request_type.FromString

    def parse(raw: bytes) -> Any:
        try:
            return from_string(raw)
        except Exception:  # DecodeError, and whatever else a parser may raise on hostile bytes
            return malformed

    return parse


def data_message(chunk: bytes) -> bytes:
    """GetImageResponse(data=chunk), encoded by hand: clients see ordinary protobuf.

    Building the message and serializing it copies the chunk twice; this copies it once.
    """
    return b"".join((_DATA_TAG, varint(len(chunk)), chunk))


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def upload_message_parser(
    method: str, request_type: type[Request]
) -> Callable[[bytes], Request | memoryview | MalformedMessage]:
    """The request parser of an upload RPC (AddImage, StageImageData), whose request has `bytes data = 1`.

    A message that holds only data (every message after the spec) comes back as a view of its bytes: protobuf
    would copy the chunk into the message and again out of it. Bytes that are no such request come back as a
    MalformedMessage (the request stream yields it; never an exception).
    """
    data = request_type.DESCRIPTOR.fields_by_name.get("data")
    if data is None or data.number != 1 or data.type != data.TYPE_BYTES:
        raise TypeError(f"{request_type.DESCRIPTOR.full_name} has no `bytes data = 1` to parse by hand")
    parse_message = request_parser(method, request_type)

    def parse(raw: bytes) -> Request | memoryview | MalformedMessage:
        if raw[:1] == _DATA_TAG:
            length, start = _read_varint(raw, 1)
            if start + length == len(raw):
                return memoryview(raw)[start:]
        result: Request | MalformedMessage = parse_message(raw)
        return result

    return parse


parse_upload_message = upload_message_parser("AddImage", pb.AddImageRequest)
parse_stage_message = upload_message_parser("StageImageData", pb.StageImageDataRequest)


def _read_varint(raw: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and where it ends; a malformed one reads as a length that cannot match."""
    value = shift = 0
    for index in range(position, min(position + 10, len(raw))):
        value |= (raw[index] & 0x7F) << shift
        if raw[index] < 0x80:
            return value, index + 1
        shift += 7
    return -1, len(raw)


def _serialize_download(message: pb.GetImageResponse | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _already_serialized(message: bytes) -> bytes:
    return message


def add_image_service(
    servicer: pb_grpc.ImageServiceServicer, server: grpc.aio.Server, *, max_message_size: int | None = None
) -> None:
    """Registers every RPC of the service, as the generated add_ImageServiceServicer_to_server does, with the
    protobuf codecs except where image data is framed (GetImage) or parsed (AddImage, StageImageData) by
    hand.

    No request deserializer raises, and a MalformedMessage request is refused before the servicer method
    runs. `max_message_size` (the server's send limit): a unary response over it is RESOURCE_EXHAUSTED with
    ErrorInfo rather than grpc's bare refusal after the handler returned.
    """
    bound_grpc_logging()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in _SERVICE.methods:
        make_handler = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        behavior = getattr(servicer, method.name)
        serializer = _RESPONSE_SERIALIZERS.get(
            method.name, getattr(pb, method.output_type.name).SerializeToString
        )
        if not method.client_streaming:
            # A streamed request's MalformedMessage is an item of its stream, for the handler to refuse.
            behavior = _refusing_malformed(
                method.name, behavior, None if method.server_streaming else serializer, max_message_size
            )
            if not method.server_streaming:
                serializer = _already_serialized
        handlers[method.name] = make_handler(
            behavior, request_deserializer=REQUEST_PARSERS[method.name], response_serializer=serializer
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def fail_call(context: grpc.aio.ServicerContext[Any, Any], method: str, error: Exception) -> NoReturn:
    """Ends the call as RpcScope ends every failed one: a GatewayError as its status with ErrorInfo, anything
    else as INTERNAL (logged with its traceback: a gateway bug)."""
    async with RpcScope(context, method):
        raise error
    raise AssertionError("RpcScope aborts a failed call")  # for the type checker: never reached


def _refusing_malformed(
    method: str,
    behavior: Callable[..., Any],
    serialize: Callable[[Any], bytes] | None,
    max_message_size: int | None,
) -> Callable[..., Any]:
    """The servicer method of a unary-request RPC, preceded by refusing a MalformedMessage request so the
    method never sees one. With `serialize` (unary responses) the response leaves as bytes, serialized here
    once instead of by grpc, so its size is known while the call can still fail with a clear status.

    grpc.aio tells a coroutine handler (returns the response, or writes a stream) from an async generator one
    by inspecting the function, so the wrapper must be of the same kind.
    """
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if isinstance(request, MalformedMessage):
                await fail_call(context, method, request.error())
            async for response in behavior(request, context):
                yield response

        return stream
    if not inspect.iscoroutinefunction(behavior):
        raise TypeError(f"{behavior!r}: ImageService handlers must be coroutines or async generators")

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, MalformedMessage):
            await fail_call(context, method, request.error())
        response = await behavior(request, context)
        if serialize is None:
            return response
        try:
            raw = serialize(response)
        except Exception as error:  # the handler returned the wrong type; grpc would answer UNKNOWN
            await fail_call(context, method, error)
        if max_message_size is not None and len(raw) > max_message_size:
            message = (
                f"the {method} response is {len(raw)} bytes, over the {max_message_size}-byte message limit"
            )
            await fail_call(
                context, method, GatewayError(C.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE", message)
            )
        return raw

    return unary


# (client streams, server streams) -> the grpc handler for that kind of RPC.
_HANDLER_KINDS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
# Each RPC's request deserializer; none of them raises (junk comes back as a MalformedMessage).
REQUEST_PARSERS: dict[str, Callable[[bytes], Any]] = {
    method.name: request_parser(method.name, getattr(pb, method.input_type.name))
    for method in _SERVICE.methods
}
REQUEST_PARSERS["AddImage"] = parse_upload_message
REQUEST_PARSERS["StageImageData"] = parse_stage_message
_RESPONSE_SERIALIZERS: dict[str, Callable[[Any], bytes]] = {"GetImage": _serialize_download}
