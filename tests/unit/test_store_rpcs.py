"""The store RPCs (gateway/store_rpcs.py), served in-process through a real channel (servicer_harness) in
front of a Glance behind httpx.MockTransport, and their conversions (gateway/convert/info.py)."""

from __future__ import annotations

import grpc
import pytest
from unit.servicer_harness import GLANCE_REQUEST_ID, Glance, Rpc, call_rpc

from gateway.convert import info
from generated.glance.gateway.v1 import image_service_pb2 as pb

C = grpc.StatusCode
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
CALLER = (("x-auth-token", "tok-store"), ("x-request-id", "req-caller-1"))
STORES_JSON = {
    "stores": [
        {"id": "file", "default": "true", "description": "local disk"},
        {"id": "file2"},
        {"id": "web", "read-only": "true"},
    ]
}


def list_stores() -> Rpc:
    return lambda stub: stub.ListStores(pb.ListStoresRequest(), metadata=CALLER)


def delete_from(image_id: str, store_id: str) -> Rpc:
    request = pb.DeleteImageFromStoreRequest(image_id=image_id, store_id=store_id)
    return lambda stub: stub.DeleteImageFromStore(request, metadata=CALLER)


# -- ListStores ------------------------------------------------------------------------------------------


def test_list_stores_asks_glance_for_its_stores_as_the_caller() -> None:
    glance = Glance(200, STORES_JSON)
    outcome = call_rpc(glance, list_stores())
    assert outcome.failed is None
    assert list(outcome.response.stores) == [
        pb.Store(id="file", description="local disk", is_default=True),
        pb.Store(id="file2"),
        pb.Store(id="web", read_only=True),
    ]
    (request,) = glance.requests
    assert (request.method, request.url.path, request.url.query) == ("GET", "/v2/info/stores", b"")
    assert request.headers["x-auth-token"] == "tok-store"
    assert request.headers["x-openstack-request-id"] == "req-caller-1"


def test_a_glance_without_multiple_stores_has_no_stores_to_list() -> None:
    # Glance's answer when enabled_backends is not set: 404 "Multi backend is not supported at this site."
    glance = Glance(404, {"message": "Multi backend is not supported at this site."})
    outcome = call_rpc(glance, list_stores())
    assert outcome.failed is None and list(outcome.response.stores) == []


@pytest.mark.parametrize("body", [b"<html>not json</html>", [{"id": "file"}]])
def test_a_stores_answer_that_is_no_json_object_is_internal(body: object) -> None:
    outcome = call_rpc(Glance(200, body), list_stores())
    assert outcome.response is None and outcome.failed is not None
    assert (outcome.failed.code, outcome.failed.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")


def test_list_stores_passes_glances_other_failures_on() -> None:
    failed = call_rpc(Glance(401, {"message": "This server could not verify"}), list_stores()).failed
    assert failed is not None
    assert (failed.code, failed.reason, failed.metadata["request_id"]) == (
        C.UNAUTHENTICATED,
        "UNAUTHENTICATED",
        GLANCE_REQUEST_ID,
    )


@pytest.mark.parametrize(
    ("entry", "store"),
    [
        ({"id": "a", "default": "true"}, pb.Store(id="a", is_default=True)),
        ({"id": "a", "default": True}, pb.Store(id="a", is_default=True)),
        ({"id": "a", "default": "True"}, pb.Store(id="a", is_default=True)),
        ({"id": "a", "default": "false"}, pb.Store(id="a")),
        ({"id": "a", "default": False, "read-only": False}, pb.Store(id="a")),
        ({"id": "a", "default": None, "description": None}, pb.Store(id="a")),
        (
            {"id": "h", "read-only": "true", "description": "web"},
            pb.Store(id="h", description="web", read_only=True),
        ),
    ],
)
def test_store_flags_come_as_strings_or_booleans(entry: dict[str, object], store: pb.Store) -> None:
    assert info.stores_to_proto([entry]) == [store]


@pytest.mark.parametrize(
    "body",
    [{}, {"stores": None}, {"stores": "file"}, {"stores": [None, "file", {"default": "true"}, {"id": ""}]}],
)
def test_stores_glance_does_not_name_are_left_out(body: dict[str, object]) -> None:
    outcome = call_rpc(Glance(200, body), list_stores())
    assert outcome.failed is None and outcome.response == pb.ListStoresResponse()


# -- DeleteImageFromStore ------------------------------------------------------------------------------


def test_delete_from_store_sends_the_store_and_the_image_in_the_path() -> None:
    glance = Glance(204)
    outcome = call_rpc(glance, delete_from(IMAGE.upper(), "file2"))
    assert outcome.failed is None and outcome.response == pb.DeleteImageFromStoreResponse()
    (request,) = glance.requests
    assert (request.method, request.url.path) == ("DELETE", f"/v2/stores/file2/{IMAGE}")
    assert request.content == b"" and request.headers["x-auth-token"] == "tok-store"


@pytest.mark.parametrize(
    ("image_id", "store_id", "reason"),
    [
        (IMAGE, "", "MISSING_STORE_ID"),
        (IMAGE, "../file", "INVALID_STORE"),
        (IMAGE, "file/x", "INVALID_STORE"),
        (IMAGE, "file?x=1", "INVALID_STORE"),
        (IMAGE, "s" * 256, "INVALID_STORE"),
        ("", "file", "MISSING_IMAGE_ID"),
        ("not-a-uuid", "file", "INVALID_IMAGE_ID"),
    ],
)
def test_delete_from_store_refuses_bad_ids_before_glance(image_id: str, store_id: str, reason: str) -> None:
    glance = Glance(204)
    failed = call_rpc(glance, delete_from(image_id, store_id)).failed
    assert failed is not None
    assert (failed.code, failed.reason) == (C.INVALID_ARGUMENT, reason)
    assert glance.requests == []


# Glance 33's answers (glance/api/v2/images.py delete_from_store), and the statuses they become.
@pytest.mark.parametrize(
    ("status", "message", "code", "reason"),
    [
        (
            403,
            "Cannot delete image data from the only store containing it. "
            "Consider deleting the image instead.",
            C.FAILED_PRECONDITION,
            "ONLY_STORE",
        ),
        (404, f"Image {IMAGE} is not stored in store file2.", C.NOT_FOUND, "IMAGE_NOT_IN_STORE"),
        (404, f"Failed to find image {IMAGE}", C.NOT_FOUND, "NOT_FOUND"),
        (
            409,
            "The selected store nosuch is not available on this node.",
            C.INVALID_ARGUMENT,
            "UNKNOWN_STORE",
        ),
        (
            409,
            "It's not allowed to remove image data from store if image status is not 'active'",
            C.FAILED_PRECONDITION,
            "IMAGE_NOT_ACTIVE",
        ),
        (
            403,
            "You are not authorized to complete delete_image_location action.",
            C.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        ),
    ],
)
def test_delete_from_store_failures(status: int, message: str, code: grpc.StatusCode, reason: str) -> None:
    failed = call_rpc(Glance.error(status, message), delete_from(IMAGE, "file2")).failed
    assert failed is not None
    assert (failed.code, failed.reason, failed.details) == (code, reason, message)
    assert failed.metadata == {
        "image_id": IMAGE,
        "glance_status": str(status),
        "request_id": GLANCE_REQUEST_ID,
    }
