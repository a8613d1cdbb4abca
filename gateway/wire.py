"""How ImageService's messages go on the wire: the generated codecs, except image data, framed by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

_SERVICE = pb.DESCRIPTOR.services_by_name["ImageService"]
SERVICE_NAME: str = _SERVICE.full_name
# GetImageResponse.data is field 1, wire type 2 (length-delimited): tag byte (1 << 3) | 2.
_DATA_TAG = b"\x0a"


def data_message(chunk: bytes) -> bytes:
    """GetImageResponse(data=chunk), encoded by hand: clients see ordinary protobuf.

    Building the message and serializing it copies the chunk twice; this copies it once.
    """
    return b"".join((_DATA_TAG, _varint(len(chunk)), chunk))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def parse_upload_message(raw: bytes) -> pb.AddImageRequest | memoryview:
    """An AddImageRequest off the wire. One that holds only data (every message after the spec) comes back as
    a view of its bytes: protobuf would copy the chunk into the message and again out of it."""
    if raw[:1] == _DATA_TAG:
        length, start = _read_varint(raw, 1)
        if start + length == len(raw):
            return memoryview(raw)[start:]
    return pb.AddImageRequest.FromString(raw)


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


def add_image_service(servicer: pb_grpc.ImageServiceServicer, server: grpc.aio.Server) -> None:
    """Registers every RPC of the service, as the generated add_ImageServiceServicer_to_server does, with the
    protobuf codecs except where image data is framed (GetImage) or parsed (AddImage) by hand."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in _SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        make_handler = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make_handler(
            getattr(servicer, method.name),
            request_deserializer=_REQUEST_PARSERS.get(method.name, request_type.FromString),
            response_serializer=_RESPONSE_SERIALIZERS.get(method.name, response_type.SerializeToString),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


# (client streams, server streams) -> the grpc handler for that kind of RPC.
_HANDLER_KINDS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_REQUEST_PARSERS: dict[str, Callable[[bytes], Any]] = {"AddImage": parse_upload_message}
_RESPONSE_SERIALIZERS: dict[str, Callable[[Any], bytes]] = {"GetImage": _serialize_download}
