"""Client and AsyncClient against a fake ImageService served in-process over a real gRPC channel.

The fake stands in for the gateway because the faults tested here (a stream broken with UNAVAILABLE at a
chosen byte, data that does not match its hash) cannot be produced on demand by the real one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import trustme
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.client import AsyncClient, Client, DataCorrupt, NotFound, ServiceUnavailable
from gateway.client.transfer import CHUNK_SIZE
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

DATA = os.urandom(10_000)
FAKE_CHUNK = 1000
IMAGE_ID = "7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77"


class FakeImageService(pb_grpc.ImageServiceServicer):
    """GetImage serves DATA in FAKE_CHUNK pieces and breaks the first `breaks` calls with UNAVAILABLE after
    `break_after` bytes; AddImage/StageImageData record what they got; ListImages pages 2 images at a time."""

    def __init__(self) -> None:
        self.served = DATA  # what GetImage sends (differs from DATA to fake corruption)
        self.breaks = 0
        self.break_after = 0
        self.get_requests: list[pb.GetImageRequest] = []
        self.uploads: list[list[Any]] = []
        self.list_requests: list[pb.ListImagesRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.images = [pb.Image(id=f"id-{n}", name=f"image-{n}", size=n, owner="p") for n in range(5)]

    def image(self) -> pb.Image:
        return pb.Image(
            id=IMAGE_ID,
            size=len(DATA),
            os_hash_algo="sha512",
            os_hash_value=hashlib.sha512(DATA).hexdigest(),
            checksum=hashlib.md5(DATA).hexdigest(),
        )

    def GetImage(
        self, request: pb.GetImageRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetImageResponse]:
        self.get_requests.append(request)
        offset = request.offset
        whole = offset == 0 and request.limit == 0
        header = pb.DownloadHeader(
            image=self.image(),
            offset=offset,
            length=len(DATA) - offset,
            verified=whole and not request.skip_verification,
        )
        yield pb.GetImageResponse(header=header)
        sent = 0
        for start in range(offset, len(self.served), FAKE_CHUNK):
            if self.breaks and sent >= self.break_after:
                self.breaks -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: connection lost")
            chunk = self.served[start : start + FAKE_CHUNK]
            sent += len(chunk)
            yield pb.GetImageResponse(data=chunk)

    def AddImage(self, request_iterator: Iterator[pb.AddImageRequest], context: grpc.ServicerContext) -> Any:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        messages = list(request_iterator)
        self.uploads.append(messages)
        return pb.AddImageResponse(image=pb.Image(id=IMAGE_ID, name=messages[0].spec.name))

    def StageImageData(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self.uploads.append(list(request_iterator))
        return pb.StageImageDataResponse(image=pb.Image(id=IMAGE_ID, status=pb.IMAGE_STATUS_UPLOADING))

    def ListImages(self, request: pb.ListImagesRequest, context: grpc.ServicerContext) -> Any:
        self.list_requests.append(request)
        start = int(request.page_token or 0)
        token = str(start + 2) if start + 2 < len(self.images) else ""
        return pb.ListImagesResponse(images=self.images[start : start + 2], next_page_token=token)

    def GetImageMeta(self, request: pb.GetImageMetaRequest, context: grpc.ServicerContext) -> Any:
        # A gateway-style failure: the status with an ErrorInfo carrying the reason and Glance's request id.
        info = error_details_pb2.ErrorInfo(
            reason="IMAGE_NOT_FOUND",
            domain="glance-grpc-gateway",
            metadata={"request_id": "req-42", "image_id": request.image_id},
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="no such image", details=[detail])
        context.abort_with_status(rpc_status.to_status(status))


@pytest.fixture
def fake() -> Iterator[tuple[FakeImageService, int]]:
    service = FakeImageService()  # type: ignore[abstract]  # only the RPCs these tests call
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ImageServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, port
    finally:
        server.stop(None)


def download(port: int, **options: Any) -> tuple[dict[str, Any], bytes]:
    with Client("127.0.0.1", port) as client:
        meta, chunks = client.get_image(IMAGE_ID, **options)
        return meta, b"".join(chunks)


def test_gateway_verified_download_asks_no_skip(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    meta, data = download(port)
    assert data == DATA and meta["id"] == IMAGE_ID
    assert [(r.offset, r.skip_verification) for r in service.get_requests] == [(0, False)]


def test_client_verified_download_skips_gateway_hash(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    assert download(port, verify="client")[1] == DATA
    assert [(r.offset, r.skip_verification) for r in service.get_requests] == [(0, True)]


def test_client_verified_download_resumes_at_the_offset(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    service.breaks, service.break_after = 2, 3000
    assert download(port, verify="client")[1] == DATA
    # Each resume starts where the bytes received so far end (all of them hashed by the client).
    assert [r.offset for r in service.get_requests] == [0, 3000, 6000]


def test_gateway_verified_download_that_resumes_is_hashed_whole_by_the_client(
    fake: tuple[FakeImageService, int],
) -> None:
    service, port = fake
    service.breaks, service.break_after = 1, 4000
    _, data = download(port)
    assert data == DATA  # every byte yielded once, none twice
    # The gateway's check died with the first call: the client re-reads the 4000 bytes it already yielded
    # (hashing, not yielding them), so one hash covers the whole image.
    assert [(r.offset, r.skip_verification) for r in service.get_requests] == [(0, False), (0, True)]


def test_a_read_from_an_offset_gets_the_rest_and_resumes_past_it(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    service.breaks, service.break_after = 1, 2000  # breaks 2000 bytes into the first call
    assert download(port, offset=1000, verify="none")[1] == DATA[1000:]
    assert [(r.offset, r.skip_verification) for r in service.get_requests] == [(1000, True), (3000, True)]


@pytest.mark.parametrize("verify", ["gateway", "client"])
def test_a_read_from_an_offset_cannot_be_verified_by_the_client(verify: str) -> None:
    # Glance publishes whole-image hashes only; refused before any call (no server needed).
    with Client("127.0.0.1", 1) as client, pytest.raises(ValueError):
        client.get_image(IMAGE_ID, offset=10, verify=verify)  # type: ignore[arg-type]


def test_resumed_download_with_corrupt_data_is_data_corrupt(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    service.served = DATA[:-1] + bytes([DATA[-1] ^ 1])
    service.breaks, service.break_after = 1, 5000
    with pytest.raises(DataCorrupt) as caught:
        download(port)
    assert caught.value.code == grpc.StatusCode.DATA_LOSS


def test_client_verify_catches_corrupt_data(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    service.served = bytes([DATA[0] ^ 1]) + DATA[1:]
    with pytest.raises(DataCorrupt):
        download(port, verify="client")
    # Without any check the same bytes come through: the DataCorrupt above is the client's own hash.
    assert download(port, verify="none")[1] == service.served


def test_resumes_are_bounded(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    service.breaks, service.break_after = 5, 1000
    with pytest.raises(ServiceUnavailable) as caught:
        download(port, max_resumes=2)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(service.get_requests) == 3


def test_async_download_resumes(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    service.breaks, service.break_after = 2, 2000

    async def run() -> bytes:
        async with AsyncClient("127.0.0.1", port) as client:
            _, chunks = await client.get_image(IMAGE_ID)
            return b"".join([chunk async for chunk in chunks])

    assert asyncio.run(run()) == DATA
    assert [(r.offset, r.skip_verification) for r in service.get_requests] == [
        (0, False),
        (0, True),
        (2000, True),
    ]


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(-1 if size is None else size)
        return super().read(size)


def check_upload(messages: list[Any], data: bytes) -> None:
    assert messages[0].WhichOneof("content") == "spec"
    assert messages[0].spec.ends_with_finish
    assert list(messages[0].spec.finish_digests) == [pb.DIGEST_ALGORITHM_SHA512]
    body = messages[1:-1]
    assert all(m.WhichOneof("content") == "data" and 0 < len(m.data) <= CHUNK_SIZE for m in body)
    assert b"".join(m.data for m in body) == data
    assert messages[-1].finish.sha512 == hashlib.sha512(data).hexdigest()


def test_add_image_streams_a_file_in_chunks_with_its_digest(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    data = os.urandom(2 * CHUNK_SIZE + 17)
    source = CountingFile(data)
    with Client("127.0.0.1", port, token="secret") as client:
        new = client.add_image({"name": "n", "type": "raw"}, source)
    assert new["id"] == IMAGE_ID
    check_upload(service.uploads[0], data)
    assert all(size == CHUNK_SIZE for size in source.reads)  # never read whole
    assert service.metadata[0]["x-auth-token"] == "secret"


def test_add_image_accepts_bytes_and_iterables(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    big = os.urandom(CHUNK_SIZE + 1)
    with Client("127.0.0.1", port) as client:
        client.add_image({"name": "bytes"}, big)
        client.add_image({"name": "chunks"}, iter([b"ab", b"", b"cd"]))
        client.add_image({"name": "queued"})
    check_upload(service.uploads[0], big)
    check_upload(service.uploads[1], b"abcd")
    # No data: the spec alone, without a finish, makes a "queued" image.
    assert [m.WhichOneof("content") for m in service.uploads[2]] == ["spec"]
    assert not service.uploads[2][0].spec.ends_with_finish


def test_async_add_image_and_stage_from_async_iterable(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake

    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"x" * 10, b"y" * 20):
            yield piece

    async def run() -> None:
        async with AsyncClient("127.0.0.1", port) as client:
            await client.add_image({"name": "a"}, chunks())
            staged = await client.stage_image_data(IMAGE_ID, io.BytesIO(b"staged"), size=6)
            assert staged["status"] == "uploading"

    asyncio.run(run())
    check_upload(service.uploads[0], b"x" * 10 + b"y" * 20)
    check_upload(service.uploads[1], b"staged")
    assert service.uploads[1][0].spec.image_id == IMAGE_ID and service.uploads[1][0].spec.size == 6


def test_listing_fetches_pages_lazily(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake
    with Client("127.0.0.1", port) as client:
        images = client.get_images(owner="p")
        assert next(images)["id"] == "id-0"
        assert len(service.list_requests) == 1  # one page so far
        rest = [image["id"] for image in images]
    assert rest == ["id-1", "id-2", "id-3", "id-4"]
    assert [r.page_token for r in service.list_requests] == ["", "2", "4"]
    assert all(r.owner == "p" and r.view == pb.IMAGE_VIEW_BASIC for r in service.list_requests)
    with Client("127.0.0.1", port) as client, pytest.raises(TypeError, match="colour"):
        client.get_images(colour="red")  # at the call, before any iteration


def test_async_listing_detailed(fake: tuple[FakeImageService, int]) -> None:
    service, port = fake

    async def run() -> list[str]:
        async with AsyncClient("127.0.0.1", port) as client:
            return [image["name"] async for image in client.get_images_detailed()]

    assert asyncio.run(run()) == [f"image-{n}" for n in range(5)]
    assert all(r.view == pb.IMAGE_VIEW_FULL for r in service.list_requests)


def test_errors_carry_reason_and_request_id(fake: tuple[FakeImageService, int]) -> None:
    _, port = fake
    with Client("127.0.0.1", port) as client, pytest.raises(NotFound) as caught:
        client.get_image_meta(IMAGE_ID)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert (caught.value.request_id, caught.value.details) == ("req-42", "no such image")

    async def run() -> None:
        async with AsyncClient("127.0.0.1", port) as client:
            await client.get_image_meta(IMAGE_ID)

    with pytest.raises(NotFound) as async_caught:
        asyncio.run(run())
    assert (async_caught.value.reason, async_caught.value.request_id) == ("IMAGE_NOT_FOUND", "req-42")


def test_tls_with_root_certificates_and_token() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    service = FakeImageService()  # type: ignore[abstract]  # only the RPCs these tests call
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ImageServiceServicer_to_server(service, server)
    credentials = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())]
    )
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    try:
        with Client("localhost", port, tls=True, root_certificates=ca.cert_pem.bytes(), token="t") as client:
            assert client.add_image({"name": "over-tls"}, b"abc")["id"] == IMAGE_ID

        async def run() -> str:
            async with AsyncClient("localhost", port, tls=True, root_certificates=ca.cert_pem.bytes()) as c:
                return str((await c.add_image({"name": "async-tls"}))["id"])

        assert asyncio.run(run()) == IMAGE_ID
        # A client that does not trust the CA cannot talk to the server at all.
        with Client("localhost", port, tls=True, timeout=5) as untrusting, pytest.raises(ServiceUnavailable):
            untrusting.add_image({"name": "refused"})
    finally:
        server.stop(None)
    assert service.metadata[0]["x-auth-token"] == "t"
    assert "x-auth-token" not in service.metadata[1]
