"""Real identities through the gateway: Keystone tokens, Glance's upstream default policies, visibility.

The gateway forwards the gRPC metadata "x-auth-token" to Glance, which validates it against a real
Keystone (fixtures `keystone_gateway`, `identities` in tests/conftest.py). Expected outcomes follow the
table in keystone-30-local.md; codes and reasons follow gateway/errors.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from integration.support import add_requests, assert_error, http, new_id, unique_name
from localglance import GlanceServer, Identities

AddAs = Callable[..., pb.Image]


@pytest.fixture
def add_as(
    keystone_stub: pb_grpc.ImageServiceStub, keystone_glance: GlanceServer, identities: Identities
) -> Iterator[AddAs]:
    """`add_as(project, role, **ImageSpec fields)`: an image (no data) created through the gateway as
    <project>-<role>; every image is deleted at teardown straight in Glance with the admin token."""
    ids: list[str] = []

    def add(project: str, role: str, **fields: Any) -> pb.Image:
        spec = pb.ImageSpec(id=new_id(), name=unique_name("ident"), type=pb.IMAGE_TYPE_RAW, **fields)
        ids.append(spec.id)
        response = keystone_stub.AddImage(
            add_requests(spec), metadata=identities.metadata(project, role), timeout=30
        )
        image: pb.Image = response.image
        return image

    yield add
    admin = {"X-Auth-Token": identities.admin_token()}
    for image_id in ids:
        status, raw = http("DELETE", f"{keystone_glance.url}/v2/images/{image_id}", headers=admin)
        assert status in (204, 404), raw


def get(stub: pb_grpc.ImageServiceStub, identities: Identities, image_id: str, *who: str) -> pb.Image:
    project, role = who
    request = pb.GetImageMetaRequest(image_id=image_id)
    image: pb.Image = stub.GetImageMeta(
        request, metadata=identities.metadata(project, role), timeout=30
    ).image
    return image


def listed_ids(
    stub: pb_grpc.ImageServiceStub, identities: Identities, who: tuple[str, str], **filters: Any
) -> set[str]:
    request = pb.ListImagesRequest(page_size=500, **filters)
    response = stub.ListImages(request, metadata=identities.metadata(*who), timeout=30)
    return {image.id for image in response.images}


def expect_error(call: Callable[[], object], code: grpc.StatusCode, reason: str, status: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    if status == 401:
        # auth_token refuses before Glance's request-id middleware runs: a 401 comes without a request id.
        info = assert_error(caught.value, code, reason)
        assert info.metadata["glance_status"] == "401"
    else:
        assert_error(caught.value, code, reason, glance_status=status)


def glance_as(
    glance: GlanceServer, token: str, method: str, path: str, body: object = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
    return http(method, f"{glance.url}{path}", data, headers)


# -- authentication ------------------------------------------------------------


def test_no_token_is_unauthenticated(keystone_stub: pb_grpc.ImageServiceStub) -> None:
    expect_error(
        lambda: keystone_stub.ListImages(pb.ListImagesRequest(), timeout=30),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
        401,
    )


@pytest.mark.parametrize("key", ["x-auth-token", "authorization"])
def test_bogus_token_is_unauthenticated(keystone_stub: pb_grpc.ImageServiceStub, key: str) -> None:
    value = "Bearer not-a-real-token" if key == "authorization" else "not-a-real-token"
    expect_error(
        lambda: keystone_stub.ListImages(pb.ListImagesRequest(), metadata=((key, value),), timeout=30),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
        401,
    )


def test_bearer_token_is_accepted(keystone_stub: pb_grpc.ImageServiceStub, identities: Identities) -> None:
    metadata = (("authorization", f"Bearer {identities.token('alpha', 'reader')}"),)
    keystone_stub.ListImages(pb.ListImagesRequest(page_size=1), metadata=metadata, timeout=30)


# -- one project's roles ---------------------------------------------------------


def test_member_creates_private_image_of_its_project(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as: AddAs
) -> None:
    image = add_as("alpha", "member")
    assert image.owner == identities.project_id("alpha")
    assert image.visibility == pb.VISIBILITY_PRIVATE
    assert get(keystone_stub, identities, image.id, "alpha", "reader").id == image.id
    assert image.id in listed_ids(keystone_stub, identities, ("alpha", "reader"), name=image.name)


def test_reader_may_not_create(keystone_stub: pb_grpc.ImageServiceStub, identities: Identities) -> None:
    spec = pb.ImageSpec(id=new_id(), name=unique_name("ident"), type=pb.IMAGE_TYPE_RAW)
    metadata = identities.metadata("alpha", "reader")
    expect_error(
        lambda: keystone_stub.AddImage(add_requests(spec), metadata=metadata, timeout=30),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
    )


def test_reader_may_not_update_or_delete(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as: AddAs
) -> None:
    image = add_as("alpha", "member")
    reader = identities.metadata("alpha", "reader")
    update = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(name="renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]),
    )
    expect_error(
        lambda: keystone_stub.UpdateImage(update, metadata=reader, timeout=30),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
    )
    delete = pb.DeleteImageRequest(image_id=image.id)
    expect_error(
        lambda: keystone_stub.DeleteImage(delete, metadata=reader, timeout=30),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
    )
    assert get(keystone_stub, identities, image.id, "alpha", "member").name == image.name
    # The member may do both.
    member = identities.metadata("alpha", "member")
    assert keystone_stub.UpdateImage(update, metadata=member, timeout=30).image.name == "renamed"
    keystone_stub.DeleteImage(delete, metadata=member, timeout=30)


# -- across projects ---------------------------------------------------------------


def test_private_image_is_not_found_for_another_project(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as: AddAs
) -> None:
    image = add_as("alpha", "member")
    beta = identities.metadata("beta", "member")
    get_it = pb.GetImageMetaRequest(image_id=image.id)
    expect_error(
        lambda: keystone_stub.GetImageMeta(get_it, metadata=beta, timeout=30),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        404,
    )
    # Glance says 404, not 403, even for a delete: another project's private image does not exist for it.
    expect_error(
        lambda: keystone_stub.DeleteImage(
            pb.DeleteImageRequest(image_id=image.id), metadata=beta, timeout=30
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        404,
    )
    assert image.id not in listed_ids(keystone_stub, identities, ("beta", "member"), name=image.name)
    # An admin role in any project is Glance's admin (context_is_admin): it sees every project's images.
    assert get(keystone_stub, identities, image.id, "beta", "admin").owner == identities.project_id("alpha")


def test_community_image_is_visible_to_other_projects_when_asked_for(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as: AddAs
) -> None:
    image = add_as("alpha", "member", visibility=pb.VISIBILITY_COMMUNITY)
    assert image.visibility == pb.VISIBILITY_COMMUNITY
    assert get(keystone_stub, identities, image.id, "beta", "reader").id == image.id
    community = listed_ids(
        keystone_stub, identities, ("beta", "reader"), name=image.name, visibility=pb.VISIBILITY_COMMUNITY
    )
    assert image.id in community
    # Listed by default only for its owner.
    assert image.id not in listed_ids(keystone_stub, identities, ("beta", "reader"), name=image.name)
    # Visible is not writable.
    expect_error(
        lambda: keystone_stub.DeleteImage(
            pb.DeleteImageRequest(image_id=image.id),
            metadata=identities.metadata("beta", "member"),
            timeout=30,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
    )


def test_public_image_needs_an_admin_and_is_visible_to_all(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as: AddAs
) -> None:
    spec = pb.ImageSpec(id=new_id(), name=unique_name("ident"), type=pb.IMAGE_TYPE_RAW, is_public="yes")
    member = identities.metadata("alpha", "member")
    expect_error(
        lambda: keystone_stub.AddImage(add_requests(spec), metadata=member, timeout=30),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
    )
    image = add_as("admin", "admin", visibility=pb.VISIBILITY_PUBLIC)
    assert image.visibility == pb.VISIBILITY_PUBLIC
    for who in (("alpha", "reader"), ("beta", "reader"), ("beta", "member")):
        assert get(keystone_stub, identities, image.id, *who).id == image.id
        assert image.id in listed_ids(keystone_stub, identities, who, name=image.name)


def test_shared_image_is_visible_to_a_member_project(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    add_as: AddAs,
) -> None:
    image = add_as("alpha", "member", visibility=pb.VISIBILITY_SHARED)
    beta = identities.metadata("beta", "member")
    get_it = pb.GetImageMetaRequest(image_id=image.id)
    expect_error(
        lambda: keystone_stub.GetImageMeta(get_it, metadata=beta, timeout=30),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        404,
    )
    # Sharing goes through Glance's members API, straight over REST here.
    beta_id = identities.project_id("beta")
    alpha_token = identities.token("alpha", "member")
    status, raw = glance_as(
        keystone_glance, alpha_token, "POST", f"/v2/images/{image.id}/members", {"member": beta_id}
    )
    assert status == 200, raw
    # Pending: visible by id, not yet in beta's default listing.
    assert get(keystone_stub, identities, image.id, "beta", "member").id == image.id
    assert image.id not in listed_ids(keystone_stub, identities, ("beta", "member"), name=image.name)
    beta_token = identities.token("beta", "member")
    path = f"/v2/images/{image.id}/members/{beta_id}"
    status, raw = glance_as(keystone_glance, beta_token, "PUT", path, {"status": "accepted"})
    assert status == 200, raw
    assert image.id in listed_ids(keystone_stub, identities, ("beta", "reader"), name=image.name)
    # Shared is read-only for the member project.
    update = pb.UpdateImageRequest(
        image_id=image.id, image=pb.Image(name="theirs"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
    )
    expect_error(
        lambda: keystone_stub.UpdateImage(update, metadata=beta, timeout=30),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
    )
