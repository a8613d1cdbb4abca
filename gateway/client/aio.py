"""AsyncClient: the Client API for asyncio applications (same methods, awaited; async iterators)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

from . import ops
from .errors import from_rpc_error
from .meta import ImageMeta, image_spec, image_to_dict
from .sync import CHANNEL_OPTIONS, ImageData, call_metadata, channel_credentials, data_chunks
from .transfer import CHUNK_SIZE, Download, Upload, Verify, stage_spec

R = TypeVar("R")

AsyncImageData = ImageData | AsyncIterable[bytes]


async def _async_chunks(image_data: AsyncImageData) -> AsyncIterator[bytes | bytearray | memoryview]:
    if isinstance(image_data, AsyncIterable):
        async for chunk in image_data:
            yield chunk
    elif hasattr(image_data, "read"):
        # A file read blocks: do it off the event loop.
        while piece := await asyncio.to_thread(image_data.read, CHUNK_SIZE):
            yield piece
    else:
        for buffer in data_chunks(image_data):
            yield buffer


async def _framed(upload: Upload, spec: Any, image_data: AsyncImageData) -> AsyncIterator[Any]:
    yield spec
    async for chunk in _async_chunks(image_data):
        for message in upload.data(chunk):
            yield message
    yield upload.finish()


class AsyncClient:
    """The asyncio flavour of `Client`: same constructor, `async with`, awaited methods; get_images,
    get_images_detailed, watch_import and get_image's chunks are async iterators. Data for add_image and
    stage_image_data may also be an async iterable of chunks."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 50051,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        target = f"{host}:{port}"
        credentials = channel_credentials(tls, root_certificates)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.ImageServiceStub(self._channel)
        self._metadata = call_metadata(token)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _run(self, op: ops.Op[R]) -> R:
        try:
            rpc = getattr(self._stub, op.rpc)
            response = await rpc(op.request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return op.convert(response)

    def get_images(self, **filters: Any) -> AsyncIterator[ImageMeta]:
        """See Client.get_images."""
        # Built here, not in the generator, so a bad filter fails at the call rather than at the first item.
        return self._list(ops.list_request(filters, detailed=False))

    def get_images_detailed(self, **filters: Any) -> AsyncIterator[ImageMeta]:
        """See Client.get_images_detailed."""
        return self._list(ops.list_request(filters, detailed=True))

    async def _list(self, request: pb.ListImagesRequest) -> AsyncIterator[ImageMeta]:
        detailed = request.view == pb.IMAGE_VIEW_FULL
        while True:
            page = await self._run(ops.list_page(request))
            for image in ops.page_images(page, detailed):
                yield image
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def get_image_meta(self, image_id_or_uri: str) -> ImageMeta:
        return await self._run(ops.get_image_meta(image_id_or_uri))

    async def get_image(
        self, image_id_or_uri: str, *, verify: Verify = "gateway", max_resumes: int = 3, offset: int = 0
    ) -> tuple[ImageMeta, AsyncIterator[bytes]]:
        """See Client.get_image; the chunks are an async iterator."""
        download = Download(image_id_or_uri, verify, max_resumes, offset)
        call = self._stub.GetImage(download.request(), metadata=self._metadata, timeout=self._timeout)
        try:
            meta = download.on_header(await self._first(call))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return meta, self._chunks(download, call)

    @staticmethod
    async def _first(call: Any) -> Any:
        message = await call.read()
        return None if message is grpc.aio.EOF else message

    async def _chunks(self, download: Download, call: Any) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    if call is None:
                        call = self._stub.GetImage(
                            download.request(), metadata=self._metadata, timeout=self._timeout
                        )
                        download.on_header(await self._first(call))
                    # read(), not async for: the header was taken with read() and grpc forbids mixing them.
                    while (message := await call.read()) is not grpc.aio.EOF:
                        if data := download.on_data(message):
                            yield data
                    download.on_end()
                    return
                except grpc.RpcError as err:
                    download.on_error(err)
                    call = None
        finally:
            if call is not None:
                call.cancel()

    async def add_image(
        self, image_meta: Mapping[str, Any], image_data: AsyncImageData | None = None
    ) -> ImageMeta:
        """See Client.add_image."""
        if image_data is None:
            call = self._stub.AddImage(
                iter([ops.add_queued_image(image_meta)]), metadata=self._metadata, timeout=self._timeout
            )
        else:
            upload = Upload(pb.AddImageRequest)
            spec = upload.spec(image_spec(image_meta, ends_with_finish=True))
            call = self._stub.AddImage(
                _framed(upload, spec, image_data), metadata=self._metadata, timeout=self._timeout
            )
        try:
            response = await call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return image_to_dict(response.image)

    async def update_image(self, image_id: str, image_meta: Mapping[str, Any]) -> ImageMeta:
        return await self._run(ops.update_image(image_id, image_meta))

    async def delete_image(self, image_id: str) -> None:
        await self._run(ops.delete_image(image_id))

    async def add_tag(self, image_id: str, tag: str) -> None:
        await self._run(ops.add_tag(image_id, tag))

    async def remove_tag(self, image_id: str, tag: str) -> None:
        await self._run(ops.remove_tag(image_id, tag))

    async def add_member(self, image_id: str, member_id: str) -> dict[str, Any]:
        return await self._run(ops.add_member(image_id, member_id))

    async def get_members(self, image_id: str) -> list[dict[str, Any]]:
        return await self._run(ops.get_members(image_id))

    async def get_member(self, image_id: str, member_id: str) -> dict[str, Any]:
        return await self._run(ops.get_member(image_id, member_id))

    async def update_member(self, image_id: str, member_id: str, status: str) -> dict[str, Any]:
        return await self._run(ops.update_member(image_id, member_id, status))

    async def delete_member(self, image_id: str, member_id: str) -> None:
        await self._run(ops.delete_member(image_id, member_id))

    async def get_stores(self) -> list[dict[str, Any]]:
        return await self._run(ops.get_stores())

    async def delete_image_from_store(self, image_id: str, store_id: str) -> None:
        await self._run(ops.delete_image_from_store(image_id, store_id))

    async def stage_image_data(
        self, image_id: str, image_data: AsyncImageData, size: int | None = None
    ) -> ImageMeta:
        upload = Upload(pb.StageImageDataRequest)
        requests = _framed(upload, upload.spec(stage_spec(image_id, size)), image_data)
        try:
            response = await self._stub.StageImageData(
                requests, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return image_to_dict(response.image)

    async def import_image(self, image_id: str, method: str = "glance-direct", **options: Any) -> None:
        await self._run(ops.import_image(image_id, method, **options))

    async def watch_import(self, image_id: str) -> AsyncIterator[dict[str, Any]]:
        call = self._stub.WatchImageImport(
            ops.watch_import_request(image_id), metadata=self._metadata, timeout=self._timeout
        )
        try:
            async for message in call:
                yield ops.import_progress(message)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def deactivate_image(self, image_id: str) -> None:
        await self._run(ops.deactivate_image(image_id))

    async def reactivate_image(self, image_id: str) -> None:
        await self._run(ops.reactivate_image(image_id))

    async def get_quota_usage(self) -> dict[str, dict[str, int]]:
        return await self._run(ops.get_quota_usage())
