"""The image RPCs (gateway/image_rpcs.py) as servicer.ImageService serves them: the grpc.aio server that
gateway/server.py builds, in this process (servicer_harness.serving), in front of a Glance behind
httpx.MockTransport. Each test checks the REST requests an RPC sends (method, path, query, body, the caller's
token and request id) and the status a Glance failure becomes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from unit import servicer_harness
from unit.servicer_harness import GLANCE, Failed, failure

from gateway import upload_marker
from generated.glance.gateway.v1 import image_service_pb2 as pb

if TYPE_CHECKING:
    from unit.servicer_harness import Stub

C = grpc.StatusCode
IMAGE = "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
OTHER = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TOKEN = "servicer-token-Z9"
CALLER_REQUEST_ID = "req-caller-42"
METADATA = (("x-auth-token", TOKEN), ("x-request-id", CALLER_REQUEST_ID))
DATA = bytes(range(256)) * 40


@dataclass
class Seen:
    """One request the gateway sent Glance."""

    method: str
    path: str  # as sent, percent-encoding kept
    query: list[tuple[str, str]]
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


Answer = Callable[[httpx.Request], httpx.Response]


class Glance:
    """Answers each (method, path) as told with `on`; anything else is 404. Every answer carries an
    x-openstack-request-id of its own: req-glance-1, req-glance-2, ..."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._answers: dict[tuple[str, str], Answer] = {}

    def on(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: object = None,
        *,
        content: bytes | None = None,
        answer: Answer | None = None,
    ) -> None:
        def reply(request: httpx.Request) -> httpx.Response:
            if content is not None:
                return httpx.Response(status, content=content)
            if body is None:
                return httpx.Response(status)
            return httpx.Response(status, json=body)

        self._answers[(method, path)] = answer or reply

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.seen.append(
            Seen(
                request.method,
                url.raw_path.decode().partition("?")[0],
                list(url.params.multi_items()),
                {key.lower(): value for key, value in request.headers.items()},
                request.content,
            )
        )
        answer = self._answers.get((request.method, url.path))
        response = answer(request) if answer else httpx.Response(404, json={"message": "no such route"})
        response.headers["x-openstack-request-id"] = f"req-glance-{len(self.seen)}"
        return response


class Body(httpx.AsyncByteStream):
    """Image data as a body still to be read, as the gateway reads downloads (httpx reads bytes given as
    `content` at once, and then refuses to stream them)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), 1000):
            yield self._data[start : start + 1000]


def streamed(status: int, data: bytes) -> httpx.Response:
    return httpx.Response(status, headers={"content-length": str(len(data))}, stream=Body(data))


def image_json(image_id: str = IMAGE, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": image_id, "name": "cirros", "status": "active", "visibility": "private", "size": len(DATA),
        "disk_format": "raw", "container_format": "bare", "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(DATA).hexdigest(), "checksum": hashlib.md5(DATA).hexdigest(),
        "tags": [], "protected": False, "os_hidden": False, "min_ram": 0, "min_disk": 0, "owner": "p1",
        "stores": "file", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
    }  # fmt: skip
    body.update(fields)
    return body


Scenario = Callable[["Stub"], Awaitable[Any]]


def run(glance: Glance, scenario: Scenario) -> Any:
    return servicer_harness.run(httpx.MockTransport(glance.handle), scenario)


def assert_from_caller(seen: Seen) -> None:
    """The caller's token and request id go to Glance as they came."""
    assert seen.headers["x-auth-token"] == TOKEN
    assert seen.headers["x-openstack-request-id"] == CALLER_REQUEST_ID
    assert seen.headers["user-agent"] == "glance-grpc-gateway"


# -- what each RPC asks of Glance ----------------------------------------------------------------------


def test_list_images_sends_filters_and_one_more_than_the_page_then_the_marker() -> None:
    glance = Glance()
    ids = [f"{n}0000000-0000-4000-8000-000000000000" for n in range(1, 4)]
    glance.on("GET", "/v2/images", body={"images": [image_json(i, name=f"n{i[0]}") for i in ids]})
    request = pb.ListImagesRequest(
        page_size=2, name="cirros", visibility=pb.VISIBILITY_SHARED, tags=["x", "y"], view=pb.IMAGE_VIEW_FULL
    )

    async def scenario(stub: Stub) -> tuple[Any, Any, Any]:
        call = stub.ListImages(request, metadata=METADATA)
        first = await call
        trailing = await call.trailing_metadata()
        request.page_token = first.next_page_token
        second = await stub.ListImages(request, metadata=METADATA)
        return first, trailing, second

    first, trailing, _ = run(glance, scenario)
    assert [image.id for image in first.images] == ids[:2]
    assert first.images[0].name == "n1" and first.images[0].owner == "p1"  # the FULL view
    assert first.next_page_token
    filters = [("name", "cirros"), ("visibility", "shared"), ("tag", "x"), ("tag", "y")]
    (one, two) = glance.seen
    assert (one.method, one.path, one.query) == ("GET", "/v2/images", [*filters, ("limit", "3")])
    # The next page starts after the last image the client got, not after the extra one.
    assert two.query == [*filters, ("limit", "3"), ("marker", ids[1])]
    assert_from_caller(one)
    assert ("x-openstack-request-id", "req-glance-1") in tuple(trailing)


