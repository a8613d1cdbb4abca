"""How ImageService's messages go on the wire: the generated codecs, except image data, framed by hand."""

from __future__ import annotations

from typing import Any

import grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ImageService"].full_name
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


def add_image_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Registers the servicer like the generated add_ImageServiceServicer_to_server, with GetImage's
    serializer also taking messages already framed by `data_message`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "ListImages": grpc.unary_unary_rpc_method_handler(
            servicer.ListImages,
            request_deserializer=pb.ListImagesRequest.FromString,
            response_serializer=pb.ListImagesResponse.SerializeToString,
        ),
        "GetImageMeta": grpc.unary_unary_rpc_method_handler(
            servicer.GetImageMeta,
            request_deserializer=pb.GetImageMetaRequest.FromString,
            response_serializer=pb.GetImageMetaResponse.SerializeToString,
        ),
        "GetImage": grpc.unary_stream_rpc_method_handler(
            servicer.GetImage,
            request_deserializer=pb.GetImageRequest.FromString,
            response_serializer=_serialize_download,
        ),
        "AddImage": grpc.stream_unary_rpc_method_handler(
            servicer.AddImage,
            request_deserializer=parse_upload_message,
            response_serializer=pb.AddImageResponse.SerializeToString,
        ),
        "UpdateImage": grpc.unary_unary_rpc_method_handler(
            servicer.UpdateImage,
            request_deserializer=pb.UpdateImageRequest.FromString,
            response_serializer=pb.UpdateImageResponse.SerializeToString,
        ),
        "DeleteImage": grpc.unary_unary_rpc_method_handler(
            servicer.DeleteImage,
            request_deserializer=pb.DeleteImageRequest.FromString,
            response_serializer=pb.DeleteImageResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
