"""glance.gateway.v1.ImageService: each RPC as Glance Images API v2 calls."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway import convert, download, paging, validation
from gateway.admission import StreamLimiter
from gateway.config import Settings
from gateway.glance_client import GlanceClient, JsonObject
from gateway.rpc_scope import RpcScope
from gateway.upload import UploadMessage, Uploads
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class ImageService(pb_grpc.ImageServiceServicer):
    def __init__(self, settings: Settings, glance: GlanceClient, uploads: Uploads) -> None:
        self._settings = settings
        self._glance = glance
        self._uploads = uploads
        # GetImage and AddImage together: each holds an upstream connection and data in flight.
        self._streams = StreamLimiter(settings.max_streams)

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
        async with RpcScope(context, "GetImage") as call, self._streams.admit():
            await download.send_image(
                self._glance, self._settings, self._image_ref(request), request, context, call
            )

    async def AddImage(
        self, request_iterator: AsyncIterator[UploadMessage], context: Context
    ) -> pb.AddImageResponse:
        async with RpcScope(context, "AddImage") as call, self._streams.admit():
            image = await self._uploads.add_image(request_iterator, call)
            return pb.AddImageResponse(image=self._image(image))

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

    async def AddImageTag(self, request: pb.AddImageTagRequest, context: Context) -> pb.AddImageTagResponse:
        async with RpcScope(context, "AddImageTag") as call:
            image_id, tag = validation.image_id(request.image_id), validation.path_tag(request.tag)
            await self._glance.add_tag(image_id, tag, call)
            return pb.AddImageTagResponse()

    async def RemoveImageTag(
        self, request: pb.RemoveImageTagRequest, context: Context
    ) -> pb.RemoveImageTagResponse:
        async with RpcScope(context, "RemoveImageTag") as call:
            image_id, tag = validation.image_id(request.image_id), validation.path_tag(request.tag)
            await self._glance.remove_tag(image_id, tag, call)
            return pb.RemoveImageTagResponse()

    def _image(self, body: JsonObject, view: int = pb.IMAGE_VIEW_FULL) -> pb.Image:
        return convert.image_to_proto(body, self._settings.glance_base, view)

    def _image_ref(self, request: pb.GetImageMetaRequest | pb.GetImageRequest) -> str:
        if request.WhichOneof("image") == "image_uri":
            return validation.image_id_from_uri(request.image_uri, self._settings.glance_base)
        return validation.image_id(request.image_id)
