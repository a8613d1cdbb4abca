"""Every row of the error table that a real Glance can produce, with its code and ErrorInfo.

Rows Glance reports itself also carry glance_status and Glance's request_id in the ErrorInfo metadata.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import (
    MIB,
    FakeGlance,
    GatewayProcess,
    ImageTracker,
    StartGateway,
    add_requests,
    assert_error,
    chunks_of,
    download,
    glance_image,
    glance_list,
    new_id,
    open_channel,
    unique_name,
)

C = grpc.StatusCode


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Runs `call` and returns the RpcError it must raise."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def add(stub: pb_grpc.ImageServiceStub, spec: pb.ImageSpec, chunks: list[bytes] | None = None) -> pb.Image:
    response: pb.AddImageResponse = stub.AddImage(add_requests(spec, chunks or []), timeout=30)
    return response.image


# -- ALREADY_EXISTS ---------------------------------------------------------------


def test_duplicate_id_already_exists(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    first = new_image(name=unique_name("dup"))
    err = rpc_error(lambda: add(stub, pb.ImageSpec(name=unique_name("dup"), id=first.id)))
    assert_error(err, C.ALREADY_EXISTS, "IMAGE_ALREADY_EXISTS", glance_status=409)


def test_id_of_a_deleted_image_already_exists(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub
) -> None:
    # Glance soft-deletes: a deleted image's id can never be used again.
    gone = new_image(name=unique_name("deleted"))
    stub.DeleteImage(pb.DeleteImageRequest(image_id=gone.id))
    err = rpc_error(lambda: add(stub, pb.ImageSpec(name=unique_name("again"), id=gone.id)))
    assert_error(err, C.ALREADY_EXISTS, "IMAGE_ALREADY_EXISTS", glance_status=409)


# -- INVALID_ARGUMENT ------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   "])
def test_missing_name(name: str, stub: pb_grpc.ImageServiceStub) -> None:
    err = rpc_error(lambda: add(stub, pb.ImageSpec(name=name, id=new_id(), type=pb.IMAGE_TYPE_RAW)))
    assert_error(err, C.INVALID_ARGUMENT, "MISSING_NAME")


def test_unknown_store_leaves_no_image(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    name, image_id = unique_name("nostore"), new_id()
    new_image.track(image_id)  # cleaned up should the gateway leave it behind after all
    spec = pb.ImageSpec(name=name, id=image_id, type=pb.IMAGE_TYPE_RAW, store="nosuchstore")
    err = rpc_error(lambda: add(stub, spec, [os.urandom(1000)]))
    assert_error(err, C.INVALID_ARGUMENT, "UNKNOWN_STORE")
    assert glance_image(glance.url, image_id) is None
    assert glance_list(glance.url, name=name) == []


def test_known_store_is_used(new_image: ImageTracker) -> None:
    # The other side of the previous test: a store Glance has (file2) is where the data goes.
    image = new_image(name=unique_name("store"), data=os.urandom(1000), store="file2")
    assert image.status == pb.IMAGE_STATUS_ACTIVE
    assert list(image.stores) == ["file2"]


@pytest.mark.parametrize("sent", [1001, 999], ids=["more-bytes", "fewer-bytes"])
def test_size_mismatch(
    sent: int, new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    name, image_id = unique_name("size"), new_id()
    new_image.track(image_id)
    spec = pb.ImageSpec(name=name, id=image_id, type=pb.IMAGE_TYPE_RAW, size=1000)
    err = rpc_error(lambda: add(stub, spec, chunks_of(os.urandom(sent), 300)))
    assert_error(err, C.INVALID_ARGUMENT, "SIZE_MISMATCH")
    # That nothing is left behind is test_add_image_cleanup.py's subject.


BAD_IDS = ["not-a-uuid", "12345678123456781234567812345678", "../../v2/images", "x" * 36]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_malformed_id(bad_id: str, stub: pb_grpc.ImageServiceStub) -> None:
    calls = {
        "GetImageMeta": lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=bad_id)),
        "GetImage": lambda: download(stub, pb.GetImageRequest(image_id=bad_id)),
        "DeleteImage": lambda: stub.DeleteImage(pb.DeleteImageRequest(image_id=bad_id)),
        "UpdateImage": lambda: stub.UpdateImage(
            pb.UpdateImageRequest(
                image_id=bad_id,
                image=pb.Image(name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        ),
        "AddImage": lambda: add(stub, pb.ImageSpec(name=unique_name("bad-id"), id=bad_id)),
    }
    for method, call in calls.items():
        err = rpc_error(call)
        assert err.code() == C.INVALID_ARGUMENT, method
        assert_error(err, C.INVALID_ARGUMENT, "INVALID_IMAGE_ID")


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example.com/v2/images/{id}",
        "http://evil.example.com/images/{id}",
        "https://{glance_host}/v2/images/{id}",  # right host, wrong scheme and port
        "{glance}/v2/images/{id}?x=1",
        "http://user:pw@{glance_host}/v2/images/{id}",
    ],
)
def test_foreign_uri(uri: str, stub: pb_grpc.ImageServiceStub, glance: GlanceServer) -> None:
    glance_host = glance.url.removeprefix("http://")
    image_uri = uri.format(id=new_id(), glance=glance.url, glance_host=glance_host)
    err = rpc_error(lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=image_uri)))
    assert_error(err, C.INVALID_ARGUMENT, "FOREIGN_IMAGE_URI")


def test_foreign_uri_is_never_fetched(stub: pb_grpc.ImageServiceStub) -> None:
    # A server that would answer: the gateway must not even ask it.
    with FakeGlance() as other:
        image_id = other.add(b"secret")
        meta = pb.GetImageMetaRequest(image_uri=f"{other.url}/v2/images/{image_id}")
        data = pb.GetImageRequest(image_uri=f"{other.url}/images/{image_id}")
        for err in (rpc_error(lambda: stub.GetImageMeta(meta)), rpc_error(lambda: download(stub, data))):
            assert_error(err, C.INVALID_ARGUMENT, "FOREIGN_IMAGE_URI")
        assert other.requests == []


def test_uri_of_our_glance_but_not_an_image(stub: pb_grpc.ImageServiceStub, glance: GlanceServer) -> None:
    err = rpc_error(lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=f"{glance.url}/v2/schemas")))
    assert_error(err, C.INVALID_ARGUMENT, "INVALID_IMAGE_URI")


def test_bad_page_token(stub: pb_grpc.ImageServiceStub) -> None:
    err = rpc_error(lambda: stub.ListImages(pb.ListImagesRequest(page_token="not-a-token")))
    assert_error(err, C.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    ("path", "reason"),
    [("status", "READ_ONLY_FIELD"), ("size", "READ_ONLY_FIELD"), ("colour", "UNKNOWN_FIELD")],
)
def test_update_bad_mask(
    path: str, reason: str, new_image: ImageTracker, stub: pb_grpc.ImageServiceStub
) -> None:
    image = new_image(name=unique_name("mask"))
    request = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(status=pb.IMAGE_STATUS_ACTIVE, size=5, name="x"),
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )
    assert_error(rpc_error(lambda: stub.UpdateImage(request)), C.INVALID_ARGUMENT, reason)
    # Nothing changed.
    assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id)).image.status == pb.IMAGE_STATUS_QUEUED


def test_update_reserved_property_name(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    image = new_image(name=unique_name("reserved"))
    request = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(properties={"os_glance_x": "1"}),
        update_mask=field_mask_pb2.FieldMask(paths=["properties.os_glance_x"]),
    )
    assert_error(rpc_error(lambda: stub.UpdateImage(request)), C.INVALID_ARGUMENT, "INVALID_PROPERTY")


def test_formats_of_an_image_with_data_are_a_failed_precondition(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub
) -> None:
    # Glance answers 403 here, but the refusal is about the image's state, not the caller's rights.
    image = new_image(name=unique_name("formats"), data=b"raw bytes")
    request = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(disk_format="qcow2"),
        update_mask=field_mask_pb2.FieldMask(paths=["disk_format"]),
    )
    err = rpc_error(lambda: stub.UpdateImage(request))
    assert_error(err, C.FAILED_PRECONDITION, "IMAGE_NOT_QUEUED", glance_status=403, image_id=image.id)
    assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id)).image.disk_format == "raw"


# -- NOT_FOUND ---------------------------------------------------------------------


def test_not_found(stub: pb_grpc.ImageServiceStub) -> None:
    missing = new_id()
    calls = {
        "GetImageMeta": lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=missing)),
        "DeleteImage": lambda: stub.DeleteImage(pb.DeleteImageRequest(image_id=missing)),
        "GetImage": lambda: download(stub, pb.GetImageRequest(image_id=missing)),
        "UpdateImage": lambda: stub.UpdateImage(
            pb.UpdateImageRequest(
                image_id=missing,
                image=pb.Image(name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        ),
    }
    for method, call in calls.items():
        err = rpc_error(call)
        assert err.code() == C.NOT_FOUND, method
        assert_error(err, C.NOT_FOUND, "NOT_FOUND", glance_status=404, image_id=missing)


# -- OUT_OF_RANGE ------------------------------------------------------------------


def test_offset_past_the_end(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    image = new_image(name=unique_name("range"), data=os.urandom(1000))
    for offset in (1000, 1001, 10**12):  # at the end counts as past it: there is nothing to read
        request = pb.GetImageRequest(image_id=image.id, offset=offset)
        err = rpc_error(functools.partial(download, stub, request))
        assert_error(err, C.OUT_OF_RANGE, "OFFSET_PAST_END", image_id=image.id)
    # Negative offset or limit is a bad argument, not a range problem.
    err = rpc_error(lambda: download(stub, pb.GetImageRequest(image_id=image.id, offset=-1)))
    assert_error(err, C.INVALID_ARGUMENT, "INVALID_RANGE")


# -- FAILED_PRECONDITION ------------------------------------------------------------


def test_download_of_queued_image(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    image = new_image(name=unique_name("queued"), type=pb.IMAGE_TYPE_RAW)
    err = rpc_error(lambda: download(stub, pb.GetImageRequest(image_id=image.id)))
    assert_error(err, C.FAILED_PRECONDITION, "IMAGE_HAS_NO_DATA", image_id=image.id)


def test_delete_of_protected_image(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    image = new_image(name=unique_name("protected"), protected=True)
    assert image.protected
    err = rpc_error(lambda: stub.DeleteImage(pb.DeleteImageRequest(image_id=image.id)))
    assert_error(err, C.FAILED_PRECONDITION, "IMAGE_PROTECTED", glance_status=403, image_id=image.id)
    assert glance_image(glance.url, image.id) is not None

    # Unprotected through the gateway, it can be deleted.
    unprotect = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(protected=False),
        update_mask=field_mask_pb2.FieldMask(paths=["protected"]),
    )
    assert not stub.UpdateImage(unprotect).image.protected
    stub.DeleteImage(pb.DeleteImageRequest(image_id=image.id))
    assert glance_image(glance.url, image.id) is None


# -- RESOURCE_EXHAUSTED ----------------------------------------------------------------


def test_too_many_properties(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    # Glance's image_property_quota is 128.
    name, image_id = unique_name("props"), new_id()
    new_image.track(image_id)
    spec = pb.ImageSpec(name=name, id=image_id, properties={f"p{i}": str(i) for i in range(129)})
    err = rpc_error(lambda: add(stub, spec))
    assert_error(err, C.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", glance_status=413)
    assert glance_image(glance.url, image_id) is None

    # 128 is fine.
    image = new_image(name=name, properties={f"p{i}": str(i) for i in range(128)})
    assert len(image.properties) == 128


# -- UNAVAILABLE, DEADLINE_EXCEEDED -------------------------------------------------------


def test_unauthenticated_then_glance_stopped_is_unavailable(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    # A real Glance with Keystone-style identity headers required (auth="headers"): a caller without an
    # identity is refused with 401, which reaches the client as UNAUTHENTICATED.
    other = GlanceServer(state_dir=tmp_path / "glance", processes=1, auth="headers")
    other.start()
    try:
        gateway: GatewayProcess = start_gateway(other.url)
        with open_channel(gateway.address) as channel:
            stub = pb_grpc.ImageServiceStub(channel)
            err = rpc_error(
                lambda: stub.ListImages(pb.ListImagesRequest(), metadata=(("x-auth-token", "t"),))
            )
            info = assert_error(err, C.UNAUTHENTICATED, "UNAUTHENTICATED")
            # Glance refuses before it assigns a request id, so only the status is in the details.
            assert info.metadata["glance_status"] == "401"
    finally:
        other.stop()
    # The same Glance, now gone: nothing listens on its port any more.
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        for call in (
            lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()), timeout=10),
            lambda: stub.ListImages(pb.ListImagesRequest(), timeout=10),
            lambda: add(stub, pb.ImageSpec(name=unique_name("down"), id=new_id())),
            lambda: download(stub, pb.GetImageRequest(image_id=new_id()), timeout=10),
        ):
            assert_error(rpc_error(call), C.UNAVAILABLE, "GLANCE_UNREACHABLE")


def test_short_deadline_on_stalled_glance(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    image = new_image(name=unique_name("stall"))
    glance.pause()
    try:
        err = rpc_error(lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=1.0))
        # The gateway's upstream budget ends with the client's deadline, so which side reports it first is a
        # race: only the code is certain (the next test pins the gateway's own mapping).
        assert err.code() == C.DEADLINE_EXCEEDED
    finally:
        glance.resume()
    # Once Glance answers again, so does the gateway.
    assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=10).image.id == image.id


def test_upstream_read_timeout(
    new_image: ImageTracker, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    image = new_image(name=unique_name("stall"))
    gateway: GatewayProcess = start_gateway(glance.url, "--read-timeout", "1")
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        glance.pause()
        try:
            # No client deadline: the gateway's own read timeout is what ends the call.
            err = rpc_error(lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=30))
            assert_error(err, C.DEADLINE_EXCEEDED, "GLANCE_TIMEOUT", image_id=image.id)
        finally:
            glance.resume()
        assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=10).image.id == image.id


# -- DATA_LOSS and a broken stream: a fake upstream --------------------------------------
#
# A real Glance cannot be made to corrupt data (or cut a download short) on demand, so these tests put the
# gateway in front of a small fake HTTP server that serves an image's metadata with the hash of the true data
# and then a broken data stream.


@pytest.fixture(scope="module")
def fake_glance() -> Iterator[FakeGlance]:
    with FakeGlance() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_stub(fake_glance: FakeGlance) -> Iterator[pb_grpc.ImageServiceStub]:
    # Small chunks: a broken stream is noticed after some data already went to the client.
    gateway = GatewayProcess(fake_glance.url, "--chunk-size", "65536").start()
    try:
        with open_channel(gateway.address) as channel:
            yield pb_grpc.ImageServiceStub(channel)
    finally:
        gateway.stop()


FAKE_DATA = os.urandom(MIB + 12345)


@pytest.mark.parametrize("hash_algo", ["sha512", "md5"])
def test_intact_fake_download_passes(
    hash_algo: str, fake_glance: FakeGlance, fake_stub: pb_grpc.ImageServiceStub
) -> None:
    # The control: the fake itself is fine, so the failures below come from what it breaks.
    image_id = fake_glance.add(FAKE_DATA, "intact", hash_algo)
    header, data = download(fake_stub, pb.GetImageRequest(image_id=image_id), timeout=30)
    assert header.verified
    assert data == FAKE_DATA


@pytest.mark.parametrize("hash_algo", ["sha512", "md5"])
def test_corrupt_download_is_data_loss(
    hash_algo: str, fake_glance: FakeGlance, fake_stub: pb_grpc.ImageServiceStub
) -> None:
    image_id = fake_glance.add(FAKE_DATA, "corrupt", hash_algo)
    err = rpc_error(lambda: download(fake_stub, pb.GetImageRequest(image_id=image_id), timeout=30))
    assert_error(err, C.DATA_LOSS, "CHECKSUM_MISMATCH")


def test_skip_verification_is_the_clients_choice(
    fake_glance: FakeGlance, fake_stub: pb_grpc.ImageServiceStub
) -> None:
    # The gateway does not hash when asked not to, and says so; the length is still checked (below).
    image_id = fake_glance.add(FAKE_DATA, "corrupt", "sha512")
    request = pb.GetImageRequest(image_id=image_id, skip_verification=True)
    header, data = download(fake_stub, request, timeout=30)
    assert not header.verified
    assert len(data) == len(FAKE_DATA) and data != FAKE_DATA


@pytest.mark.parametrize("mode", ["short", "reset", "unframed"])
def test_broken_download_is_unavailable(
    mode: str, fake_glance: FakeGlance, fake_stub: pb_grpc.ImageServiceStub
) -> None:
    image_id = fake_glance.add(FAKE_DATA, mode)
    err = rpc_error(lambda: download(fake_stub, pb.GetImageRequest(image_id=image_id), timeout=30))
    assert_error(err, C.UNAVAILABLE, "GLANCE_CONNECTION_BROKEN")
