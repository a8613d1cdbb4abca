"""GetImage's data stream: Glance's image data relayed to the client, verified as it passes."""

from __future__ import annotations

from typing import Any

import grpc

from gateway import convert, wire
from gateway.errors import C, Failure, GatewayError, Operation, invalid_argument
from gateway.glance_client import CallContext, GlanceClient
from gateway.integrity import DataCheck, image_digests
from generated.glance.gateway.v1 import image_service_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


async def send_image(
    glance: GlanceClient, image_id: str, request: pb.GetImageRequest, context: Context, call: CallContext
) -> None:
    """Writes the DownloadHeader, then the data chunks; a whole image is hashed unless skip_verification."""
    if request.offset < 0 or request.limit < 0:
        raise invalid_argument("INVALID_RANGE", "offset and limit must not be negative")
    body = await glance.show_image(image_id, call)
    size = body.get("size")
    if not isinstance(size, int):
        raise no_data(image_id)
    if request.offset and request.offset >= size:
        message = f"offset {request.offset} is past the image's {size} bytes"
        raise GatewayError(C.OUT_OF_RANGE, "OFFSET_PAST_END", message, {"image_id": image_id})
    length = size - request.offset
    if request.limit:
        length = min(length, request.limit)
    whole = length == size
    check = DataCheck(
        Operation.DOWNLOAD,
        expected_size=length,
        expected_digests=image_digests(body) if whole and not request.skip_verification else None,
        size_failure=Failure.UPSTREAM_BROKEN,
    )
    byte_range = None if whole else (request.offset, request.offset + length - 1)
    async with glance.download(image_id, byte_range, call) as download:
        if not download.has_data:
            raise no_data(image_id)
        header = pb.DownloadHeader(
            image=convert.image_to_proto(body, glance.base),
            offset=request.offset,
            length=length,
            verified=check.verifies_digest,
        )
        await context.write(pb.GetImageResponse(header=header))
        async for chunk in download.chunks():
            await check.update(chunk)
            await context.write(wire.data_message(chunk))
        await check.finish()


def no_data(image_id: str) -> GatewayError:
    return GatewayError(
        C.FAILED_PRECONDITION, "IMAGE_HAS_NO_DATA", "the image has no data to download (it is not active)",
        {"image_id": image_id},
    )  # fmt: skip
