"""Client: the classic Glance client API over the gateway's gRPC contract, blocking."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

from . import ops
from .errors import from_rpc_error
from .meta import ImageMeta, image_spec, image_to_dict
from .transfer import CHUNK_SIZE, BinaryReader, Download, Upload, Verify, stage_spec

R = TypeVar("R")

ImageData = bytes | bytearray | memoryview | BinaryReader | Iterable[bytes]

# Downloads arrive in the gateway's chunks, which an operator may configure above gRPC's 4 MiB default.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def channel_credentials(tls: bool, root_certificates: bytes | None) -> grpc.ChannelCredentials | None:
    return grpc.ssl_channel_credentials(root_certificates) if tls or root_certificates else None


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("x-auth-token", token),) if token else ()


def data_chunks(image_data: ImageData) -> Iterator[bytes | bytearray | memoryview]:
    """bytes, a binary file object or an iterable of chunks → chunks, read lazily."""
    if isinstance(image_data, bytes | bytearray | memoryview):
        yield image_data
    elif hasattr(image_data, "read"):
        while chunk := image_data.read(CHUNK_SIZE):
            yield chunk
    else:
        yield from image_data


class Client:
    """A gateway client: `Client("host", 50051, token=..., tls=...)`, best used as a context manager.

    `token` is sent as the "x-auth-token" metadata of every call; `tls=True` (or `root_certificates`, PEM
    bytes) opens a TLS channel; `timeout` (seconds) is the deadline of every call, downloads and uploads
    included. Failures raise `gateway.client.ClientError` subclasses.
    """

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
            grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.ImageServiceStub(self._channel)
        self._metadata = call_metadata(token)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, op: ops.Op[R]) -> R:
        try:
            response = getattr(self._stub, op.rpc)(op.request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return op.convert(response)

    # -- the classic API --

    def get_images(self, **filters: Any) -> Iterator[ImageMeta]:
        """Every image matching `filters`, brief (id, name, status, size, disk_format, container_format,
        checksum, uri), fetched a page at a time as the iterator advances.

        Filters: name, status ("active", ...), visibility ("public", "private", "shared", "community"),
        is_public (bool, the classic spelling of visibility), owner, tags (a list: every tag must match),
        disk_format, container_format, size_min, size_max (bytes), properties (dict of exact values),
        hidden, protected (bool), member_status ("pending", "accepted", "rejected", "all"), sort_key ("name",
        "status", "size", "id", "created_at", "updated_at", ...), sort_dir ("asc" or "desc") and page_size.
        """
        # Built here, not in the generator, so a bad filter fails at the call rather than at the first item.
        return self._list(ops.list_request(filters, detailed=False))

    def get_images_detailed(self, **filters: Any) -> Iterator[ImageMeta]:
        """Like get_images, with every field of each image."""
        return self._list(ops.list_request(filters, detailed=True))

    def _list(self, request: pb.ListImagesRequest) -> Iterator[ImageMeta]:
        detailed = request.view == pb.IMAGE_VIEW_FULL
        while True:
            page = self._run(ops.list_page(request))
            yield from ops.page_images(page, detailed)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def get_image_meta(self, image_id_or_uri: str) -> ImageMeta:
        """One image's metadata, by id or by the `uri` a listing gives."""
        return self._run(ops.get_image_meta(image_id_or_uri))

    def get_image(
        self, image_id_or_uri: str, *, verify: Verify = "gateway", max_resumes: int = 3, offset: int = 0
    ) -> tuple[ImageMeta, Iterator[bytes]]:
        """(metadata, iterator of data chunks). The data is verified against the image's hash (by the gateway,
        or by the client with verify="client"; a mismatch raises DataCorrupt at the end), and resumed from
        where it broke on UNAVAILABLE, at most `max_resumes` times. `offset`: start there (a resumed file);
        such a partial read needs verify="none", the caller checking the whole file itself."""
        download = Download(image_id_or_uri, verify, max_resumes, offset)
        try:
            call = self._stub.GetImage(download.request(), metadata=self._metadata, timeout=self._timeout)
            meta = download.on_header(next(call, None))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return meta, self._chunks(download, call)

    def _chunks(self, download: Download, call: Any) -> Iterator[bytes]:
        try:
            while True:
                try:
                    if call is None:
                        call = self._stub.GetImage(
                            download.request(), metadata=self._metadata, timeout=self._timeout
                        )
                        download.on_header(next(call, None))
                    for message in call:
                        if data := download.on_data(message):
                            yield data
                    download.on_end()
                    return
                except grpc.RpcError as err:
                    download.on_error(err)
                    call = None
        finally:
            if call is not None:
                call.cancel()  # a caller that stops early ends the download

    def add_image(self, image_meta: Mapping[str, Any], image_data: ImageData | None = None) -> ImageMeta:
        """Creates an image (see `gateway.client.meta.image_spec` for the metadata keys) and returns its
        metadata, with its new "id". `image_data` (bytes, a binary file object or an iterable of chunks) is
        streamed with its SHA-512; without it the image is "queued"."""
        if image_data is None:
            requests: Iterator[pb.AddImageRequest] = iter([ops.add_queued_image(image_meta)])
        else:
            upload = Upload(pb.AddImageRequest)
            spec = upload.spec(image_spec(image_meta, ends_with_finish=True))
            requests = self._framed(upload, spec, image_data)
        try:
            response = self._stub.AddImage(requests, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return image_to_dict(response.image)

    @staticmethod
    def _framed(upload: Upload, spec: Any, image_data: ImageData) -> Iterator[Any]:
        yield spec
        for chunk in data_chunks(image_data):
            yield from upload.data(chunk)
        yield upload.finish()

    def update_image(self, image_id: str, image_meta: Mapping[str, Any]) -> ImageMeta:
        """Changes exactly the keys given (see `gateway.client.meta.update_request`); returns the image."""
        return self._run(ops.update_image(image_id, image_meta))

    def delete_image(self, image_id: str) -> None:
        self._run(ops.delete_image(image_id))

    # -- beyond the seed --

    def add_tag(self, image_id: str, tag: str) -> None:
        self._run(ops.add_tag(image_id, tag))

    def remove_tag(self, image_id: str, tag: str) -> None:
        self._run(ops.remove_tag(image_id, tag))

    def add_member(self, image_id: str, member_id: str) -> dict[str, Any]:
        """Shares a (visibility "shared") image with a project; returns the member, status "pending"."""
        return self._run(ops.add_member(image_id, member_id))

    def get_members(self, image_id: str) -> list[dict[str, Any]]:
        return self._run(ops.get_members(image_id))

    def get_member(self, image_id: str, member_id: str) -> dict[str, Any]:
        return self._run(ops.get_member(image_id, member_id))

    def update_member(self, image_id: str, member_id: str, status: str) -> dict[str, Any]:
        """status: "pending", "accepted" or "rejected"."""
        return self._run(ops.update_member(image_id, member_id, status))

    def delete_member(self, image_id: str, member_id: str) -> None:
        self._run(ops.delete_member(image_id, member_id))

    def get_stores(self) -> list[dict[str, Any]]:
        """Glance's stores: dicts with id, description, is_default, read_only."""
        return self._run(ops.get_stores())

    def delete_image_from_store(self, image_id: str, store_id: str) -> None:
        self._run(ops.delete_image_from_store(image_id, store_id))

    def stage_image_data(self, image_id: str, image_data: ImageData, size: int | None = None) -> ImageMeta:
        """Stages data for a queued image (then import_image(image_id, "glance-direct"))."""
        upload = Upload(pb.StageImageDataRequest)
        requests = self._framed(upload, upload.spec(stage_spec(image_id, size)), image_data)
        try:
            response = self._stub.StageImageData(requests, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return image_to_dict(response.image)

    def import_image(self, image_id: str, method: str = "glance-direct", **options: Any) -> None:
        """Starts an import: method "glance-direct", "web-download" (uri=...) or "copy-image"; options
        uri, stores (list), all_stores, all_stores_must_succeed. Follow it with watch_import."""
        self._run(ops.import_image(image_id, method, **options))

    def watch_import(self, image_id: str) -> Iterator[dict[str, Any]]:
        """The import's progress until it ends: dicts with image, state, importing_to_stores and
        failed_stores."""
        request = ops.watch_import_request(image_id)
        try:
            call = self._stub.WatchImageImport(request, metadata=self._metadata, timeout=self._timeout)
            for message in call:
                yield ops.import_progress(message)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def deactivate_image(self, image_id: str) -> None:
        self._run(ops.deactivate_image(image_id))

    def reactivate_image(self, image_id: str) -> None:
        self._run(ops.reactivate_image(image_id))

    def get_quota_usage(self) -> dict[str, dict[str, int]]:
        """{quota name: {"usage": n, "limit": n}}; empty when Glance enforces no per-project limits."""
        return self._run(ops.get_quota_usage())
