"""The lifecycle RPCs (gateway/lifecycle_rpcs.py: deactivate, reactivate, quota usage), served in-process
through a real channel (servicer_harness) in front of a Glance behind httpx.MockTransport, and the usage
conversion (gateway/convert/info.py)."""

from __future__ import annotations

import grpc
import pytest
from unit.servicer_harness import GLANCE_REQUEST_ID, Glance, Rpc, call_rpc

from gateway.convert import info
from generated.glance.gateway.v1 import image_service_pb2 as pb

C = grpc.StatusCode
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
CALLER = (("x-auth-token", "tok-life"), ("x-request-id", "req-caller-2"))


def deactivate(image_id: str) -> Rpc:
    return lambda stub: stub.DeactivateImage(pb.DeactivateImageRequest(image_id=image_id), metadata=CALLER)


def reactivate(image_id: str) -> Rpc:
    return lambda stub: stub.ReactivateImage(pb.ReactivateImageRequest(image_id=image_id), metadata=CALLER)


def quota_usage() -> Rpc:
    return lambda stub: stub.GetQuotaUsage(pb.GetQuotaUsageRequest(), metadata=CALLER)


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
    outcome = call_rpc(glance, rpc)
    assert outcome.failed is None and outcome.response == response
    (request,) = glance.requests
    assert (request.method, request.url.path) == ("POST", f"/v2/images/{IMAGE}/actions/{action}")
    assert request.content == b"" and "content-type" not in request.headers
    assert request.headers["x-auth-token"] == "tok-life"
    assert request.headers["x-openstack-request-id"] == "req-caller-2"
    assert outcome.trailing == (("x-openstack-request-id", GLANCE_REQUEST_ID),)


@pytest.mark.parametrize("rpc", [deactivate("nope"), reactivate(""), deactivate(IMAGE + "/x")])
def test_a_bad_image_id_is_refused_before_glance(rpc: Rpc) -> None:
    glance = Glance(204)
    failed = call_rpc(glance, rpc).failed
    assert failed is not None
    assert failed.code == C.INVALID_ARGUMENT and failed.reason in ("INVALID_IMAGE_ID", "MISSING_IMAGE_ID")
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
    failed = call_rpc(Glance.error(status, message), rpc).failed
    assert failed is not None
    assert (failed.code, failed.reason, failed.details) == (code, reason, message)
    assert failed.metadata == {
        "image_id": IMAGE,
        "glance_status": str(status),
        "request_id": GLANCE_REQUEST_ID,
    }


# -- GetQuotaUsage --------------------------------------------------------------------------------------


def test_quota_usage_without_unified_limits_is_empty() -> None:
    glance = Glance(200, {"usage": {}})
    outcome = call_rpc(glance, quota_usage())
    assert outcome.failed is None and outcome.response == pb.GetQuotaUsageResponse()
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
    outcome = call_rpc(Glance(200, body), quota_usage())
    assert outcome.failed is None
    assert {name: (quota.usage, quota.limit) for name, quota in outcome.response.usage.items()} == {
        "image_size_total": (3, 1000),
        "image_stage_total": (0, -1),  # Keystone's "unlimited"
        "image_count_total": (2, 10),
        "image_count_uploading": (0, 0),
    }


@pytest.mark.parametrize("body", [b"<html>oops</html>", ["usage"]])
def test_a_usage_answer_that_is_no_json_object_is_internal(body: object) -> None:
    outcome = call_rpc(Glance(200, body), quota_usage())
    assert outcome.response is None and outcome.failed is not None
    assert (outcome.failed.code, outcome.failed.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")


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
