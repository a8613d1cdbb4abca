"""What travels beside the data: request ids both ways, and the auth token (forwarded, never logged)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

from .support import (
    FakeGlance,
    GatewayProcess,
    ImageTracker,
    assert_error,
    error_info,
    new_id,
    open_channel,
    unique_name,
)

REQUEST_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OUR_REQUEST_ID = "req-test-1234"
TOKEN = "secret-token-XYZ"


def glance_request_ids(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[str]:
    return [str(value) for key, value in metadata or () if key == "x-openstack-request-id"]


def test_request_ids_come_back_in_trailing_metadata(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub
) -> None:
    image = new_image(name=unique_name("reqid"), data=b"abc")
    metadata = (("x-request-id", OUR_REQUEST_ID),)

    _, call = stub.GetImageMeta.with_call(pb.GetImageMetaRequest(image_id=image.id), metadata=metadata)
    ids = glance_request_ids(call.trailing_metadata())
    # Glance in noauth mode makes its own id for every request (it does not echo ours).
    assert len(ids) == 1 and REQUEST_ID.fullmatch(ids[0]), ids

    # A download asks Glance twice (metadata, then data): both ids come back, after the stream.
    stream = stub.GetImage(pb.GetImageRequest(image_id=image.id), metadata=metadata)
    assert len(list(stream)) == 2
    ids = glance_request_ids(stream.trailing_metadata())
    assert len(ids) == 2 and all(REQUEST_ID.fullmatch(i) for i in ids) and ids[0] != ids[1], ids


def test_request_id_of_a_failure(stub: pb_grpc.ImageServiceStub) -> None:
    missing = new_id()
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetImageMeta(
            pb.GetImageMetaRequest(image_id=missing), metadata=(("x-request-id", OUR_REQUEST_ID),)
        )
    err = caught.value
    assert isinstance(err, grpc.Call)
    ids = glance_request_ids(err.trailing_metadata())
    assert len(ids) == 1 and REQUEST_ID.fullmatch(ids[0]), ids
    # The same id is in the ErrorInfo, so a client that only keeps the error can still quote it.
    assert error_info(err).metadata["request_id"] == ids[0]


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "semi;colon"])
def test_malformed_request_id(bad: str, stub: pb_grpc.ImageServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()), metadata=(("x-request-id", bad),))
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_ID")


def test_token_is_not_logged(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, gateway: GatewayProcess
) -> None:
    image = new_image(name=unique_name("token"))
    with_token = (("x-auth-token", TOKEN),)
    stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), metadata=with_token)
    stub.ListImages(pb.ListImagesRequest(name=image.name), metadata=(("authorization", f"Bearer {TOKEN}"),))
    # Failures are logged too: the token must not be in those lines either.
    for call in (
        lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()), metadata=with_token),
        lambda: stub.DeleteImage(pb.DeleteImageRequest(image_id="bad"), metadata=with_token),
    ):
        with pytest.raises(grpc.RpcError):
            call()
    assert any("GetImageMeta" in line for line in gateway.log_lines)  # the calls were logged ...
    assert not [line for line in gateway.log_lines if TOKEN in line]  # ... without the token


# A real Glance in noauth mode ignores tokens and does not echo request ids, so what the gateway forwards is
# checked on a recording fake upstream; its gateway logs at DEBUG, where a leak would be most likely.


@pytest.fixture(scope="module")
def recording() -> Iterator[tuple[FakeGlance, pb_grpc.ImageServiceStub, GatewayProcess]]:
    with FakeGlance() as fake:
        gateway = GatewayProcess(fake.url, log_level="DEBUG").start()
        try:
            with open_channel(gateway.address) as channel:
                yield fake, pb_grpc.ImageServiceStub(channel), gateway
        finally:
            gateway.stop()


@pytest.mark.parametrize(
    "metadata",
    [
        [("x-auth-token", TOKEN)],
        [("authorization", f"Bearer {TOKEN}")],
        [("authorization", f"bearer {TOKEN}")],
    ],
    ids=["x-auth-token", "bearer", "bearer-lower-case"],
)
def test_token_and_request_id_are_forwarded(
    metadata: tuple[tuple[str, str], ...],
    recording: tuple[FakeGlance, pb_grpc.ImageServiceStub, GatewayProcess],
) -> None:
    fake, stub, gateway = recording
    image_id = fake.add(b"data")
    before = len(fake.headers)
    stub.GetImageMeta(
        pb.GetImageMetaRequest(image_id=image_id), metadata=(*metadata, ("x-request-id", OUR_REQUEST_ID))
    )
    (sent,) = fake.headers_for(f"/v2/images/{image_id}", since=before)
    assert sent["x-auth-token"] == TOKEN
    assert sent["x-openstack-request-id"] == OUR_REQUEST_ID
    assert "authorization" not in sent  # Glance (keystonemiddleware) reads X-Auth-Token only
    assert not [line for line in gateway.log_lines if TOKEN in line]


def test_no_token_sends_none(recording: tuple[FakeGlance, pb_grpc.ImageServiceStub, GatewayProcess]) -> None:
    fake, stub, _ = recording
    image_id = fake.add(b"data")
    before = len(fake.headers)
    stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image_id))
    (sent,) = fake.headers_for(f"/v2/images/{image_id}", since=before)
    assert "x-auth-token" not in sent and "x-openstack-request-id" not in sent
