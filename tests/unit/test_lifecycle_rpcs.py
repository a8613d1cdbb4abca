"""The lifecycle RPCs (gateway/lifecycle_rpcs.py: deactivate, reactivate, quota usage) and the usage
conversion (gateway/convert/info.py), against a Glance behind httpx.MockTransport, with a fake grpc.aio
context."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.convert import info
from gateway.glance_client import GlanceClient
from gateway.lifecycle_rpcs import LifecycleRpcs
from gateway.upload import Uploads
from generated.glance.gateway.v1 import image_service_pb2 as pb

C = grpc.StatusCode
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
GLANCE_REQUEST_ID = "req-11111111-2222-3333-4444-555555555555"
CALLER = (("x-auth-token", "tok-life"), ("x-request-id", "req-caller-2"))


class Context:
    """What RpcScope uses of grpc.aio.ServicerContext; abort raises AbortError, as grpc.aio's does."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str, error_details_pb2.ErrorInfo] | None = None
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return CALLER

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]
    ) -> None:
        status = status_pb2.Status.FromString(dict(trailing_metadata)["grpc-status-details-bin"])
        error = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(error)
        self.status = (code, details, error)
        raise grpc.aio.AbortError()


class Glance:
    """Answers every request with `status` and `body` (JSON when not bytes), recording the requests."""

    def __init__(self, status: int = 204, body: object = None) -> None:
        self.status = status
        self.body = body
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"x-openstack-request-id": GLANCE_REQUEST_ID}
        if isinstance(self.body, bytes):
            return httpx.Response(self.status, content=self.body, headers=headers)
        if self.body is None:
            return httpx.Response(self.status, headers=headers)
        return httpx.Response(self.status, json=self.body, headers=headers)


Rpc = Callable[[LifecycleRpcs, Any], Awaitable[Any]]


def call(glance: Glance, rpc: Rpc) -> tuple[Any, Context]:
    """Runs one RPC of the group; its response (None when it failed) and the context with its status."""
    context = Context()

    async def main() -> Any:
        settings = Settings(glance_url="http://glance.test")
        client = GlanceClient(settings, transport=httpx.MockTransport(glance.handle))
        # One group alone: to mypy the service's other methods are abstract, at run time they are not needed.
        group = LifecycleRpcs(settings, client, Uploads(client, Janitor(client), 5.0))  # type: ignore[abstract]
        try:
            return await rpc(group, cast("grpc.aio.ServicerContext[Any, Any]", context))
        except grpc.aio.AbortError:
            return None

    return asyncio.run(main()), context


def deactivate(image_id: str) -> Rpc:
    def rpc(group: LifecycleRpcs, context: Any) -> Awaitable[pb.DeactivateImageResponse]:
        return group.DeactivateImage(pb.DeactivateImageRequest(image_id=image_id), context)

    return rpc


def reactivate(image_id: str) -> Rpc:
    def rpc(group: LifecycleRpcs, context: Any) -> Awaitable[pb.ReactivateImageResponse]:
        return group.ReactivateImage(pb.ReactivateImageRequest(image_id=image_id), context)

    return rpc


def quota_usage(group: LifecycleRpcs, context: Any) -> Awaitable[pb.GetQuotaUsageResponse]:
    return group.GetQuotaUsage(pb.GetQuotaUsageRequest(), context)


def glance_error(status: int, message: str) -> Glance:
    return Glance(status, {"message": message + "<br /><br />\n\n\n", "code": f"{status} x", "title": "x"})


# -- DeactivateImage, ReactivateImage -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpc", "action", "response"),
    [
        (deactivate(IMAGE.upper()), "deactivate", pb.DeactivateImageResponse()),
        (reactivate(IMAGE.upper()), "reactivate", pb.ReactivateImageResponse()),
    ],
)
def test_an_action_is_a_bodiless_post_as_the_caller(rpc: Rpc, action: str, response: object) -> None:
    glance = Glance(204)
    answer, context = call(glance, rpc)
    assert context.status is None and answer == response
    (request,) = glance.requests
    assert (request.method, request.url.path) == ("POST", f"/v2/images/{IMAGE}/actions/{action}")
    assert request.content == b"" and "content-type" not in request.headers
    assert request.headers["x-auth-token"] == "tok-life"
    assert request.headers["x-openstack-request-id"] == "req-caller-2"
    assert context.trailing == (("x-openstack-request-id", GLANCE_REQUEST_ID),)


