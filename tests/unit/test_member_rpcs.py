"""The member RPCs served on an in-process grpc.aio server (servicer_harness.serving) and called through a
real channel, in front of a Glance faked at the client's transport seam (httpx.MockTransport): the REST
requests each RPC sends, and the statuses Glance's answers become. Glance's answers are copied from Glance 33
(bodies as it sends them)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from unit import servicer_harness
from unit.servicer_harness import Failed, failure

from gateway.member_rpcs import MemberRpcs
from gateway.servicer import ImageService
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

GLANCE = "http://glance.test:9292"
ID = "4e8144d7-c8a1-47ab-92a1-fa3efc76b430"
MEMBER = "0c8a5b4ff1e94e4c9a1d6f3a2b7e8d90"  # a Keystone project id
TOKEN = "gAAAAABtoken-of-beta"
METADATA = (("x-auth-token", TOKEN),)
MEMBERS = f"/v2/images/{ID}/members"
ONE_MEMBER = f"{MEMBERS}/{MEMBER}"

T = TypeVar("T")


def member_json(status: str = "pending", member: str = MEMBER) -> dict[str, Any]:
    """A member as Glance 33 answers it."""
    return {
        "member_id": member,
        "image_id": ID,
        "status": status,
        "created_at": "2026-11-28T21:43:11Z",
        "updated_at": "2026-11-28T21:43:17Z",
        "schema": "/v2/schemas/member",
    }


def glance_error(status: int, message: str) -> httpx.Response:
    """An error the way Glance 33 sends it to a client that accepts JSON (HTML noise included)."""
    title = {403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Request Entity Too Large"}[status]
    body = {"message": f"{message}<br /><br />\n\n\n", "code": f"{status} {title}", "title": title}
    return httpx.Response(status, json=body, headers={"x-openstack-request-id": "req-1"})


@dataclass
class FakeGlance:
    """Answers each (method, path) from `answers`; records every request."""

    answers: dict[tuple[str, str], httpx.Response] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.raw_path.decode()))
        if answer is None:
            return glance_error(404, "The resource could not be found.")
        return answer

    @property
    def only_request(self) -> httpx.Request:
        assert len(self.requests) == 1, [f"{r.method} {r.url}" for r in self.requests]
        return self.requests[0]


def run(glance: FakeGlance, scenario: Callable[[pb_grpc.ImageServiceAsyncStub], Awaitable[T]]) -> T:
    """Serves the service in front of `glance` and runs `scenario` with a stub on a real channel."""
    return servicer_harness.run(httpx.MockTransport(glance.handle), scenario, glance_url=GLANCE)


def refused(glance: FakeGlance, call: Callable[[pb_grpc.ImageServiceAsyncStub], Awaitable[object]]) -> Failed:
    """The status of the call `call` makes, which must fail, with its ErrorInfo."""
    return run(glance, lambda stub: failure(call(stub)))


def json_body(request: httpx.Request) -> object:
    assert request.headers["content-type"] == "application/json"
    return json.loads(request.content)


# -- what each RPC sends, and what it returns ----------------------------------------------------------


def test_create_posts_the_member_with_the_callers_token_and_returns_it() -> None:
    glance = FakeGlance({("POST", MEMBERS): httpx.Response(200, json=member_json())})

    async def scenario(stub: pb_grpc.ImageServiceAsyncStub) -> pb.CreateImageMemberResponse:
        request = pb.CreateImageMemberRequest(image_id=ID.upper(), member_id=MEMBER)
        return await stub.CreateImageMember(request, metadata=METADATA)

    response = run(glance, scenario)
    sent = glance.only_request
    # The image id is normalised to lower case on its way to the path.
    assert (sent.method, sent.url.path) == ("POST", MEMBERS)
    assert json_body(sent) == {"member": MEMBER}
    assert sent.headers["x-auth-token"] == TOKEN
    member = response.member
    assert (member.image_id, member.member_id, member.status) == (ID, MEMBER, pb.MEMBER_STATUS_PENDING)
    assert member.create_time.ToJsonString() == "2026-11-28T21:43:11Z"
    assert member.update_time.ToJsonString() == "2026-11-28T21:43:17Z"


def test_list_gets_every_member_glance_shows() -> None:
    listing = {
        "members": [member_json("accepted"), member_json("rejected", member="other-project")],
        "schema": "/v2/schemas/members",
    }
    glance = FakeGlance({("GET", MEMBERS): httpx.Response(200, json=listing)})

    async def scenario(stub: pb_grpc.ImageServiceAsyncStub) -> pb.ListImageMembersResponse:
        return await stub.ListImageMembers(pb.ListImageMembersRequest(image_id=ID), metadata=METADATA)

    response = run(glance, scenario)
    sent = glance.only_request
    assert (sent.method, sent.url.path, sent.content) == ("GET", MEMBERS, b"")
    assert sent.headers["x-auth-token"] == TOKEN
    assert [(m.member_id, m.status) for m in response.members] == [
        (MEMBER, pb.MEMBER_STATUS_ACCEPTED),
        ("other-project", pb.MEMBER_STATUS_REJECTED),
    ]


def test_get_reads_one_member_by_its_path() -> None:
    glance = FakeGlance({("GET", ONE_MEMBER): httpx.Response(200, json=member_json("accepted"))})

    async def scenario(stub: pb_grpc.ImageServiceAsyncStub) -> pb.GetImageMemberResponse:
        request = pb.GetImageMemberRequest(image_id=ID, member_id=MEMBER)
        return await stub.GetImageMember(request, metadata=METADATA)

    response = run(glance, scenario)
    assert (glance.only_request.method, glance.only_request.url.path) == ("GET", ONE_MEMBER)
    assert response.member.status == pb.MEMBER_STATUS_ACCEPTED


@pytest.mark.parametrize(
    ("status", "word"),
    [
        (pb.MEMBER_STATUS_PENDING, "pending"),
        (pb.MEMBER_STATUS_ACCEPTED, "accepted"),
        (pb.MEMBER_STATUS_REJECTED, "rejected"),
    ],
)
def test_update_puts_the_status_glance_knows(status: pb.MemberStatus.ValueType, word: str) -> None:
    glance = FakeGlance({("PUT", ONE_MEMBER): httpx.Response(200, json=member_json(word))})

    async def scenario(stub: pb_grpc.ImageServiceAsyncStub) -> pb.UpdateImageMemberResponse:
        request = pb.UpdateImageMemberRequest(image_id=ID, member_id=MEMBER, status=status)
        return await stub.UpdateImageMember(request, metadata=METADATA)

    response = run(glance, scenario)
    sent = glance.only_request
    assert (sent.method, sent.url.path) == ("PUT", ONE_MEMBER)
    assert json_body(sent) == {"status": word}
    assert sent.headers["x-auth-token"] == TOKEN
    assert response.member.status == status


def test_delete_sends_delete_and_takes_glances_204() -> None:
    glance = FakeGlance({("DELETE", ONE_MEMBER): httpx.Response(204)})

    async def scenario(stub: pb_grpc.ImageServiceAsyncStub) -> pb.DeleteImageMemberResponse:
        request = pb.DeleteImageMemberRequest(image_id=ID, member_id=MEMBER)
        return await stub.DeleteImageMember(request, metadata=METADATA)

    assert run(glance, scenario) == pb.DeleteImageMemberResponse()
    sent = glance.only_request
    assert (sent.method, sent.url.path, sent.content) == ("DELETE", ONE_MEMBER, b"")
    assert sent.headers["x-auth-token"] == TOKEN


def test_list_images_passes_the_member_status_filter_to_glance() -> None:
    glance = FakeGlance({("GET", "/v2/images?member_status=pending&limit=26"): httpx.Response(200, json={})})

    async def scenario(stub: pb_grpc.ImageServiceAsyncStub) -> pb.ListImagesResponse:
        request = pb.ListImagesRequest(member_status=pb.MEMBER_STATUS_FILTER_PENDING)
        return await stub.ListImages(request, metadata=METADATA)

    assert run(glance, scenario) == pb.ListImagesResponse()
    assert glance.only_request.url.params.get_list("member_status") == ["pending"]


# -- bad input never reaches Glance --------------------------------------------------------------------

BAD_MEMBER_IDS = [
    ("", "MISSING_MEMBER_ID"),
    # Dot segments: httpx would resolve DELETE .../members/.. into DELETE /v2/images/<id>.
    ("..", "INVALID_MEMBER_ID"),
    (".", "INVALID_MEMBER_ID"),
    # Glance 33 stores these on create, then cannot find them by path.
    ("a/b", "INVALID_MEMBER_ID"),
    ("projet-é", "INVALID_MEMBER_ID"),
    ("x" * 256, "INVALID_MEMBER_ID"),
    ("a b", "INVALID_MEMBER_ID"),
    ("a?b", "INVALID_MEMBER_ID"),
]

# The async stub exists only in the type stubs (a stub on an aio channel is one).
Call = Callable[["pb_grpc.ImageServiceAsyncStub", str, str], Awaitable[object]]

# Each member RPC as (stub, image_id, member_id) -> its call, with the caller's token.
MEMBER_CALLS: dict[str, Call] = {
    "create": lambda stub, image, member: stub.CreateImageMember(
        pb.CreateImageMemberRequest(image_id=image, member_id=member), metadata=METADATA
    ),
    "get": lambda stub, image, member: stub.GetImageMember(
        pb.GetImageMemberRequest(image_id=image, member_id=member), metadata=METADATA
    ),
    "update": lambda stub, image, member: stub.UpdateImageMember(
        pb.UpdateImageMemberRequest(image_id=image, member_id=member, status=pb.MEMBER_STATUS_ACCEPTED),
        metadata=METADATA,
    ),
    "delete": lambda stub, image, member: stub.DeleteImageMember(
        pb.DeleteImageMemberRequest(image_id=image, member_id=member), metadata=METADATA
    ),
}
# Every RPC of the group; ListImageMembers names no member.
ALL_CALLS: dict[str, Call] = {
    **MEMBER_CALLS,
    "list": lambda stub, image, member: stub.ListImageMembers(
        pb.ListImageMembersRequest(image_id=image), metadata=METADATA
    ),
}


@pytest.mark.parametrize("rpc", sorted(MEMBER_CALLS))
@pytest.mark.parametrize(("member", "reason"), BAD_MEMBER_IDS)
def test_bad_member_ids_are_refused_before_glance(rpc: str, member: str, reason: str) -> None:
    glance = FakeGlance()
    failed = refused(glance, lambda stub: MEMBER_CALLS[rpc](stub, ID, member))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.reason == reason
    assert glance.requests == []


@pytest.mark.parametrize("rpc", sorted(ALL_CALLS))
@pytest.mark.parametrize(("image", "reason"), [("", "MISSING_IMAGE_ID"), ("../x", "INVALID_IMAGE_ID")])
def test_bad_image_ids_are_refused_before_glance(rpc: str, image: str, reason: str) -> None:
    glance = FakeGlance()
    failed = refused(glance, lambda stub: ALL_CALLS[rpc](stub, image, MEMBER))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.reason == reason
    assert glance.requests == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [(pb.MEMBER_STATUS_UNSPECIFIED, "MISSING_MEMBER_STATUS"), (7, "INVALID_ENUM")],
)
def test_update_needs_a_known_status(status: int, reason: str) -> None:
    glance = FakeGlance()
    request = pb.UpdateImageMemberRequest(image_id=ID, member_id=MEMBER)
    request.status = status  # type: ignore[assignment]  # an enum value this gateway does not know
    failed = refused(glance, lambda stub: stub.UpdateImageMember(request))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.reason == reason
    assert glance.requests == []


# -- Glance's refusals as statuses (messages measured on Glance 33) -------------------------------------

C = grpc.StatusCode
NOT_SHARED = C.FAILED_PRECONDITION, "IMAGE_NOT_SHARED"
DENIED = C.PERMISSION_DENIED, "PERMISSION_DENIED"

GLANCE_REFUSALS = [
    # POST on an image whose visibility is private, public or community.
    ("create", "POST", MEMBERS, 403, f"Not allowed to create members for image {ID}.", *NOT_SHARED),
    # A reader of the owner's project, or a member project adding another.
    ("create", "POST", MEMBERS, 403, "You are not authorized to complete add_member action.", *DENIED),
    (
        "create",
        "POST",
        MEMBERS,
        409,
        f"Member {MEMBER} is duplicated for image {ID}",
        C.ALREADY_EXISTS,
        "MEMBER_ALREADY_EXISTS",
    ),
    (
        "create",
        "POST",
        MEMBERS,
        413,
        f"Image member limit exceeded for image {ID}: The limit has been exceeded on the number of allowed "
        "image members for this image. Attempted: 129, Maximum: 128:",
        C.RESOURCE_EXHAUSTED,
        "LIMIT_EXCEEDED",
    ),
    ("create", "POST", MEMBERS, 404, f"Image {ID} not found.", C.NOT_FOUND, "NOT_FOUND"),
    (
        "list",
        "GET",
        MEMBERS,
        403,
        f"Not allowed to list members for image {ID}: Only shared images have members.",
        *NOT_SHARED,
    ),
    # Glance itself turns "not shared" into a 404 for a single member.
    ("get", "GET", ONE_MEMBER, 404, "Only shared images have members.", C.NOT_FOUND, "NOT_FOUND"),
    (
        "get",
        "GET",
        ONE_MEMBER,
        404,
        f"{MEMBER} not found in the member list of the image {ID}.",
        C.NOT_FOUND,
        "NOT_FOUND",
    ),
    # The owner, or a reader of the member project, setting the status.
    ("update", "PUT", ONE_MEMBER, 403, "You are not authorized to complete modify_member action.", *DENIED),
    ("update", "PUT", ONE_MEMBER, 403, f"Not allowed to update members for image {ID}.", *NOT_SHARED),
    (
        "delete",
        "DELETE",
        ONE_MEMBER,
        403,
        "You are not authorized to complete delete_member action.",
        *DENIED,
    ),
    ("delete", "DELETE", ONE_MEMBER, 403, f"Not allowed to delete members for image {ID}.", *NOT_SHARED),
]


@pytest.mark.parametrize(("rpc", "method", "path", "status", "message", "code", "reason"), GLANCE_REFUSALS)
def test_glance_refusals_become_statuses(
    rpc: str, method: str, path: str, status: int, message: str, code: grpc.StatusCode, reason: str
) -> None:
    glance = FakeGlance({(method, path): glance_error(status, message)})
    failed = refused(glance, lambda stub: ALL_CALLS[rpc](stub, ID, MEMBER))
    assert (failed.code, failed.reason) == (code, reason)
    assert failed.details == message  # Glance's words, its HTML noise gone
    assert (failed.metadata["glance_status"], failed.metadata["image_id"]) == (str(status), ID)
    assert (glance.only_request.method, glance.only_request.url.path) == (method, path)


def test_the_service_serves_the_member_groups_methods() -> None:
    for name in (
        "CreateImageMember",
        "ListImageMembers",
        "GetImageMember",
        "UpdateImageMember",
        "DeleteImageMember",
    ):
        assert getattr(ImageService, name) is getattr(MemberRpcs, name), name
