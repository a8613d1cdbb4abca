"""The store RPCs (gateway/store_rpcs.py) and their conversions (gateway/convert/info.py), against a Glance
behind httpx.MockTransport, with a fake grpc.aio context that records the call's status."""

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
from gateway.store_rpcs import StoreRpcs
from gateway.upload import Uploads
from generated.glance.gateway.v1 import image_service_pb2 as pb

C = grpc.StatusCode
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
GLANCE_REQUEST_ID = "req-11111111-2222-3333-4444-555555555555"
CALLER = (("x-auth-token", "tok-store"), ("x-request-id", "req-caller-1"))
STORES_JSON = {
    "stores": [
        {"id": "file", "default": "true", "description": "local disk"},
        {"id": "file2"},
        {"id": "web", "read-only": "true"},
    ]
}


class Context:
    """What RpcScope uses of grpc.aio.ServicerContext; abort raises AbortError, as grpc.aio's does."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str, error_details_pb2.ErrorInfo] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return CALLER

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

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

    def __init__(self, status: int = 200, body: object = None) -> None:
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


Rpc = Callable[[StoreRpcs, Any], Awaitable[Any]]


def call(glance: Glance, rpc: Rpc) -> tuple[Any, Context]:
    """Runs one RPC of the group; its response (None when it failed) and the context with its status."""
    context = Context()

    async def main() -> Any:
        settings = Settings(glance_url="http://glance.test")
        client = GlanceClient(settings, transport=httpx.MockTransport(glance.handle))
        # One group alone: to mypy the service's other methods are abstract, at run time they are not needed.
        group = StoreRpcs(settings, client, Uploads(client, Janitor(client), 5.0))  # type: ignore[abstract]
        try:
            return await rpc(group, cast("grpc.aio.ServicerContext[Any, Any]", context))
        except grpc.aio.AbortError:
            return None

    return asyncio.run(main()), context


def list_stores(group: StoreRpcs, context: Any) -> Awaitable[pb.ListStoresResponse]:
    return group.ListStores(pb.ListStoresRequest(), context)


def delete_from(image_id: str, store_id: str) -> Rpc:
    def rpc(group: StoreRpcs, context: Any) -> Awaitable[pb.DeleteImageFromStoreResponse]:
        request = pb.DeleteImageFromStoreRequest(image_id=image_id, store_id=store_id)
        return group.DeleteImageFromStore(request, context)

    return rpc


# -- ListStores ------------------------------------------------------------------------------------------


def test_list_stores_asks_glance_for_its_stores_as_the_caller() -> None:
    glance = Glance(200, STORES_JSON)
    response, context = call(glance, list_stores)
    assert context.status is None
    assert list(response.stores) == [
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
    response, context = call(glance, list_stores)
    assert context.status is None and list(response.stores) == []


@pytest.mark.parametrize("body", [b"<html>not json</html>", [{"id": "file"}]])
def test_a_stores_answer_that_is_no_json_object_is_internal(body: object) -> None:
    response, context = call(Glance(200, body), list_stores)
    assert response is None and context.status is not None
    code, _, error = context.status
    assert (code, error.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")


def test_list_stores_passes_glances_other_failures_on() -> None:
    _, context = call(Glance(401, {"message": "This server could not verify"}), list_stores)
    assert context.status is not None
    code, _, error = context.status
    assert (code, error.reason, error.metadata["request_id"]) == (
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
    response, context = call(Glance(200, body), list_stores)
    assert context.status is None and response == pb.ListStoresResponse()


# -- DeleteImageFromStore ------------------------------------------------------------------------------


def test_delete_from_store_sends_the_store_and_the_image_in_the_path() -> None:
    glance = Glance(204)
    response, context = call(glance, delete_from(IMAGE.upper(), "file2"))
    assert context.status is None and response == pb.DeleteImageFromStoreResponse()
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
    _, context = call(glance, delete_from(image_id, store_id))
    assert context.status is not None
    code, _, error = context.status
    assert (code, error.reason) == (C.INVALID_ARGUMENT, reason)
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
    glance = Glance(status, {"message": message + "<br /><br />\n\n\n", "code": f"{status} x", "title": "x"})
    _, context = call(glance, delete_from(IMAGE, "file2"))
    assert context.status is not None
    got_code, details, error = context.status
    assert (got_code, error.reason, details) == (code, reason, message)
    assert dict(error.metadata) == {
        "image_id": IMAGE,
        "glance_status": str(status),
        "request_id": GLANCE_REQUEST_ID,
    }