@pytest.mark.parametrize("rpc", [deactivate("nope"), reactivate(""), deactivate(IMAGE + "/x")])
def test_a_bad_image_id_is_refused_before_glance(rpc: Rpc) -> None:
    glance = Glance(204)
    _, context = call(glance, rpc)
    assert context.status is not None
    code, _, error = context.status
    assert code == C.INVALID_ARGUMENT and error.reason in ("INVALID_IMAGE_ID", "MISSING_IMAGE_ID")
    assert glance.requests == []


# Glance 33's answers (glance/api/v2/image_actions.py, glance/domain Image.deactivate/reactivate).
@pytest.mark.parametrize(
    ("rpc", "status", "message", "code", "reason"),
    [
        (
            deactivate(IMAGE),
            403,
            "Not allowed to deactivate image in status 'queued'",
            C.FAILED_PRECONDITION,
            "IMAGE_NOT_ACTIVE",
        ),
        (
            reactivate(IMAGE),
            403,
            "Not allowed to reactivate image in status 'queued'",
            C.FAILED_PRECONDITION,
            "IMAGE_NOT_DEACTIVATED",
        ),
        (
            deactivate(IMAGE),
            403,
            "You are not authorized to complete deactivate action.",
            C.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        ),
        (
            reactivate(IMAGE),
            403,
            "You are not authorized to complete reactivate action.",
            C.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        ),
        (deactivate(IMAGE), 404, f"No image found with ID {IMAGE}", C.NOT_FOUND, "NOT_FOUND"),
        (reactivate(IMAGE), 500, "Internal Server Error", C.INTERNAL, "GLANCE_INTERNAL_ERROR"),
    ],
)
def test_action_failures(rpc: Rpc, status: int, message: str, code: grpc.StatusCode, reason: str) -> None:
    _, context = call(glance_error(status, message), rpc)
    assert context.status is not None
    got_code, details, error = context.status
    assert (got_code, error.reason, details) == (code, reason, message)
    assert dict(error.metadata) == {
        "image_id": IMAGE,
        "glance_status": str(status),
        "request_id": GLANCE_REQUEST_ID,
    }


# -- GetQuotaUsage --------------------------------------------------------------------------------------


def test_quota_usage_without_unified_limits_is_empty() -> None:
    glance = Glance(200, {"usage": {}})
    response, context = call(glance, quota_usage)
    assert context.status is None and response == pb.GetQuotaUsageResponse()
    (request,) = glance.requests
    assert (request.method, request.url.path, request.url.query) == ("GET", "/v2/info/usage", b"")
    assert request.headers["x-auth-token"] == "tok-life"


def test_quota_usage_with_unified_limits_maps_each_quota() -> None:
    body = {
        "usage": {
            "image_size_total": {"usage": 3, "limit": 1000},
            "image_stage_total": {"usage": 0, "limit": -1},
            "image_count_total": {"usage": 2, "limit": 10},
            "image_count_uploading": {"usage": 0, "limit": 0},
        }
    }
    response, context = call(Glance(200, body), quota_usage)
    assert context.status is None
    assert {name: (quota.usage, quota.limit) for name, quota in response.usage.items()} == {
        "image_size_total": (3, 1000),
        "image_stage_total": (0, -1),  # Keystone's "unlimited"
        "image_count_total": (2, 10),
        "image_count_uploading": (0, 0),
    }


@pytest.mark.parametrize("body", [b"<html>oops</html>", ["usage"]])
def test_a_usage_answer_that_is_no_json_object_is_internal(body: object) -> None:
    response, context = call(Glance(200, body), quota_usage)
    assert response is None and context.status is not None
    code, _, error = context.status
    assert (code, error.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {}),
        ({"usage": None}, {}),
        ({"usage": ["image_count_total"]}, {}),
        ({"usage": {"image_count_total": 5}}, {}),
        ({"usage": {"image_count_total": {"usage": 5}}}, {"image_count_total": (5, 0)}),
        ({"usage": {"x": {"usage": True, "limit": "7"}}}, {"x": (0, 0)}),
        ({"usage": {"x": {"usage": 1.5, "limit": None}}}, {"x": (0, 0)}),
    ],
)
def test_usage_entries_that_are_not_counts_are_not_invented(
    body: dict[str, object], expected: dict[str, tuple[int, int]]
) -> None:
    response = info.usage_to_proto(body)
    assert {name: (quota.usage, quota.limit) for name, quota in response.usage.items()} == expected
