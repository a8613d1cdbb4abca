"""GetImage's data stream: Glance's image data relayed to the client, verified as it passes."""

from __future__ import annotations

from typing import Any

import grpc

from gateway import call_record, convert, wire
from gateway.call_context import CallContext
from gateway.config import Settings
from gateway.errors import C, Failure, GatewayError, Operation, invalid_argument
from gateway.glance_client import GlanceClient
from gateway.integrity import DataCheck, image_digests
from gateway.stall import StallWatch
from generated.glance.gateway.v1 import image_service_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


async def send_image(
    glance: GlanceClient,
    settings: Settings,
    image_id: str,
    request: pb.GetImageRequest,
    context: Context,
    call: CallContext,
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
    byte_range = None if whole else (request.offset, request.offset + length - 1)
    # The stall watch is inside the download: its CLIENT_STALLED leaves through the download's exit, which
    # closes Glance's response at once and frees the Glance worker that was blocked sending to us. The check
    # owns the hashing thread, which ends with the block however the stream ends.
    async with (
        DataCheck(
            Operation.DOWNLOAD,
            expected_size=length,
            expected_digests=image_digests(body) if whole and not request.skip_verification else None,
            size_failure=Failure.UPSTREAM_BROKEN,
        ) as check,
        glance.download(image_id, byte_range, call) as download,
        StallWatch(
            settings.stall_timeout,
            Operation.DOWNLOAD,
            f"the client took no data for {settings.stall_timeout:g} s, so the gateway ended the download "
            "to free Glance; resume with offset = the offset asked plus the bytes received",
            {"image_id": image_id},
        ) as watch,
    ):
        if not download.has_data:
            raise no_data(image_id)
        header = pb.DownloadHeader(
            image=convert.image_to_proto(body, glance.base),
            offset=request.offset,
            length=length,
            verified=check.verifies_digest,
        )
        await watch.guard(context.write(pb.GetImageResponse(header=header)))
        sent = 0  # counted here, noted once: the call record is not touched per chunk
        try:
            async for chunk in download.chunks():
                await check.update(chunk)
                await watch.guard(context.write(wire.data_message(chunk)))
                sent += len(chunk)
            await check.finish()
        finally:
            call_record.add_bytes(sent=sent)


def no_data(image_id: str) -> GatewayError:
    return GatewayError(
        C.FAILED_PRECONDITION, "IMAGE_HAS_NO_DATA", "the image has no data to download (it is not active)",
        {"image_id": image_id},
    )  # fmt: skip
