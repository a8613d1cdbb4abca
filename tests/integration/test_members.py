"""Image sharing (CreateImageMember, ListImageMembers, GetImageMember, UpdateImageMember, DeleteImageMember)
and ListImages' member_status filter, on a real Glance 33.

First on the session Glance in noauth mode (every caller is admin of one project: the calls, the statuses,
bad input), then between two real projects through Keystone (fixtures `keystone_stub`, `keystone_glance`,
`identities` in tests/conftest.py): who may accept, and what each project then lists.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer, Identities

from .support import (
    ImageTracker,
    add_requests,
    assert_error,
    download,
    glance_image,
    http,
    new_id,
    unique_name,
)

C = grpc.StatusCode
# A Keystone-shaped project id; noauth Glance takes any member id.
PROJECT = "0c8a5b4ff1e94e4c9a1d6f3a2b7e8d90"
# Glance's image_member_quota default.
MEMBER_QUOTA = 128


def glance_members(glance_url: str, image_id: str, token: str | None = None) -> dict[str, str]:
    """member id -> status, as Glance itself lists them."""
    headers = {"X-Auth-Token": token} if token else {}
    status, raw = http("GET", f"{glance_url}/v2/images/{image_id}/members", headers=headers)
    assert status == 200, raw
    return {m["member_id"]: m["status"] for m in json.loads(raw)["members"]}


def expect_error(
    call: Callable[[], object], code: grpc.StatusCode, reason: str, image_id: str | None = None
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    glance_status = None if code == C.INVALID_ARGUMENT else _GLANCE_STATUS[code]
    assert_error(caught.value, code, reason, glance_status=glance_status, image_id=image_id)


_GLANCE_STATUS = {
    C.FAILED_PRECONDITION: 403,
    C.PERMISSION_DENIED: 403,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.RESOURCE_EXHAUSTED: 413,
}


# -- noauth: the calls and their statuses ----------------------------------------------------------------


@pytest.mark.parametrize("member_id", [PROJECT, "svc@example.org"])
def test_a_member_is_created_listed_read_accepted_and_removed(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer, member_id: str
) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)

    created = stub.CreateImageMember(
        pb.CreateImageMemberRequest(image_id=image.id, member_id=member_id)
    ).member
    assert (created.image_id, created.member_id, created.status) == (
        image.id,
        member_id,
        pb.MEMBER_STATUS_PENDING,
    )
    assert created.create_time.seconds > 0 and created.update_time.seconds >= created.create_time.seconds
    assert glance_members(glance.url, image.id) == {member_id: "pending"}

    listed = stub.ListImageMembers(pb.ListImageMembersRequest(image_id=image.id)).members
    assert list(listed) == [created]
    got = stub.GetImageMember(pb.GetImageMemberRequest(image_id=image.id, member_id=member_id)).member
    assert got == created

    for status, word in ((pb.MEMBER_STATUS_ACCEPTED, "accepted"), (pb.MEMBER_STATUS_REJECTED, "rejected")):
        request = pb.UpdateImageMemberRequest(image_id=image.id, member_id=member_id, status=status)
        updated = stub.UpdateImageMember(request).member
        assert (updated.member_id, updated.status) == (member_id, status)
        assert glance_members(glance.url, image.id) == {member_id: word}

    stub.DeleteImageMember(pb.DeleteImageMemberRequest(image_id=image.id, member_id=member_id))
    assert glance_members(glance.url, image.id) == {}
    assert list(stub.ListImageMembers(pb.ListImageMembersRequest(image_id=image.id)).members) == []
    expect_error(
        lambda: stub.GetImageMember(pb.GetImageMemberRequest(image_id=image.id, member_id=member_id)),
        C.NOT_FOUND,
        "NOT_FOUND",
        image.id,
    )


def test_sharing_twice_with_one_project_is_already_exists(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer
) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)
    request = pb.CreateImageMemberRequest(image_id=image.id, member_id=PROJECT)
    stub.CreateImageMember(request)
    expect_error(lambda: stub.CreateImageMember(request), C.ALREADY_EXISTS, "MEMBER_ALREADY_EXISTS", image.id)
    assert glance_members(glance.url, image.id) == {PROJECT: "pending"}


@pytest.mark.parametrize("visibility", [pb.VISIBILITY_PRIVATE, pb.VISIBILITY_PUBLIC, pb.VISIBILITY_COMMUNITY])
def test_only_a_shared_image_takes_members(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, visibility: pb.Visibility.ValueType
) -> None:
    image = new_image(visibility=visibility)
    expect_error(
        lambda: stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=PROJECT)),
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
        image.id,
    )
    expect_error(
        lambda: stub.ListImageMembers(pb.ListImageMembersRequest(image_id=image.id)),
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
        image.id,
    )


def test_members_of_an_image_made_private_wait_until_it_is_shared_again(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer
) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)
    stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=PROJECT))
    set_visibility(stub, image.id, pb.VISIBILITY_PRIVATE)

    # Glance keeps the membership but refuses to touch it; reading one member is its NOT_FOUND.
    accept = pb.UpdateImageMemberRequest(
        image_id=image.id, member_id=PROJECT, status=pb.MEMBER_STATUS_ACCEPTED
    )
    remove = pb.DeleteImageMemberRequest(image_id=image.id, member_id=PROJECT)
    expect_error(lambda: stub.UpdateImageMember(accept), C.FAILED_PRECONDITION, "IMAGE_NOT_SHARED", image.id)
    expect_error(lambda: stub.DeleteImageMember(remove), C.FAILED_PRECONDITION, "IMAGE_NOT_SHARED", image.id)
    expect_error(
        lambda: stub.GetImageMember(pb.GetImageMemberRequest(image_id=image.id, member_id=PROJECT)),
        C.NOT_FOUND,
        "NOT_FOUND",
        image.id,
    )

    set_visibility(stub, image.id, pb.VISIBILITY_SHARED)
    assert stub.UpdateImageMember(accept).member.status == pb.MEMBER_STATUS_ACCEPTED
    stub.DeleteImageMember(remove)
    assert glance_members(glance.url, image.id) == {}


def set_visibility(
    stub: pb_grpc.ImageServiceStub, image_id: str, visibility: pb.Visibility.ValueType
) -> None:
    request = pb.UpdateImageRequest(
        image_id=image_id,
        image=pb.Image(visibility=visibility),
        update_mask=field_mask_pb2.FieldMask(paths=["visibility"]),
    )
    assert stub.UpdateImage(request).image.visibility == visibility


def test_missing_members_and_images_are_not_found(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)
    calls: list[Callable[[], object]] = [
        lambda: stub.GetImageMember(pb.GetImageMemberRequest(image_id=image.id, member_id=PROJECT)),
        lambda: stub.UpdateImageMember(
            pb.UpdateImageMemberRequest(
                image_id=image.id, member_id=PROJECT, status=pb.MEMBER_STATUS_ACCEPTED
            )
        ),
        lambda: stub.DeleteImageMember(pb.DeleteImageMemberRequest(image_id=image.id, member_id=PROJECT)),
    ]
    for call in calls:
        expect_error(call, C.NOT_FOUND, "NOT_FOUND", image.id)
    missing = new_id()
    expect_error(
        lambda: stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=missing, member_id=PROJECT)),
        C.NOT_FOUND,
        "NOT_FOUND",
        missing,
    )
    expect_error(
        lambda: stub.ListImageMembers(pb.ListImageMembersRequest(image_id=missing)),
        C.NOT_FOUND,
        "NOT_FOUND",
        missing,
    )


@pytest.mark.parametrize(
    ("member_id", "reason"),
    [
        ("", "MISSING_MEMBER_ID"),
        # httpx resolves dot segments: DELETE .../members/.. would have deleted the image itself.
        ("..", "INVALID_MEMBER_ID"),
        (".", "INVALID_MEMBER_ID"),
        # Glance 33 stores these on create, then cannot find them again by path (measured).
        ("a/b", "INVALID_MEMBER_ID"),
        ("projet-é", "INVALID_MEMBER_ID"),
        ("x" * 256, "INVALID_MEMBER_ID"),
    ],
)
def test_bad_member_ids_never_reach_glance(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer, member_id: str, reason: str
) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)
    stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=PROJECT))
    calls: list[Callable[[], object]] = [
        lambda: stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=member_id)),
        lambda: stub.GetImageMember(pb.GetImageMemberRequest(image_id=image.id, member_id=member_id)),
        lambda: stub.UpdateImageMember(
            pb.UpdateImageMemberRequest(
                image_id=image.id, member_id=member_id, status=pb.MEMBER_STATUS_ACCEPTED
            )
        ),
        lambda: stub.DeleteImageMember(pb.DeleteImageMemberRequest(image_id=image.id, member_id=member_id)),
    ]
    for call in calls:
        expect_error(call, C.INVALID_ARGUMENT, reason)
    assert glance_image(glance.url, image.id) is not None, "the image itself must be untouched"
    assert glance_members(glance.url, image.id) == {PROJECT: "pending"}


def test_a_status_must_be_given(stub: pb_grpc.ImageServiceStub, new_image: ImageTracker) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)
    stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=PROJECT))
    expect_error(
        lambda: stub.UpdateImageMember(pb.UpdateImageMemberRequest(image_id=image.id, member_id=PROJECT)),
        C.INVALID_ARGUMENT,
        "MISSING_MEMBER_STATUS",
    )


def test_members_beyond_glances_quota_are_resource_exhausted(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer
) -> None:
    image = new_image(visibility=pb.VISIBILITY_SHARED)
    for number in range(MEMBER_QUOTA):
        stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=f"project-{number}"))
    expect_error(
        lambda: stub.CreateImageMember(
            pb.CreateImageMemberRequest(image_id=image.id, member_id="one-too-many")
        ),
        C.RESOURCE_EXHAUSTED,
        "LIMIT_EXCEEDED",
        image.id,
    )
    assert len(glance_members(glance.url, image.id)) == MEMBER_QUOTA


# -- two real projects through Keystone ------------------------------------------------------------------

DATA = bytes(range(256)) * 64


@pytest.fixture
def shared_by_alpha(
    keystone_stub: pb_grpc.ImageServiceStub, keystone_glance: GlanceServer, identities: Identities
) -> Iterator[pb.Image]:
    """An active image with data that alpha-member created as SHARED; deleted at teardown with the owner's
    token (straight in Glance, so a failed test still cleans up)."""
    spec = pb.ImageSpec(
        id=new_id(), name=unique_name("members"), type=pb.IMAGE_TYPE_RAW, visibility=pb.VISIBILITY_SHARED
    )
    try:
        response = keystone_stub.AddImage(
            add_requests(spec, [DATA]), metadata=identities.metadata("alpha", "member"), timeout=30
        )
        yield response.image
    finally:
        owner = {"X-Auth-Token": identities.token("alpha", "member")}
        status, raw = http("DELETE", f"{keystone_glance.url}/v2/images/{spec.id}", headers=owner)
        assert status in (204, 404), raw


def test_sharing_between_two_projects(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    shared_by_alpha: pb.Image,
) -> None:
    stub, image = keystone_stub, shared_by_alpha
    alpha, beta = ("alpha", "member"), ("beta", "member")
    beta_id = identities.project_id("beta")

    def as_(who: tuple[str, str]) -> dict[str, Any]:
        return {"metadata": identities.metadata(*who), "timeout": 30}

    def listed(who: tuple[str, str], member_status: int = pb.MEMBER_STATUS_FILTER_UNSPECIFIED) -> bool:
        request = pb.ListImagesRequest(page_size=500, member_status=member_status)  # type: ignore[arg-type]
        return image.id in {found.id for found in stub.ListImages(request, **as_(who)).images}

    def set_status(who: tuple[str, str], status: pb.MemberStatus.ValueType) -> pb.ImageMember:
        request = pb.UpdateImageMemberRequest(image_id=image.id, member_id=beta_id, status=status)
        member: pb.ImageMember = stub.UpdateImageMember(request, **as_(who)).member
        return member

    assert image.status == pb.IMAGE_STATUS_ACTIVE and image.visibility == pb.VISIBILITY_SHARED
    created = stub.CreateImageMember(
        pb.CreateImageMemberRequest(image_id=image.id, member_id=beta_id), **as_(alpha)
    ).member
    assert (created.member_id, created.status) == (beta_id, pb.MEMBER_STATUS_PENDING)

    # Pending: usable by id (data included), listed only when asked for.
    assert not listed(beta)
    assert listed(beta, pb.MEMBER_STATUS_FILTER_PENDING) and listed(beta, pb.MEMBER_STATUS_FILTER_ALL)
    assert not listed(beta, pb.MEMBER_STATUS_FILTER_ACCEPTED)
    _, data = download(stub, pb.GetImageRequest(image_id=image.id), metadata=identities.metadata(*beta))
    assert data == DATA

    # Only the member project's members answer for it: not the owner, not a reader.
    for who in (alpha, ("beta", "reader")):
        expect_error(
            functools.partial(set_status, who, pb.MEMBER_STATUS_ACCEPTED),
            C.PERMISSION_DENIED,
            "PERMISSION_DENIED",
            image.id,
        )
    assert glance_members(keystone_glance.url, image.id, identities.token(*alpha)) == {beta_id: "pending"}

    assert set_status(beta, pb.MEMBER_STATUS_ACCEPTED).status == pb.MEMBER_STATUS_ACCEPTED
    assert listed(beta) and listed(("beta", "reader"))
    # The owner sees every member, a member only itself.
    stub.CreateImageMember(pb.CreateImageMemberRequest(image_id=image.id, member_id=PROJECT), **as_(alpha))
    owner_view = stub.ListImageMembers(pb.ListImageMembersRequest(image_id=image.id), **as_(alpha)).members
    assert {m.member_id for m in owner_view} == {beta_id, PROJECT}
    member_view = stub.ListImageMembers(pb.ListImageMembersRequest(image_id=image.id), **as_(beta)).members
    assert [(m.member_id, m.status) for m in member_view] == [(beta_id, pb.MEMBER_STATUS_ACCEPTED)]
    got = stub.GetImageMember(pb.GetImageMemberRequest(image_id=image.id, member_id=beta_id), **as_(beta))
    assert got.member.status == pb.MEMBER_STATUS_ACCEPTED
    # Sharing is the owner's: a member can neither share further nor remove itself.
    expect_error(
        lambda: stub.CreateImageMember(
            pb.CreateImageMemberRequest(image_id=image.id, member_id="another-project"), **as_(beta)
        ),
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        image.id,
    )
    expect_error(
        lambda: stub.DeleteImageMember(
            pb.DeleteImageMemberRequest(image_id=image.id, member_id=beta_id), **as_(beta)
        ),
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        image.id,
    )

    # Rejected: out of the default listing, still readable by id.
    assert set_status(beta, pb.MEMBER_STATUS_REJECTED).status == pb.MEMBER_STATUS_REJECTED
    assert not listed(beta) and not listed(beta, pb.MEMBER_STATUS_FILTER_PENDING)
    assert listed(beta, pb.MEMBER_STATUS_FILTER_REJECTED) and listed(beta, pb.MEMBER_STATUS_FILTER_ALL)
    assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), **as_(beta)).image.id == image.id

    # Removed: the image is gone for beta altogether.
    stub.DeleteImageMember(pb.DeleteImageMemberRequest(image_id=image.id, member_id=beta_id), **as_(alpha))
    expect_error(
        lambda: stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), **as_(beta)),
        C.NOT_FOUND,
        "NOT_FOUND",
        image.id,
    )
    assert not listed(beta, pb.MEMBER_STATUS_FILTER_ALL)
    assert glance_members(keystone_glance.url, image.id, identities.token(*alpha)) == {PROJECT: "pending"}


def test_only_the_owner_project_members_share(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, shared_by_alpha: pb.Image
) -> None:
    request = pb.CreateImageMemberRequest(
        image_id=shared_by_alpha.id, member_id=identities.project_id("beta")
    )
    # A reader of the owner project may not share; another project does not even see the image.
    expect_error(
        lambda: keystone_stub.CreateImageMember(request, metadata=identities.metadata("alpha", "reader")),
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        shared_by_alpha.id,
    )
    expect_error(
        lambda: keystone_stub.CreateImageMember(request, metadata=identities.metadata("beta", "member")),
        C.NOT_FOUND,
        "NOT_FOUND",
        shared_by_alpha.id,
    )