def test_get_image_meta_by_id_or_by_uri() -> None:
    glance = Glance()
    glance.on("GET", f"/v2/images/{IMAGE}", body=image_json(tags=["b", "a"], custom="v"))

    async def scenario(stub: Stub) -> tuple[Any, Any]:
        by_id = await stub.GetImageMeta(pb.GetImageMetaRequest(image_id=IMAGE.upper()), metadata=METADATA)
        uri = f"{GLANCE}/v2/images/{IMAGE}"
        by_uri = await stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=uri), metadata=METADATA)
        return by_id, by_uri

    by_id, by_uri = run(glance, scenario)
    assert by_id == by_uri
    image = by_id.image
    assert (image.id, image.name, image.status, image.size) == (
        IMAGE,
        "cirros",
        pb.IMAGE_STATUS_ACTIVE,
        len(DATA),
    )
    assert (list(image.tags), dict(image.properties), image.uri) == (
        ["a", "b"],
        {"custom": "v"},
        f"{GLANCE}/v2/images/{IMAGE}",
    )
    assert [(s.method, s.path, s.content) for s in glance.seen] == [("GET", f"/v2/images/{IMAGE}", b"")] * 2
    assert_from_caller(glance.seen[0])


def test_get_image_reads_the_metadata_then_the_data_and_verifies_it() -> None:
    glance = Glance()
    glance.on("GET", f"/v2/images/{IMAGE}", body=image_json())
    glance.on("GET", f"/v2/images/{IMAGE}/file", answer=lambda request: streamed(200, DATA))

    async def scenario(stub: Stub) -> list[pb.GetImageResponse]:
        return [r async for r in stub.GetImage(pb.GetImageRequest(image_id=IMAGE), metadata=METADATA)]

    header, *chunks = run(glance, scenario)
    assert header.header.length == len(DATA) and header.header.verified
    assert b"".join(chunk.data for chunk in chunks) == DATA
    meta, data = glance.seen
    assert (meta.method, meta.path, data.method, data.path) == (
        "GET",
        f"/v2/images/{IMAGE}",
        "GET",
        f"/v2/images/{IMAGE}/file",
    )
    assert "range" not in data.headers
    assert_from_caller(data)


def test_get_image_asks_for_a_byte_range() -> None:
    glance = Glance()
    glance.on("GET", f"/v2/images/{IMAGE}", body=image_json())
    glance.on("GET", f"/v2/images/{IMAGE}/file", answer=lambda request: streamed(206, DATA[100:150]))

    async def scenario(stub: Stub) -> list[pb.GetImageResponse]:
        request = pb.GetImageRequest(image_id=IMAGE, offset=100, limit=50)
        return [r async for r in stub.GetImage(request, metadata=METADATA)]

    header, *chunks = run(glance, scenario)
    assert (header.header.offset, header.header.length, header.header.verified) == (100, 50, False)
    assert b"".join(chunk.data for chunk in chunks) == DATA[100:150]
    assert glance.seen[1].headers["range"] == "bytes=100-149"


def test_add_image_creates_the_marked_record_uploads_the_data_and_shows_the_image() -> None:
    glance = Glance()
    glance.on("POST", "/v2/images", 201, image_json(status="queued", size=None))
    glance.on("PUT", f"/v2/images/{IMAGE}/file", 204)
    glance.on("GET", f"/v2/images/{IMAGE}", body=image_json())
    spec = pb.ImageSpec(
        id=IMAGE, name="cirros", type=pb.IMAGE_TYPE_RAW, size=len(DATA), tags=["t"], properties={"k": "v"}
    )

    async def messages() -> AsyncIterator[pb.AddImageRequest]:
        yield pb.AddImageRequest(spec=spec)
        for start in range(0, len(DATA), 4096):
            yield pb.AddImageRequest(data=DATA[start : start + 4096])

    async def scenario(stub: Stub) -> pb.AddImageResponse:
        response: pb.AddImageResponse = await stub.AddImage(messages(), metadata=METADATA)
        return response

    response = run(glance, scenario)
    assert response.image.id == IMAGE and response.image.status == pb.IMAGE_STATUS_ACTIVE
    create, upload, show = glance.seen
    assert (create.method, create.path) == ("POST", "/v2/images")
    assert create.headers["content-type"] == "application/json"
    assert create.json() == {
        "id": IMAGE, "name": "cirros", "disk_format": "raw", "container_format": "bare",
        "visibility": "private", "tags": ["t"], "k": "v", upload_marker.KEY: upload_marker.VALUE,
    }  # fmt: skip
    assert (upload.method, upload.path, upload.content) == ("PUT", f"/v2/images/{IMAGE}/file", DATA)
    assert upload.headers["content-type"] == "application/octet-stream"
    assert upload.headers["x-openstack-image-size"] == str(len(DATA))
    assert (show.method, show.path) == ("GET", f"/v2/images/{IMAGE}")
    for seen in glance.seen:
        assert_from_caller(seen)


