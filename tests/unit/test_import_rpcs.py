"""StageImageData, ImportImage and WatchImageImport (gateway/import_rpcs.py, convert/imports.py), served
in-process by grpc.aio as gateway/server.py serves them (servicer_harness.serving), against a scripted Glance
behind a streaming httpx.MockTransport.

The watch's scripts follow what Glance 33 was measured to show during each kind of import (the docstring of
gateway/convert/imports.py): the import lock first, then status and the store lists, the lock dropped last.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from unit import servicer_harness
from unit.servicer_harness import Failed, failure, serving

from gateway import import_rpcs
from gateway.glance_client import JsonObject
from generated.glance.gateway.v1 import image_service_pb2 as pb

if TYPE_CHECKING:
    from unit.servicer_harness import Stub

C = grpc.StatusCode
IMAGE = "3a1f8a52-6f0e-4f0b-9d8e-2b7c1e4d5a60"
TOKEN = "tok-123"
TASK = "6c2e1e15-7f16-4522-b8d7-926506e44f04"
DATA = b"staged bytes " * 100


def image(
    status: str, *, lock: bool = False, importing: str = "", failed: str = "", **fields: Any
) -> JsonObject:
    """An image as Glance shows it; `lock` puts a task's os_glance_import_task on it."""
    body: JsonObject = {
        "id": IMAGE, "name": "imp", "status": status, "disk_format": "raw", "container_format": "bare",
        "visibility": "shared", "size": None, "tags": [], "protected": False,
        "os_glance_importing_to_stores": importing, "os_glance_failed_import": failed,
    }  # fmt: skip
    if lock:
        body["os_glance_import_task"] = TASK
    body.update(fields)
    return body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedGlance:
    """Answers GET /v2/images/{id} with the next image of `shows` (the last one again once they run out)."""

    shows: list[JsonObject] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)  # "POST"/"PUT" -> (status, message)
    put_hold: asyncio.Event | None = None
    put_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once this many images have been looked at (GET).
    looks_awaited: int = 0
    looked_enough: asyncio.Event = field(default_factory=asyncio.Event)

    def seen(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path == f"/v2/images/{IMAGE}/stage":
            return await self._stage(request)
        body = await request.aread()
        self.requests.append(Seen(request.method, request.url.path, dict(request.headers), body))
        if request.method in self.answers:
            status, message = self.answers[request.method]
            if status >= 400:
                return httpx.Response(status, json={"message": message, "code": str(status)})
            return httpx.Response(status)
        if request.method == "GET" and request.url.path == f"/v2/images/{IMAGE}":
            if len(self.seen("GET")) >= self.looks_awaited:
                self.looked_enough.set()
            if not self.shows:
                return httpx.Response(404, json={"message": f"No image found with ID {IMAGE}"})
            return httpx.Response(200, json=self.shows.pop(0) if len(self.shows) > 1 else self.shows[0])
        if request.method == "POST" and request.url.path == f"/v2/images/{IMAGE}/import":
            return httpx.Response(202)
        raise AssertionError(f"unexpected {request.method} {request.url}")

    async def _stage(self, request: httpx.Request) -> httpx.Response:
        # As Glance: "uploading" first, then the body is read (the gateway waits for that after one chunk).
        seen = Seen(request.method, request.url.path, dict(request.headers), b"")
        self.requests.append(seen)
        self.put_arrived.set()
        if self.put_hold is not None:
            await self.put_hold.wait()
        self.shows = [image("uploading")]
        seen.body = await request.aread()
        self.shows = [image("uploading", size=len(seen.body))]
        return httpx.Response(204)


class StreamingMockTransport(httpx.MockTransport):
    """httpx.MockTransport without reading the request body first: the handler reads an upload's body as it
    comes, as Glance does."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.handler(request)
        if not isinstance(response, httpx.Response):
            response = await response
        return response


def run(glance: ScriptedGlance, scenario: Callable[[Stub], Awaitable[Any]]) -> Any:
    return servicer_harness.run(StreamingMockTransport(glance.handle), scenario)


METADATA = (("x-auth-token", TOKEN),)


# -- ImportImage -------------------------------------------------------------------------------------------


def import_body(glance: ScriptedGlance) -> JsonObject:
    (post,) = glance.seen("POST")
    assert post.path == f"/v2/images/{IMAGE}/import"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-auth-token"] == TOKEN
    body: JsonObject = json.loads(post.body)
    return body


@pytest.mark.parametrize(
    "request_fields, body",
    [
        ({"method": pb.IMPORT_METHOD_GLANCE_DIRECT}, {"method": {"name": "glance-direct"}}),
        (
            {"method": pb.IMPORT_METHOD_GLANCE_DIRECT, "stores": ["file2"], "all_stores_must_succeed": True},
            {"method": {"name": "glance-direct"}, "stores": ["file2"], "all_stores_must_succeed": True},
        ),
        (
            {"method": pb.IMPORT_METHOD_WEB_DOWNLOAD, "uri": "http://127.0.0.1:8080/a.raw"},
            {"method": {"name": "web-download", "uri": "http://127.0.0.1:8080/a.raw"}},
        ),
        (
            {
                "method": pb.IMPORT_METHOD_COPY_IMAGE,
                "stores": ["file2", "fast", "file2"],
                "all_stores_must_succeed": False,
            },
            {"method": {"name": "copy-image"}, "stores": ["file2", "fast"], "all_stores_must_succeed": False},
        ),
        (
            {"method": pb.IMPORT_METHOD_COPY_IMAGE, "all_stores": True},
            {"method": {"name": "copy-image"}, "all_stores": True},
        ),
    ],
    ids=["glance-direct", "direct-to-store", "web-download", "copy-deduplicated", "copy-all-stores"],
)
def test_import_image_posts_the_import_body_glance_expects(
    request_fields: dict[str, Any], body: JsonObject
) -> None:
    glance = ScriptedGlance()

    async def scenario(stub: Stub) -> pb.ImportImageResponse:
        request = pb.ImportImageRequest(image_id=IMAGE.upper(), **request_fields)
        response: pb.ImportImageResponse = await stub.ImportImage(request, metadata=METADATA)
        return response

    assert run(glance, scenario) == pb.ImportImageResponse()
    assert import_body(glance) == body
    assert [seen.method for seen in glance.requests] == ["POST"]


@pytest.mark.parametrize(
    "request_fields, reason",
    [
        ({"image_id": ""}, "MISSING_IMAGE_ID"),
        ({"image_id": "nope"}, "INVALID_IMAGE_ID"),
        ({"method": pb.IMPORT_METHOD_UNSPECIFIED}, "MISSING_IMPORT_METHOD"),
        ({"method": 7}, "INVALID_IMPORT_METHOD"),
        ({"method": pb.IMPORT_METHOD_WEB_DOWNLOAD}, "MISSING_URI"),
        ({"method": pb.IMPORT_METHOD_WEB_DOWNLOAD, "uri": "file:///etc/passwd"}, "INVALID_URI"),
        ({"method": pb.IMPORT_METHOD_WEB_DOWNLOAD, "uri": "http://h/" + "a" * 2048}, "INVALID_URI"),
        ({"method": pb.IMPORT_METHOD_GLANCE_DIRECT, "uri": "http://h/x"}, "UNEXPECTED_URI"),
        ({"method": pb.IMPORT_METHOD_COPY_IMAGE}, "MISSING_STORES"),
        ({"method": pb.IMPORT_METHOD_COPY_IMAGE, "stores": ["file2"], "all_stores": True},
         "CONFLICTING_STORES"),
        ({"method": pb.IMPORT_METHOD_GLANCE_DIRECT, "stores": ["../x"]}, "INVALID_STORE"),
        ({"method": pb.IMPORT_METHOD_GLANCE_DIRECT, "stores": [""]}, "INVALID_STORE"),
    ],
    ids=[
        "no-id", "bad-id", "no-method", "unknown-method", "no-uri", "file-uri", "long-uri", "uri-not-web",
        "copy-nowhere", "stores-and-all", "bad-store", "empty-store",
    ],
)  # fmt: skip
def test_bad_import_requests_are_invalid_argument_before_glance_is_asked(
    request_fields: dict[str, Any], reason: str
) -> None:
    glance = ScriptedGlance()
    fields = {"image_id": IMAGE, "method": pb.IMPORT_METHOD_GLANCE_DIRECT, **request_fields}

    async def scenario(stub: Stub) -> Failed:
        return await failure(stub.ImportImage(pb.ImportImageRequest(**fields), metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason) == (C.INVALID_ARGUMENT, reason)
    assert glance.requests == []


@pytest.mark.parametrize(
    "status, message, code, reason",
    [
        (409, "Image needs to be staged before 'glance-direct' method can be used", C.FAILED_PRECONDITION,
         "NOT_STAGED"),
        (400, "URI for web-download does not pass filtering: http://x/", C.INVALID_ARGUMENT,
         "URI_NOT_ALLOWED"),
        (400, "Image is already present at store 'file2'", C.ALREADY_EXISTS, "ALREADY_IN_STORE"),
        (409, "Store for identifier nosuch not found", C.INVALID_ARGUMENT, "UNKNOWN_STORE"),
        (403, "You are not authorized to complete copy_image action.", C.PERMISSION_DENIED,
         "PERMISSION_DENIED"),
    ],
    ids=["not-staged", "filtered", "already-there", "unknown-store", "not-admin"],
)  # fmt: skip
def test_glances_import_refusals_come_back_through_the_error_table(
    status: int, message: str, code: grpc.StatusCode, reason: str
) -> None:
    glance = ScriptedGlance(answers={"POST": (status, message)})

    async def scenario(stub: Stub) -> Failed:
        request = pb.ImportImageRequest(image_id=IMAGE, method=pb.IMPORT_METHOD_COPY_IMAGE, stores=["file2"])
        return await failure(stub.ImportImage(request, metadata=METADATA))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason, failed.details) == (code, reason, message)
    assert failed.metadata["glance_status"] == str(status) and failed.metadata["image_id"] == IMAGE


# -- WatchImageImport ------------------------------------------------------------------------------------


@pytest.fixture
def instant_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The watch's waits between looks, recorded instead of waited (asyncio as import_rpcs sees it)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(import_rpcs, "asyncio", types.SimpleNamespace(sleep=sleep, timeout=asyncio.timeout))
    return waits


Step = tuple[str, int, tuple[str, ...], tuple[str, ...]]  # image status, state, importing, failed


def watch(glance: ScriptedGlance, timeout: float | None = None) -> list[pb.WatchImageImportResponse]:
    async def scenario(stub: Stub) -> list[pb.WatchImageImportResponse]:
        call = stub.WatchImageImport(
            pb.WatchImageImportRequest(image_id=IMAGE), metadata=METADATA, timeout=timeout
        )
        responses = [response async for response in call]
        assert await call.code() == C.OK
        return responses

    responses: list[pb.WatchImageImportResponse] = run(glance, scenario)
    return responses


def steps(responses: list[pb.WatchImageImportResponse]) -> list[Step]:
    status_names = {value: name for name, value in pb.ImageStatus.items()}
    return [
        (
            status_names[r.image.status].removeprefix("IMAGE_STATUS_").lower(),
            r.state,
            tuple(r.importing_to_stores),
            tuple(r.failed_stores),
        )
        for r in responses
    ]


IN_PROGRESS, SUCCEEDED, FAILED = (
    pb.IMPORT_STATE_IN_PROGRESS,
    pb.IMPORT_STATE_SUCCEEDED,
    pb.IMPORT_STATE_FAILED,
)


def test_a_glance_direct_import_is_followed_to_its_success_one_message_per_change(
    instant_waits: list[float],
) -> None:
    glance = ScriptedGlance(
        [
            image("uploading", lock=True),  # the 202 has come, the task thread not yet
            image("uploading", lock=True),
            image("importing", lock=True, importing="file"),
            image("importing", lock=True, importing="file"),
            image("active", lock=True, stores="file"),  # the store is done, the lock not yet dropped
            image("active", stores="file"),
        ]
    )
    responses = watch(glance)
    assert steps(responses) == [
        ("uploading", IN_PROGRESS, (), ()),
        ("importing", IN_PROGRESS, ("file",), ()),
        ("active", IN_PROGRESS, (), ()),
        ("active", SUCCEEDED, (), ()),
    ]
    assert list(responses[-1].image.stores) == ["file"] and responses[-1].image.id == IMAGE
    gets = glance.seen("GET")
    # One look per scripted step, and none after the end; every look with the caller's token.
    assert len(gets) == 6 and {seen.headers["x-auth-token"] for seen in gets} == {TOKEN}
    # The waits double while nothing changes, and start again after a change.
    assert instant_waits == [0.1, 0.2, 0.1, 0.2, 0.1]


def test_a_long_unchanged_import_is_looked_at_every_two_seconds_at_most(instant_waits: list[float]) -> None:
    glance = ScriptedGlance([image("importing", lock=True, importing="file")] * 9 + [image("active")])
    assert steps(watch(glance))[-1] == ("active", SUCCEEDED, (), ())
    assert instant_waits == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]


def test_a_web_download_retried_after_a_failure_is_in_progress_until_its_lock_is_dropped(
    instant_waits: list[float],
) -> None:
    # Right after the 202 the image still lists the earlier attempt's failed store: only the lock tells.
    glance = ScriptedGlance(
        [
            image("queued", lock=True, failed="file"),
            image("importing", lock=True, importing="file"),
            image("queued", failed="file"),
        ]
    )
    assert steps(watch(glance)) == [
        ("queued", IN_PROGRESS, (), ("file",)),
        ("importing", IN_PROGRESS, ("file",), ()),
        ("queued", FAILED, (), ("file",)),
    ]


@pytest.mark.parametrize(
    "last, expected",
    [
        # A failed glance-direct import stays "importing" once its lock is gone (measured on Glance 33).
        (image("importing", failed="file"), ("importing", FAILED, (), ("file",))),
        # A copy whose copy step failed: the store it never reached is still listed.
        (image("active", importing="file2", stores="file"), ("active", FAILED, ("file2",), ())),
        # all_stores_must_succeed=false: active in one store, failed in the other.
        (image("active", failed="file2", stores="file"), ("active", FAILED, (), ("file2",))),
        (image("killed"), ("killed", FAILED, (), ())),
    ],
    ids=["direct-stuck-importing", "copy-never-reached", "partial", "killed"],
)
def test_an_import_that_ended_without_reaching_every_store_is_failed(
    last: JsonObject, expected: Step, instant_waits: list[float]
) -> None:
    glance = ScriptedGlance([image("importing", lock=True, importing="file"), last])
    assert steps(watch(glance))[-1] == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        (image("queued"), ("queued", pb.IMPORT_STATE_UNSPECIFIED, (), ())),
        (image("uploading", size=3), ("uploading", pb.IMPORT_STATE_UNSPECIFIED, (), ())),
        (image("active", stores="file"), ("active", SUCCEEDED, (), ())),
    ],
    ids=["never-imported", "staged-only", "active"],
)
def test_an_image_with_no_import_running_gets_one_message_and_the_end(
    body: JsonObject, expected: Step
) -> None:
    glance = ScriptedGlance([body])
    assert steps(watch(glance)) == [expected]
    assert len(glance.seen("GET")) == 1


def test_the_watch_ends_cleanly_before_the_deadline_with_the_last_state_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(import_rpcs, "WATCH_LONGEST_WAIT", 0.05)
    glance = ScriptedGlance([image("importing", lock=True, importing="file")])
    # Status OK (checked by watch()), not DEADLINE_EXCEEDED: the watch ended before the deadline.
    assert steps(watch(glance, timeout=1.5)) == [("importing", IN_PROGRESS, ("file",), ())]
    assert len(glance.seen("GET")) > 2  # it went on looking until then


def test_a_deadline_nearer_than_the_margin_still_gets_the_first_message() -> None:
    glance = ScriptedGlance([image("importing", lock=True, importing="file")])
    assert steps(watch(glance, timeout=import_rpcs.WATCH_END_BEFORE_DEADLINE / 2)) == [
        ("importing", IN_PROGRESS, ("file",), ())
    ]
    assert len(glance.seen("GET")) == 1


def test_a_cancelled_watch_stops_looking_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_rpcs, "WATCH_LONGEST_WAIT", 0.02)
    ended = asyncio.Event()
    outcome: list[str] = []
    original = import_rpcs.watch_import

    async def observed(*args: Any) -> None:
        try:
            await original(*args)
            outcome.append("returned")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            ended.set()

    monkeypatch.setattr(import_rpcs, "watch_import", observed)
    glance = ScriptedGlance([image("importing", lock=True, importing="file")])

    async def scenario(stub: Stub) -> tuple[int, int]:
        call = stub.WatchImageImport(pb.WatchImageImportRequest(image_id=IMAGE), metadata=METADATA)
        await call.read()
        glance.looks_awaited = 3
        await asyncio.wait_for(glance.looked_enough.wait(), 5)  # it is looking again and again
        call.cancel()
        await asyncio.wait_for(ended.wait(), 5)
        looks_at_end = len(glance.seen("GET"))
        await asyncio.sleep(0.2)  # ten of its waits: a watch still running would have looked again
        return looks_at_end, len(glance.seen("GET"))

    looks_at_end, looks_later = run(glance, scenario)
    assert outcome == ["cancelled"]
    assert looks_later == looks_at_end


def test_an_image_deleted_while_watched_ends_the_watch_not_found(instant_waits: list[float]) -> None:
    glance = ScriptedGlance([image("importing", lock=True, importing="file")])

    async def scenario(stub: Stub) -> tuple[pb.WatchImageImportResponse, Failed]:
        call = stub.WatchImageImport(pb.WatchImageImportRequest(image_id=IMAGE), metadata=METADATA)
        first = await call.read()
        assert isinstance(first, pb.WatchImageImportResponse)
        glance.shows = []  # gone
        return first, await failure(call)

    first, failed = run(glance, scenario)
    assert first.state == IN_PROGRESS
    assert (failed.code, failed.reason, failed.metadata["image_id"]) == (C.NOT_FOUND, "NOT_FOUND", IMAGE)


@pytest.mark.parametrize("image_id, reason", [("", "MISSING_IMAGE_ID"), ("x", "INVALID_IMAGE_ID")])
def test_a_watch_of_no_valid_image_id_is_invalid_argument(image_id: str, reason: str) -> None:
    glance = ScriptedGlance()

    async def scenario(stub: Stub) -> Failed:
        return await failure(stub.WatchImageImport(pb.WatchImageImportRequest(image_id=image_id)))

    failed = run(glance, scenario)
    assert (failed.code, failed.reason) == (C.INVALID_ARGUMENT, reason)
    assert glance.requests == []


# -- StageImageData over gRPC ----------------------------------------------------------------------------


def stage_requests(*chunks: bytes, **spec: Any) -> list[pb.StageImageDataRequest]:
    spec.setdefault("image_id", IMAGE)
    return [
        pb.StageImageDataRequest(spec=pb.StageSpec(**spec)),
        *(pb.StageImageDataRequest(data=chunk) for chunk in chunks),
    ]


def test_stage_image_data_puts_the_data_to_the_staging_area_and_answers_the_uploading_image() -> None:
    glance = ScriptedGlance([image("queued")])
    sha512 = hashlib.sha512(DATA).hexdigest()

    async def scenario(stub: Stub) -> pb.StageImageDataResponse:
        requests = stage_requests(DATA[:500], DATA[500:], size=len(DATA), expected_sha512=sha512)
        response: pb.StageImageDataResponse = await stub.StageImageData(iter(requests), metadata=METADATA)
        return response

    response = run(glance, scenario)
    assert response.image.status == pb.IMAGE_STATUS_UPLOADING and response.image.size == len(DATA)
    assert [(seen.method, seen.path) for seen in glance.requests] == [
        ("GET", f"/v2/images/{IMAGE}"),  # the image is queued
        ("PUT", f"/v2/images/{IMAGE}/stage"),
        ("GET", f"/v2/images/{IMAGE}"),  # Glance has begun reading
        ("GET", f"/v2/images/{IMAGE}"),  # the staged image
    ]
    put = glance.seen("PUT")[0]
    assert put.body == DATA and put.headers["x-openstack-image-size"] == str(len(DATA))


def test_stage_image_data_holds_a_stream_slot() -> None:
    glance = ScriptedGlance([image("queued")])

    async def main() -> Failed:
        glance.put_hold = asyncio.Event()
        async with serving(StreamingMockTransport(glance.handle), max_streams=1) as stub:
            first = stub.StageImageData(iter(stage_requests(DATA)), metadata=METADATA)
            await asyncio.wait_for(glance.put_arrived.wait(), 5)
            second = await failure(stub.StageImageData(iter(stage_requests(DATA)), metadata=METADATA))
            glance.put_hold.set()
            assert (await first).image.status == pb.IMAGE_STATUS_UPLOADING
            return second

    second = asyncio.run(main())
    assert (second.code, second.reason) == (C.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
