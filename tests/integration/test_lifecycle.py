"""DeactivateImage, ReactivateImage and GetQuotaUsage on a real Glance 33.

First on the session Glance (noauth: every caller is admin, and an admin may still download a deactivated
image), then with real identities through Keystone (`keystone_gateway`): who may deactivate, and what a
deactivated image means to its owner's project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer, Identities
from localglance.keystone_config import REGISTERED_LIMITS

from .support import (
    ImageTracker,
    Metadata,
    add_requests,
    assert_error,
    download,
    expect_error,
    glance_image,
    http,
    new_id,
    unique_name,
)

C = grpc.StatusCode
DATA = b"lifecycle " * 500


def deactivate(stub: pb_grpc.ImageServiceStub, image_id: str, metadata: Metadata = ()) -> None:
    stub.DeactivateImage(pb.DeactivateImageRequest(image_id=image_id), metadata=metadata, timeout=30)


def reactivate(stub: pb_grpc.ImageServiceStub, image_id: str, metadata: Metadata = ()) -> None:
    stub.ReactivateImage(pb.ReactivateImageRequest(image_id=image_id), metadata=metadata, timeout=30)


def status_of(stub: pb_grpc.ImageServiceStub, image_id: str, metadata: Metadata = ()) -> int:
    request = pb.GetImageMetaRequest(image_id=image_id)
    status: int = stub.GetImageMeta(request, metadata=metadata, timeout=30).image.status
    return status


# -- noauth Glance ---------------------------------------------------------------------------------------


def test_deactivate_and_reactivate_an_image(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer
) -> None:
    image = new_image(data=DATA)
    deactivate(stub, image.id)
    assert status_of(stub, image.id) == pb.IMAGE_STATUS_DEACTIVATED
    stored = glance_image(glance.url, image.id)
    assert stored is not None and stored["status"] == "deactivated"
    # Twice is no error, and changes nothing.
    deactivate(stub, image.id)
    assert status_of(stub, image.id) == pb.IMAGE_STATUS_DEACTIVATED
    # noauth makes every caller an admin, and Glance lets admins download a deactivated image (the
    # FAILED_PRECONDITION a project member gets is in test_a_deactivated_image_is_not_for_its_project).
    _, data = download(stub, pb.GetImageRequest(image_id=image.id))
    assert data == DATA
    # A deactivated image's data stays where it is: no store may drop it meanwhile.
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteImageFromStore(
            pb.DeleteImageFromStoreRequest(image_id=image.id, store_id="file"), timeout=30
        )
    assert_error(
        caught.value, C.FAILED_PRECONDITION, "IMAGE_NOT_ACTIVE", glance_status=409, image_id=image.id
    )

    reactivate(stub, image.id)
    assert status_of(stub, image.id) == pb.IMAGE_STATUS_ACTIVE
    reactivate(stub, image.id)  # an active image: no error, no change
    assert status_of(stub, image.id) == pb.IMAGE_STATUS_ACTIVE
    _, data = download(stub, pb.GetImageRequest(image_id=image.id))
    assert data == DATA


def test_an_image_without_data_can_be_neither_deactivated_nor_reactivated(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    queued = new_image()
    # Glance 33 answers 403 here (its api-ref says 400): the status, not the caller, is what is wrong.
    message = expect_error(
        lambda: deactivate(stub, queued.id), C.FAILED_PRECONDITION, "IMAGE_NOT_ACTIVE", 403, queued.id
    )
    assert message == "Not allowed to deactivate image in status 'queued'"
    message = expect_error(
        lambda: reactivate(stub, queued.id), C.FAILED_PRECONDITION, "IMAGE_NOT_DEACTIVATED", 403, queued.id
    )
    assert message == "Not allowed to reactivate image in status 'queued'"
    assert status_of(stub, queued.id) == pb.IMAGE_STATUS_QUEUED


@pytest.mark.parametrize("action", [deactivate, reactivate])
def test_a_missing_image_is_not_found(
    stub: pb_grpc.ImageServiceStub, action: Callable[[pb_grpc.ImageServiceStub, str], None]
) -> None:
    missing = new_id()
    expect_error(lambda: action(stub, missing), C.NOT_FOUND, "NOT_FOUND", 404, missing)


@pytest.mark.parametrize("image_id", ["", "not-a-uuid"])
def test_a_bad_image_id_is_refused_by_the_gateway(stub: pb_grpc.ImageServiceStub, image_id: str) -> None:
    reason = "MISSING_IMAGE_ID" if not image_id else "INVALID_IMAGE_ID"
    expect_error(lambda: deactivate(stub, image_id), C.INVALID_ARGUMENT, reason, None)


def test_quota_usage_is_empty_without_unified_limits(stub: pb_grpc.ImageServiceStub) -> None:
    # localglance does not set use_keystone_limits: Glance answers {"usage": {}}.
    assert stub.GetQuotaUsage(pb.GetQuotaUsageRequest(), timeout=30) == pb.GetQuotaUsageResponse()


# -- real identities --------------------------------------------------------------------------------------


AddAsAlpha = Callable[[pb.Visibility.ValueType], pb.Image]


@pytest.fixture
def add_as_alpha(
    keystone_stub: pb_grpc.ImageServiceStub, keystone_glance: GlanceServer, identities: Identities
) -> Iterator[AddAsAlpha]:
    """`add_as_alpha(visibility)`: an image with data made through the gateway by alpha-member; each is
    deleted at teardown by the admin."""
    ids: list[str] = []

    def add(visibility: pb.Visibility.ValueType) -> pb.Image:
        spec = pb.ImageSpec(
            id=new_id(), name=unique_name("life"), type=pb.IMAGE_TYPE_RAW, visibility=visibility
        )
        ids.append(spec.id)
        response = keystone_stub.AddImage(
            add_requests(spec, [DATA]), metadata=identities.metadata("alpha", "member"), timeout=60
        )
        image: pb.Image = response.image
        return image

    yield add
    admin = {"X-Auth-Token": identities.admin_token()}
    for image_id in ids:
        status, raw = http("DELETE", f"{keystone_glance.url}/v2/images/{image_id}", headers=admin)
        assert status in (204, 404), raw


def test_only_admins_and_the_owners_members_deactivate(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as_alpha: AddAsAlpha
) -> None:
    # A community image: every project sees it, so a refusal is PERMISSION_DENIED, not NOT_FOUND.
    image_id = add_as_alpha(pb.VISIBILITY_COMMUNITY).id
    for who in (("alpha", "reader"), ("beta", "member"), ("beta", "reader")):
        message = expect_error(
            partial(deactivate, keystone_stub, image_id, identities.metadata(*who)),
            C.PERMISSION_DENIED,
            "PERMISSION_DENIED",
            403,
            image_id,
        )
        assert message == "You are not authorized to complete deactivate action.", who
    assert (
        status_of(keystone_stub, image_id, identities.metadata("alpha", "reader")) == pb.IMAGE_STATUS_ACTIVE
    )
    # The owner project's member may, under Glance 33's default policy (ADMIN_OR_PROJECT_MEMBER).
    deactivate(keystone_stub, image_id, identities.metadata("alpha", "member"))
    expect_error(
        lambda: reactivate(keystone_stub, image_id, identities.metadata("beta", "member")),
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
        image_id,
    )
    reactivate(keystone_stub, image_id, identities.metadata("alpha", "member"))
    assert status_of(keystone_stub, image_id, identities.metadata("beta", "reader")) == pb.IMAGE_STATUS_ACTIVE


def test_an_image_another_project_cannot_see_is_not_found_to_it(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as_alpha: AddAsAlpha
) -> None:
    image_id = add_as_alpha(pb.VISIBILITY_PRIVATE).id
    expect_error(
        lambda: deactivate(keystone_stub, image_id, identities.metadata("beta", "member")),
        C.NOT_FOUND,
        "NOT_FOUND",
        404,
        image_id,
    )


def test_a_deactivated_image_is_not_for_its_project(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as_alpha: AddAsAlpha
) -> None:
    image_id = add_as_alpha(pb.VISIBILITY_COMMUNITY).id
    admin, member = identities.metadata("admin", "admin"), identities.metadata("alpha", "member")
    deactivate(keystone_stub, image_id, admin)
    assert status_of(keystone_stub, image_id, member) == pb.IMAGE_STATUS_DEACTIVATED
    for who in (member, identities.metadata("beta", "member")):
        message = expect_error(
            partial(download, keystone_stub, pb.GetImageRequest(image_id=image_id), metadata=who),
            C.FAILED_PRECONDITION,
            "IMAGE_DEACTIVATED",
            403,
            image_id,
        )
        assert "deactivated" in message
    assert download(keystone_stub, pb.GetImageRequest(image_id=image_id), metadata=admin)[1] == DATA
    reactivate(keystone_stub, image_id, admin)
    assert download(keystone_stub, pb.GetImageRequest(image_id=image_id), metadata=member)[1] == DATA


@pytest.mark.parametrize("who", [("alpha", "reader"), ("beta", "member"), ("admin", "admin")])
def test_quota_usage_with_a_real_token(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, who: tuple[str, str]
) -> None:
    # Keystone holds unified limits for Glance: these projects have only the registered defaults.
    response = keystone_stub.GetQuotaUsage(
        pb.GetQuotaUsageRequest(), metadata=identities.metadata(*who), timeout=30
    )
    assert {name: quota.limit for name, quota in response.usage.items()} == REGISTERED_LIMITS
    assert all(quota.usage >= 0 for quota in response.usage.values())


def test_quota_usage_needs_a_token(keystone_stub: pb_grpc.ImageServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        keystone_stub.GetQuotaUsage(pb.GetQuotaUsageRequest(), timeout=30)
    info = assert_error(caught.value, C.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert info.metadata["glance_status"] == "401"
