"""glance.gateway.v1.ImageService: each RPC as Glance Images API v2 calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway import convert, download, paging, validation
from gateway.config import Settings
from gateway.errors import C, GatewayError, Operation, invalid_argument
from gateway.glance_client import CallContext, GlanceClient, JsonObject
from gateway.integrity import Chunk, DataCheck, upload_digests
from gateway.rpc_scope import RpcScope
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Cleaning up after a failed AddImage: Glance answers these while it unwinds the aborted upload.
RETRYABLE = frozenset({C.INTERNAL, C.UNAVAILABLE, C.DEADLINE_EXCEEDED, C.FAILED_PRECONDITION})
DISCARD_FIRST_DELAY = 0.05
DISCARD_PATIENCE = 20.0
CANCEL_SETTLE_SECONDS = 0.01
_PROTECT = {"op": "replace", "path": "/protected", "value": True}


class ImageService(pb_grpc.ImageServiceServicer):
    def __init__(self, settings: Settings, glance: GlanceClient) -> None:
        self._settings = settings
        self._glance = glance

    async def ListImages(self, request: pb.ListImagesRequest, context: Context) -> pb.ListImagesResponse:
        async with RpcScope(context, "ListImages") as call:
            size = paging.page_size(request.page_size)
            query = convert.list_query(request)
            marker = paging.decode_token(request.page_token, query)
            # One extra image tells whether another page follows, without an empty last page.
            params = [*query, ("limit", str(size + 1))]
            if marker:
                params.append(("marker", marker))
            found = (await self._glance.list_images(params, call)).get("images") or []
            view = request.view or pb.IMAGE_VIEW_BASIC
            response = pb.ListImagesResponse(images=[self._image(body, view) for body in found[:size]])
            if len(found) > size:
                response.next_page_token = paging.encode_token(str(found[size - 1]["id"]), query)
            return response

    async def GetImageMeta(
        self, request: pb.GetImageMetaRequest, context: Context
    ) -> pb.GetImageMetaResponse:
        async with RpcScope(context, "GetImageMeta") as call:
            image_id = self._image_ref(request)
            return pb.GetImageMetaResponse(image=self._image(await self._glance.show_image(image_id, call)))

    # A coroutine that writes (rather than an async generator) so a client's cancel lands right here and the
    # upstream response closes at once, not whenever the abandoned generator is collected.
    async def GetImage(self, request: pb.GetImageRequest, context: Context) -> None:  # type: ignore[override]
        async with RpcScope(context, "GetImage") as call:
            await download.send_image(self._glance, self._image_ref(request), request, context, call)

    async def AddImage(
        self, request_iterator: AsyncIterator[UploadMessage], context: Context
    ) -> pb.AddImageResponse:
        async with RpcScope(context, "AddImage") as call:
            messages = aiter(request_iterator)
            spec = await _first_spec(messages)
            body = convert.create_body(spec)
            store = validation.store_name(spec.store) if spec.store else None
            if spec.HasField("size") and spec.size < 0:
                raise invalid_argument("INVALID_SIZE", "size must not be negative")
            size = spec.size if spec.HasField("size") else None
            check = DataCheck(Operation.UPLOAD, size, upload_digests(spec.expected_sha512, spec.expected_md5))
            first_chunk = await _next_chunk(messages)
            has_data = first_chunk is not None or size is not None or check.verifies_digest
            if has_data and not ("disk_format" in body and "container_format" in body):
                raise invalid_argument(
                    "MISSING_FORMAT",
                    "an image with data needs a type, or both disk_format and container_format",
                )
            if store:
                await self._require_store(store, call)
            # Protection comes last: a protected image could not be deleted if the upload fails.
            protect = has_data and body.pop("protected", False)
            created = await self._glance.create_image(body, call)
            if not has_data:
                return pb.AddImageResponse(image=self._image(created))
            image_id = str(created["id"])
            try:
                data = _verified_body(first_chunk, messages, check)
                await self._glance.upload(image_id, data, size, store, call)
                if protect:
                    final = await self._glance.update_image(image_id, [_PROTECT], call)
                else:
                    final = await self._glance.show_image(image_id, call)
            except BaseException:
                await self._discard(image_id, call)
                raise
            return pb.AddImageResponse(image=self._image(final))

    async def UpdateImage(self, request: pb.UpdateImageRequest, context: Context) -> pb.UpdateImageResponse:
        async with RpcScope(context, "UpdateImage") as call:
            image_id = validation.image_id(request.image_id)
            paths = list(request.update_mask.paths)
            current = (
                await self._glance.show_image(image_id, call) if convert.patch_needs_current(paths) else None
            )
            operations = convert.patch_operations(request.image, paths, current)
            if operations:
                updated = await self._glance.update_image(image_id, operations, call)
            else:
                updated = current or await self._glance.show_image(image_id, call)
            return pb.UpdateImageResponse(image=self._image(updated))

    async def DeleteImage(self, request: pb.DeleteImageRequest, context: Context) -> pb.DeleteImageResponse:
        async with RpcScope(context, "DeleteImage") as call:
            await self._glance.delete_image(validation.image_id(request.image_id), call)
            return pb.DeleteImageResponse()

    def _image(self, body: JsonObject, view: int = pb.IMAGE_VIEW_FULL) -> pb.Image:
        return convert.image_to_proto(body, self._settings.glance_base, view)

    def _image_ref(self, request: pb.GetImageMetaRequest | pb.GetImageRequest) -> str:
        if request.WhichOneof("image") == "image_uri":
            return validation.image_id_from_uri(request.image_uri, self._settings.glance_base)
        return validation.image_id(request.image_id)

    async def _require_store(self, store: str, call: CallContext) -> None:
        # Checked before the image record exists, so an unknown store leaves nothing behind.
        known = await self._glance.store_ids(call)
        if known is None or store not in known:
            raise invalid_argument(
                "UNKNOWN_STORE", f"Glance has no store {store!r} (it has: {', '.join(known or []) or 'none'})"
            )

    async def _discard(self, image_id: str, call: CallContext) -> None:
        """Delete the record of a failed AddImage; runs to the end even when the call was cancelled."""
        try:
            await asyncio.shield(self._delete_with_retries(image_id, call.without_deadline()))
        except asyncio.CancelledError:
            log.warning("cancelled again while deleting image %s after a failed AddImage", image_id)

    async def _delete_with_retries(self, image_id: str, call: CallContext) -> None:
        # Right after an aborted upload, the Glance worker unwinding it still changes the image: a DELETE
        # then can fail on the SQLite lock (a 500), or succeed and be overwritten by the unwinding's revert,
        # leaving a record stuck in "deleted" that can never be removed. So: wait until the image has left
        # "saving", then delete, look again, and retry transient failures, for a bounded time.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DISCARD_PATIENCE
        delay = DISCARD_FIRST_DELAY
        while True:
            try:
                status = (await self._glance.show_image(image_id, call)).get("status")
                if status == "deleted":
                    log.error("image %s is stuck as 'deleted' in Glance after a failed AddImage", image_id)
                    return
                if status != "saving":
                    await self._glance.delete_image(image_id, call)
                    continue  # the next look confirms it is gone
            except GatewayError as error:
                if error.code == C.NOT_FOUND:
                    return
                if error.code not in RETRYABLE:
                    log.warning("could not delete image %s after a failed AddImage: %s", image_id, error)
                    return
            if loop.time() + delay > deadline:
                log.warning(
                    "gave up deleting image %s after a failed AddImage: Glance kept it busy", image_id
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


# AddImage's messages as wire.parse_upload_message gives them: data-only messages are views of their bytes.
UploadMessage = pb.AddImageRequest | memoryview


async def _first_spec(messages: AsyncIterator[UploadMessage]) -> pb.ImageSpec:
    first = await anext(messages, None)
    if not isinstance(first, pb.AddImageRequest) or first.WhichOneof("content") != "spec":
        raise invalid_argument("SPEC_NOT_FIRST", "the first AddImage message must carry the image spec")
    return first.spec


async def _next_chunk(messages: AsyncIterator[UploadMessage]) -> Chunk | None:
    """The next non-empty data chunk, or None at the end of the stream."""
    async for message in messages:
        if isinstance(message, memoryview):
            if message:
                return message
            continue
        if message.WhichOneof("content") != "data":
            raise invalid_argument("SPEC_NOT_FIRST", "only the first AddImage message may carry the spec")
        if message.data:
            return message.data
    return None


async def _verified_body(
    first: Chunk | None, messages: AsyncIterator[UploadMessage], check: DataCheck
) -> AsyncIterator[Chunk]:
    """The upload body, checked as it streams.

    The last chunk is held back until the client's stream has ended and passed every check: a stream of the
    wrong size or digest is cut off before Glance has it all, so Glance never stores wrong data.
    """
    held = first
    if held is not None:
        await check.update(held)
    while (chunk := await _next_chunk(messages)) is not None:
        await check.update(chunk)
        if held is not None:
            yield held
        held = chunk
    await check.finish()
    await _let_a_cancel_land()
    if held is not None:
        yield held


async def _let_a_cancel_land() -> None:
    """grpc.aio can end a cancelled client's request stream like a finished one and cancel the handler a
    moment later (context.cancelled() does not tell them apart); give that cancel time to land before the
    last chunk goes, so a cancelled upload never completes."""
    await asyncio.sleep(CANCEL_SETTLE_SECONDS)