def test_update_image_sends_a_json_patch() -> None:
    glance = Glance()
    glance.on("PATCH", f"/v2/images/{IMAGE}", body=image_json(name="new", tags=["a", "b"]))
    request = pb.UpdateImageRequest(
        image_id=IMAGE,
        image=pb.Image(name="new", tags=["b", "a"], min_ram_mib=512),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "tags", "min_ram_mib"]),
    )

    async def scenario(stub: Stub) -> pb.UpdateImageResponse:
        response: pb.UpdateImageResponse = await stub.UpdateImage(request, metadata=METADATA)
        return response

    response = run(glance, scenario)
    assert response.image.name == "new"
    (patch,) = glance.seen
    assert (patch.method, patch.path) == ("PATCH", f"/v2/images/{IMAGE}")
    assert patch.headers["content-type"] == "application/openstack-images-v2.1-json-patch"
    assert patch.json() == [
        {"op": "replace", "path": "/name", "value": "new"},
        {"op": "replace", "path": "/tags", "value": ["a", "b"]},
        {"op": "replace", "path": "/min_ram", "value": 512},
    ]
    assert_from_caller(patch)


def test_update_of_properties_reads_the_image_first_to_remove_the_ones_left_out() -> None:
    glance = Glance()
    glance.on("GET", f"/v2/images/{IMAGE}", body=image_json(old="1", kept="2"))
    glance.on("PATCH", f"/v2/images/{IMAGE}", body=image_json(kept="3"))
    request = pb.UpdateImageRequest(
        image_id=IMAGE,
        image=pb.Image(properties={"kept": "3"}),
        update_mask=field_mask_pb2.FieldMask(paths=["properties"]),
    )

    async def scenario(stub: Stub) -> None:
        await stub.UpdateImage(request, metadata=METADATA)

    run(glance, scenario)
    show, patch = glance.seen
    assert (show.method, patch.method) == ("GET", "PATCH")
    assert patch.json() == [
        {"op": "remove", "path": "/old"},
        {"op": "add", "path": "/kept", "value": "3"},
    ]


def test_delete_image_and_tags_are_bodiless_requests_on_their_paths() -> None:
    glance = Glance()
    glance.on("DELETE", f"/v2/images/{IMAGE}", 204)
    glance.on("PUT", f"/v2/images/{IMAGE}/tags/two words", 204)
    glance.on("DELETE", f"/v2/images/{IMAGE}/tags/two words", 204)

    async def scenario(stub: Stub) -> list[object]:
        return [
            await stub.AddImageTag(pb.AddImageTagRequest(image_id=IMAGE, tag="two words"), metadata=METADATA),
            await stub.RemoveImageTag(
                pb.RemoveImageTagRequest(image_id=IMAGE, tag="two words"), metadata=METADATA
            ),
            await stub.DeleteImage(pb.DeleteImageRequest(image_id=IMAGE), metadata=METADATA),
        ]

    responses = run(glance, scenario)
    assert responses == [pb.AddImageTagResponse(), pb.RemoveImageTagResponse(), pb.DeleteImageResponse()]
    assert [(s.method, s.path, s.content) for s in glance.seen] == [
        ("PUT", f"/v2/images/{IMAGE}/tags/two%20words", b""),
        ("DELETE", f"/v2/images/{IMAGE}/tags/two%20words", b""),
        ("DELETE", f"/v2/images/{IMAGE}", b""),
    ]
    for seen in glance.seen:
        assert_from_caller(seen)


def test_the_store_and_lifecycle_groups_are_served_too() -> None:
    glance = Glance()
    glance.on("GET", "/v2/info/stores", body={"stores": [{"id": "file", "default": "true"}, {"id": "file2"}]})
    glance.on("POST", f"/v2/images/{IMAGE}/actions/deactivate", 204)

    async def scenario(stub: Stub) -> pb.ListStoresResponse:
        stores: pb.ListStoresResponse = await stub.ListStores(pb.ListStoresRequest(), metadata=METADATA)
        await stub.DeactivateImage(pb.DeactivateImageRequest(image_id=IMAGE), metadata=METADATA)
        return stores

    stores = run(glance, scenario)
    assert [(s.id, s.is_default) for s in stores.stores] == [("file", True), ("file2", False)]
    assert [(s.method, s.path) for s in glance.seen] == [
        ("GET", "/v2/info/stores"),
        ("POST", f"/v2/images/{IMAGE}/actions/deactivate"),
    ]


