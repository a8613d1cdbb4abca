"""The image RPCs: list, metadata, download, upload, update, delete, and one tag at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway import convert, download, paging, validation
from gateway.rpc_group import Context, RpcGroup
from gateway.rpc_scope import RpcScope
from gateway.upload import UploadMessage
from generated.glance.gateway.v1 import image_service_pb2 as pb


class ImageRpcs(RpcGroup):
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