# -- Glance's failures ---------------------------------------------------------------------------------


def test_glance_404_is_not_found_with_the_image_and_glances_request_id() -> None:
    glance = Glance()
    message = {"message": f"No image found with ID {OTHER}<br /><br />\n\n\n", "code": "404 Not Found"}
    glance.on("GET", f"/v2/images/{OTHER}", 404, message)

    async def scenario(stub: Stub) -> Failed:
        return await failure(stub.GetImageMeta(pb.GetImageMetaRequest(image_id=OTHER), metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason, failed.details) == (
        C.NOT_FOUND,
        "NOT_FOUND",
        f"No image found with ID {OTHER}",
    )
    assert failed.metadata == {"image_id": OTHER, "glance_status": "404", "request_id": "req-glance-1"}


def test_glance_409_on_create_is_already_exists() -> None:
    glance = Glance()
    glance.on("POST", "/v2/images", 409, {"message": f"Image with identifier {IMAGE} already exists!"})

    async def scenario(stub: Stub) -> Failed:
        spec = pb.ImageSpec(id=IMAGE, name="taken")

        async def messages() -> AsyncIterator[pb.AddImageRequest]:
            yield pb.AddImageRequest(spec=spec)

        return await failure(stub.AddImage(messages(), metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason, failed.metadata["glance_status"]) == (
        C.ALREADY_EXISTS,
        "IMAGE_ALREADY_EXISTS",
        "409",
    )
    (create,) = glance.seen  # a reservation: the create was all, and nothing was cleaned up after it
    assert create.json() == {"id": IMAGE, "name": "taken", "visibility": "private"}


def test_glance_500_is_internal() -> None:
    glance = Glance()
    glance.on("DELETE", f"/v2/images/{IMAGE}", 500, content=b"Internal Server Error")

    async def scenario(stub: Stub) -> Failed:
        return await failure(stub.DeleteImage(pb.DeleteImageRequest(image_id=IMAGE), metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason, failed.details) == (
        C.INTERNAL,
        "GLANCE_INTERNAL_ERROR",
        "Internal Server Error",
    )
    assert failed.metadata["glance_status"] == "500"


@pytest.mark.parametrize("content", [b"<html><body>proxy page</body></html>", b'["a list"]', b""])
def test_an_answer_that_is_no_json_object_is_internal(content: bytes) -> None:
    glance = Glance()
    glance.on("GET", f"/v2/images/{IMAGE}", content=content)

    async def scenario(stub: Stub) -> Failed:
        return await failure(stub.GetImageMeta(pb.GetImageMetaRequest(image_id=IMAGE), metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")
    assert "Glance answered with" in failed.details


def test_an_unreachable_glance_is_unavailable() -> None:
    glance = Glance()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    glance.on("GET", f"/v2/images/{IMAGE}", answer=refuse)

    async def scenario(stub: Stub) -> Failed:
        return await failure(stub.GetImageMeta(pb.GetImageMetaRequest(image_id=IMAGE), metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason, failed.metadata) == (
        C.UNAVAILABLE,
        "GLANCE_UNREACHABLE",
        {"image_id": IMAGE},
    )


def test_bad_input_and_bad_metadata_never_reach_glance() -> None:
    glance = Glance()

    async def scenario(stub: Stub) -> list[Failed]:
        return [
            await failure(stub.GetImageMeta(pb.GetImageMetaRequest(image_id="nope"), metadata=METADATA)),
            # (An oversized token is no use here: past 8 KiB of metadata, grpc itself refuses some calls at
            # random before any handler runs, its soft limit.)
            await failure(
                stub.DeleteImage(pb.DeleteImageRequest(image_id=IMAGE), metadata=(("x-auth-token", ""),))
            ),
            await failure(
                stub.DeleteImage(
                    pb.DeleteImageRequest(image_id=IMAGE), metadata=(("x-request-id", "two words"),)
                )
            ),
            await failure(
                stub.AddImageTag(pb.AddImageTagRequest(image_id=IMAGE, tag="a/b"), metadata=METADATA)
            ),
        ]

    failed = run(glance, scenario)
    assert [(f.code, f.reason) for f in failed] == [
        (C.INVALID_ARGUMENT, "INVALID_IMAGE_ID"),
        (C.INVALID_ARGUMENT, "INVALID_TOKEN"),
        (C.INVALID_ARGUMENT, "INVALID_REQUEST_ID"),
        (C.INVALID_ARGUMENT, "INVALID_TAG"),
    ]
    assert glance.seen == []
