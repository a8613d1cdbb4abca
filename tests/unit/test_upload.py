"""AddImage and StageImageData (gateway/upload.py, upload_stream.py): the message stream, and the calls to a
small in-memory Glance.

The fake Glance sits behind httpx.MockTransport, under the real GlanceClient. It keeps images by id with their
statuses, records every request, reads an upload's body chunk by chunk as it arrives (so a test sees what
Glance had received when something failed), and answers any status on demand.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from gateway import upload, upload_marker, wire
from gateway.call_context import CallContext
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.errors import GatewayError, Operation
from gateway.glance_client import JSON_PATCH, GlanceClient, JsonObject
from gateway.stall import StallWatch
from gateway.upload import StageMessage, UploadMessage, Uploads
from gateway.upload_stream import UploadStream
from generated.glance.gateway.v1 import image_service_pb2 as pb

C = grpc.StatusCode
BASE = "http://glance.test"
MALFORMED = wire.MalformedMessage("AddImage", pb.AddImageRequest.DESCRIPTOR.full_name)
CHUNKS = [b"first chunk ", b"second chunk ", b"last chunk"]
DATA = b"".join(CHUNKS)
ALL_BUT_LAST = b"".join(CHUNKS[:-1])
SHA512 = hashlib.sha512(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
PROTECT = {"op": "replace", "path": "/protected", "value": True}
SOMEBODY_ELSES = "0b9a4a8e-6a5e-4a49-9d44-3d2b8e1c7f10"


# --- the fake Glance --------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


class StreamingMockTransport(httpx.MockTransport):
    """httpx.MockTransport without reading the request body first: the handler reads an upload's body chunk
    by chunk, as a real Glance would, and sees where it stopped."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.handler(request)
        if not isinstance(response, httpx.Response):
            response = await response
        return response


def answer(status: int, message: str = "") -> httpx.Response:
    return httpx.Response(
        status, json={"message": message or f"fake Glance says {status}", "code": str(status)}
    )


class FakeGlance:
    def __init__(self) -> None:
        self.images: dict[str, JsonObject] = {}
        self.requests: list[Seen] = []
        # Statuses to answer, in order, instead of carrying out a request of that method.
        self.failures: dict[str, list[int]] = defaultdict(list)
        # A request of that method waits for the event before it is carried out.
        self.holds: dict[str, asyncio.Event] = {}
        self.arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # Each image's upload body, as far as it arrived.
        self.received: dict[str, bytearray] = {}
        self.stores: list[str] | None = None
        # A create that makes the record and then answers this status (its reply lost on the way back).
        self.create_made_then: int | None = None
        # Each image's staged data, once a stage has completed.
        self.staged: dict[str, bytes] = {}
        # How long after a cut-off stage the image goes back to queued (a real Glance notices it a moment
        # later, in its own worker); None: at once, inf: never.
        self.unstage_after: float | None = None
        # A stage whose worker starts this long after its request came, the data waiting meanwhile as in a
        # socket's buffers (a real Glance whose uWSGI workers are busy); None: at once.
        self.worker_delay: float | None = None
        self.workers_busy = 0

    def client(self) -> GlanceClient:
        return GlanceClient(Settings(glance_url=BASE), transport=StreamingMockTransport(self.handle))

    @property
    def methods(self) -> list[str]:
        return [seen.method for seen in self.requests]

    def seen(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        body: Any = json.loads(await request.aread()) if method in ("POST", "PATCH") else None
        self.requests.append(Seen(method, path, dict(request.headers), body))
        self.arrived[method].set()
        if method in self.holds:
            await self.holds[method].wait()
        if self.failures[method]:
            return answer(self.failures[method].pop(0))
        parts = path.strip("/").split("/")
        if parts == ["v2", "info", "stores"]:
            if self.stores is None:
                return answer(404)
            return httpx.Response(200, json={"stores": [{"id": store} for store in self.stores]})
        if parts == ["v2", "images"] and method == "POST":
            return self._create(body)
        image = self.images.get(parts[2]) if len(parts) >= 3 and parts[:2] == ["v2", "images"] else None
        if image is None:
            return answer(404, "No image found")
        if method == "GET" and len(parts) == 3:
            return httpx.Response(200, json=image)
        if method == "PUT" and parts[3:] == ["file"]:
            return await self._upload(image, request)
        if method == "PUT" and parts[3:] == ["stage"]:
            return await self._stage(image, request)
        if method == "PATCH" and len(parts) == 3:
            return self._patch(image, body)
        if method == "DELETE" and len(parts) == 3:
            if image.get("protected"):
                return answer(403, "Image is protected")
            del self.images[image["id"]]
            return httpx.Response(204)
        raise AssertionError(f"the fake Glance got an unexpected {method} {path}")

    def _create(self, body: JsonObject) -> httpx.Response:
        image_id = str(body.get("id") or uuid.uuid4())
        if image_id in self.images:
            return answer(409, f"Image with identifier {image_id} already exists!")
        image = {"protected": False, "tags": [], **body, "id": image_id, "status": "queued", "size": None}
        self.images[image_id] = image
        if self.create_made_then is not None:
            return answer(self.create_made_then)
        return httpx.Response(201, json=image)

    async def _upload(self, image: JsonObject, request: httpx.Request) -> httpx.Response:
        if image["status"] != "queued":
            return answer(409)
        image["status"] = "saving"
        received = self.received[image["id"]] = bytearray()
        assert isinstance(request.stream, httpx.AsyncByteStream)
        try:
            async for chunk in request.stream:
                received += chunk
        except BaseException:
            image["status"] = "queued"  # Glance reverts an aborted upload
            raise
        image.update(
            status="active",
            size=len(received),
            checksum=hashlib.md5(received).hexdigest(),
            os_hash_algo="sha512",
            os_hash_value=hashlib.sha512(received).hexdigest(),
        )
        return httpx.Response(204)

    async def _stage(self, image: JsonObject, request: httpx.Request) -> httpx.Response:
        if self.worker_delay is not None:
            return await self._buffered_stage(image, request, self.worker_delay)
        if image["status"] != "queued":
            return answer(409, f"Image status transition from {image['status']} to uploading is not allowed")
        image["status"] = "uploading"
        received = self.received[image["id"]] = bytearray()
        assert isinstance(request.stream, httpx.AsyncByteStream)
        try:
            async for chunk in request.stream:
                received += chunk
        except BaseException:
            # Glance deletes the partial file and puts the image back to queued (image_data.stage).
            if self.unstage_after is None:
                image["status"] = "queued"
            elif self.unstage_after != float("inf"):
                asyncio.get_running_loop().call_later(self.unstage_after, image.update, {"status": "queued"})
            raise
        self.staged[image["id"]] = bytes(received)
        image["size"] = len(received)
        return httpx.Response(204)

    async def _buffered_stage(
        self, image: JsonObject, request: httpx.Request, delay: float
    ) -> httpx.Response:
        """The request's data goes into a buffer as fast as it comes, and its failure ends the exchange at
        once, while the worker takes the data up `delay` later, and notices a cut-off body only then."""
        buffered: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        assert isinstance(request.stream, httpx.AsyncByteStream)

        async def worker() -> None:
            await asyncio.sleep(delay)
            image["status"] = "uploading"
            received = self.received[image["id"]] = bytearray()
            while isinstance(item := await buffered.get(), bytes):
                received += item
            if item is None:
                self.staged[image["id"]] = bytes(received)
            else:
                image["status"] = "queued"

        self.workers_busy += 1
        working = asyncio.ensure_future(worker())
        working.add_done_callback(lambda _: setattr(self, "workers_busy", self.workers_busy - 1))
        try:
            async for chunk in request.stream:
                buffered.put_nowait(bytes(chunk))
        except BaseException as error:
            buffered.put_nowait(error)
            raise
        buffered.put_nowait(None)
        await working
        return httpx.Response(204)

    def _patch(self, image: JsonObject, operations: list[JsonObject]) -> httpx.Response:
        for operation in operations:
            key = operation["path"].lstrip("/")
            if operation["op"] == "remove":
                if key not in image:
                    return answer(409)
                del image[key]
            else:
                image[key] = operation["value"]
        return httpx.Response(200, json=image)


# --- messages -----------------------------------------------------------------------------------------------


def spec(**fields: Any) -> pb.AddImageRequest:
    fields.setdefault("name", "img")
    fields.setdefault("type", pb.IMAGE_TYPE_RAW)
    return pb.AddImageRequest(spec=pb.ImageSpec(**fields))


def data(chunk: bytes) -> pb.AddImageRequest:
    return pb.AddImageRequest(data=chunk)


def finish(sha512: str = "", md5: str = "") -> pb.AddImageRequest:
    return pb.AddImageRequest(finish=pb.UploadFinish(sha512=sha512, md5=md5))


def chunks(*pieces: bytes) -> list[UploadMessage]:
    """Data messages, alternating views (what wire.parse_upload_message gives) and AddImageRequest(data=)."""
    return [memoryview(piece) if index % 2 == 0 else data(piece) for index, piece in enumerate(pieces)]


async def stream(*items: UploadMessage) -> AsyncIterator[UploadMessage]:
    for item in items:
        yield item


@asynccontextmanager
async def watched(
    messages: AsyncIterator[UploadMessage], stall_timeout: float
) -> AsyncIterator[UploadStream[pb.AddImageRequest]]:
    """An UploadStream under a StallWatch, as Uploads.add_image makes it: a stall ends the block."""
    async with StallWatch(stall_timeout, Operation.UPLOAD, "stalled", {}) as watch:
        yield UploadStream(messages, watch, "AddImage")


async def read_all(upload_stream: UploadStream[Any]) -> list[bytes]:
    got = []
    while (chunk := await upload_stream.next_chunk()) is not None:
        got.append(bytes(chunk))
    return got


def stream_error(*items: UploadMessage, stall_timeout: float = 5.0) -> GatewayError:
    async def read() -> None:
        async with watched(stream(*items), stall_timeout) as upload_stream:
            await upload_stream.first()
            await read_all(upload_stream)

    with pytest.raises(GatewayError) as caught:
        asyncio.run(read())
    return caught.value


# --- UploadStream -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [data(b"x"), memoryview(b"x"), finish(), pb.AddImageRequest(), None],
    ids=["data", "view", "finish", "empty-message", "no-message"],
)
def test_the_spec_must_come_first(first: UploadMessage | None) -> None:
    # The spec after the wrong first message does not help; no message at all is no spec either.
    error = stream_error(*([] if first is None else [first, spec()]))
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "SPEC_NOT_FIRST")


@pytest.mark.parametrize(
    "before", [[], [spec()], [spec(), memoryview(b"abc")]], ids=["first", "after-spec", "mid-data"]
)
def test_a_malformed_message_is_invalid_argument_wherever_it_comes(before: list[UploadMessage]) -> None:
    error = stream_error(*before, MALFORMED, memoryview(b"more"))
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert "glance.gateway.v1.AddImageRequest" in error.message


def test_data_comes_as_views_and_as_messages_in_order_and_empty_ones_are_skipped() -> None:
    async def read() -> tuple[pb.ImageSpec, list[bytes], UploadStream[Any]]:
        messages = stream(
            spec(name="n"), data(b""), memoryview(b"ab"), memoryview(b""), data(b"cd"), memoryview(b"e")
        )
        async with watched(messages, 5.0) as upload_stream:
            first = (await upload_stream.first()).spec
            return first, await read_all(upload_stream), upload_stream

    first, got, upload_stream = asyncio.run(read())
    assert first.name == "n"
    assert got == [b"ab", b"cd", b"e"]
    assert upload_stream.ended and upload_stream.finish is None


def test_a_finish_ends_the_data_and_is_kept() -> None:
    async def read() -> tuple[list[bytes], UploadStream[Any], bool]:
        async with watched(stream(spec(), memoryview(b"ab"), finish(sha512=SHA512)), 5.0) as upload_stream:
            await upload_stream.first()
            got = await read_all(upload_stream)
            # Once ended, the stream is not read again.
            return got, upload_stream, await upload_stream.next_chunk() is None

    got, upload_stream, still_none = asyncio.run(read())
    assert got == [b"ab"]
    assert upload_stream.ended and still_none
    assert upload_stream.finish == pb.UploadFinish(sha512=SHA512)


def test_a_finish_right_after_the_spec_ends_an_empty_upload() -> None:
    async def read() -> tuple[list[bytes], UploadStream[Any]]:
        async with watched(stream(spec(), finish()), 5.0) as upload_stream:
            await upload_stream.first()
            return await read_all(upload_stream), upload_stream

    got, upload_stream = asyncio.run(read())
    assert got == [] and upload_stream.finish == pb.UploadFinish()


@pytest.mark.parametrize(
    "after",
    [data(b"x"), memoryview(b"x"), data(b""), finish(), spec()],
    ids=["data", "view", "empty", "finish", "spec"],
)
def test_nothing_may_follow_the_finish(after: UploadMessage) -> None:
    error = stream_error(spec(), memoryview(b"ab"), finish(), after)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_NOT_LAST")


def test_a_second_spec_is_refused() -> None:
    error = stream_error(spec(), memoryview(b"ab"), spec())
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "SPEC_NOT_FIRST")


def test_a_message_with_no_content_is_refused() -> None:
    error = stream_error(spec(), memoryview(b"ab"), pb.AddImageRequest())
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "EMPTY_MESSAGE")


async def stalling(*items: UploadMessage) -> AsyncIterator[UploadMessage]:
    """The items, then a client that sends nothing more (for far longer than any test waits)."""
    for item in items:
        yield item
    await asyncio.sleep(60)
    yield memoryview(b"too late")


@pytest.mark.parametrize(
    "sent",
    [[], [spec()], [spec(), memoryview(b"ab")], [spec(), memoryview(b"ab"), finish()]],
    ids=["before-spec", "after-spec", "mid-data", "after-finish"],
)
def test_a_client_silent_past_the_stall_timeout_is_stopped(sent: list[UploadMessage]) -> None:
    async def read() -> None:
        async with watched(stalling(*sent), 0.05) as upload_stream:
            await upload_stream.first()
            await read_all(upload_stream)

    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        asyncio.run(read())
    assert (caught.value.code, caught.value.reason) == (C.DEADLINE_EXCEEDED, "CLIENT_STALLED")
    assert time.monotonic() - started < 2


def test_the_stall_timeout_is_per_message_not_for_the_whole_stream() -> None:
    async def slow() -> AsyncIterator[UploadMessage]:
        yield spec()
        for piece in (b"a", b"b", b"c", b"d"):
            await asyncio.sleep(0.03)
            yield memoryview(piece)

    async def read() -> list[bytes]:
        async with watched(slow(), 0.08) as upload_stream:
            await upload_stream.first()
            return await read_all(upload_stream)

    assert asyncio.run(read()) == [b"a", b"b", b"c", b"d"]


# --- Uploads.add_image against the fake Glance ---------------------------------------------------------


@dataclass
class Outcome:
    image: JsonObject | None
    error: GatewayError | None
    # Glance's records and the requests it had seen when add_image returned (the Janitor may go on after).
    images_then: dict[str, JsonObject]
    methods_then: list[str]


async def attempt(
    glance: FakeGlance, messages: AsyncIterator[UploadMessage], stall_timeout: float = 5.0
) -> Outcome:
    async with glance.client() as client, Janitor(client) as janitor:
        uploads = Uploads(client, janitor, stall_timeout)
        try:
            image = await uploads.add_image(messages, CallContext(token="tok"))
        except GatewayError as error:
            return Outcome(None, error, dict(glance.images), glance.methods)
        return Outcome(image, None, dict(glance.images), glance.methods)
    # Leaving the block gives the Janitor's pending removals time to end.


def add(glance: FakeGlance, *items: UploadMessage, stall_timeout: float = 5.0) -> Outcome:
    return asyncio.run(attempt(glance, stream(*items), stall_timeout))


def failed(outcome: Outcome) -> GatewayError:
    assert outcome.error is not None, f"add_image succeeded: {outcome.image}"
    return outcome.error


def only_post(glance: FakeGlance) -> JsonObject:
    (post,) = glance.seen("POST")
    assert isinstance(post.body, dict)
    return post.body


def test_a_spec_alone_is_a_reservation_one_post_without_the_mark() -> None:
    glance = FakeGlance()
    outcome = add(glance, pb.AddImageRequest(spec=pb.ImageSpec(name="reserved", tags=["b", "a"])))
    assert outcome.error is None and outcome.image is not None
    assert glance.methods == ["POST"]
    body = only_post(glance)
    assert body == {"name": "reserved", "visibility": "private", "tags": ["a", "b"]}
    assert outcome.image["status"] == "queued"
    assert upload_marker.KEY not in glance.images[outcome.image["id"]]


def test_a_reservation_with_formats_and_protection_is_still_one_post() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(protected=True, id=SOMEBODY_ELSES))
    assert outcome.error is None
    assert glance.methods == ["POST"]
    body = only_post(glance)
    assert body["id"] == SOMEBODY_ELSES and body["protected"] is True
    assert (body["disk_format"], body["container_format"]) == ("raw", "bare")
    assert upload_marker.KEY not in body


def test_an_upload_creates_a_marked_record_under_the_gateways_id_then_puts_then_shows() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(), *chunks(*CHUNKS))
    assert outcome.error is None and outcome.image is not None
    assert glance.methods == ["POST", "PUT", "GET"]
    body = only_post(glance)
    image_id = body["id"]
    assert uuid.UUID(image_id).version == 4 and str(uuid.UUID(image_id)) == image_id
    assert body[upload_marker.KEY] == upload_marker.VALUE
    assert "protected" not in body
    put, show = glance.seen("PUT")[0], glance.seen("GET")[0]
    assert put.path == f"/v2/images/{image_id}/file"
    assert put.headers["content-type"] == "application/octet-stream"
    assert put.headers["x-auth-token"] == "tok"
    assert "x-openstack-image-size" not in put.headers
    assert bytes(glance.received[image_id]) == DATA
    assert show.path == f"/v2/images/{image_id}"
    assert outcome.image["id"] == image_id and outcome.image["status"] == "active"
    # The mark stays: a finished image is never the sweep's business (its status is not queued or saving).
    assert glance.images[image_id][upload_marker.KEY] == upload_marker.VALUE
    assert outcome.image["os_hash_value"] == SHA512


def test_protected_is_set_only_by_the_final_patch() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(protected=True), *chunks(*CHUNKS))
    assert outcome.error is None and outcome.image is not None
    assert "protected" not in only_post(glance)
    patch = glance.seen("PATCH")[0]
    assert patch.headers["content-type"] == JSON_PATCH
    assert patch.body == [PROTECT]
    assert glance.methods == ["POST", "PUT", "PATCH"]
    assert outcome.image["protected"] is True


def test_an_upload_under_a_clients_id_and_with_a_size() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(id=SOMEBODY_ELSES, size=len(DATA)), *chunks(*CHUNKS))
    assert outcome.error is None
    assert only_post(glance)["id"] == SOMEBODY_ELSES
    put = glance.seen("PUT")[0]
    assert put.headers["content-length"] == put.headers["x-openstack-image-size"] == str(len(DATA))
    assert bytes(glance.received[SOMEBODY_ELSES]) == DATA


@pytest.mark.parametrize(
    "digests, sent",
    [
        ([pb.DIGEST_ALGORITHM_SHA512, pb.DIGEST_ALGORITHM_MD5], finish(sha512=SHA512, md5=MD5.upper())),
        ([pb.DIGEST_ALGORITHM_SHA512], finish(sha512=SHA512)),
        ([pb.DIGEST_ALGORITHM_MD5], finish(md5=MD5)),
        ([], finish()),
    ],
    ids=["both", "sha512", "md5", "no-digest"],
)
def test_a_finish_with_the_right_digests_makes_the_image(
    digests: list[pb.DigestAlgorithm.ValueType], sent: pb.AddImageRequest
) -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(ends_with_finish=not digests, finish_digests=digests), *chunks(*CHUNKS), sent)
    assert outcome.error is None and outcome.image is not None
    assert glance.methods == ["POST", "PUT", "GET"]
    assert outcome.image["status"] == "active" and bytes(glance.received[outcome.image["id"]]) == DATA


def test_a_finish_alone_makes_an_image_with_no_bytes() -> None:
    glance = FakeGlance()
    empty = hashlib.sha512(b"").hexdigest()
    outcome = add(glance, spec(finish_digests=[pb.DIGEST_ALGORITHM_SHA512]), finish(sha512=empty))
    assert outcome.error is None and outcome.image is not None
    assert glance.methods == ["POST", "PUT", "GET"]
    assert outcome.image["size"] == 0


def assert_discarded(glance: FakeGlance, outcome: Outcome) -> str:
    """The record was made, then deleted before add_image returned; the id it had."""
    image_id = str(only_post(glance)["id"])
    assert "DELETE" in outcome.methods_then
    assert image_id not in outcome.images_then and glance.images == {}
    return image_id


@pytest.mark.parametrize(
    "digests, sent",
    [
        ([pb.DIGEST_ALGORITHM_SHA512], finish(sha512="0" * 128)),
        ([pb.DIGEST_ALGORITHM_MD5], finish(md5="0" * 32)),
        ([pb.DIGEST_ALGORITHM_SHA512, pb.DIGEST_ALGORITHM_MD5], finish(sha512=SHA512, md5="f" * 32)),
    ],
    ids=["sha512", "md5", "md5-of-both"],
)
def test_a_wrong_finish_digest_is_data_loss_and_the_record_goes(
    digests: list[pb.DigestAlgorithm.ValueType], sent: pb.AddImageRequest
) -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(finish_digests=digests), *chunks(*CHUNKS), sent)
    error = failed(outcome)
    assert (error.code, error.reason) == (C.DATA_LOSS, "CHECKSUM_MISMATCH")
    image_id = assert_discarded(glance, outcome)
    # Glance never had the whole data: the last chunk waited for the check.
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST
    assert "PATCH" not in glance.methods


@pytest.mark.parametrize("field", ["expected_sha512", "expected_md5"])
def test_a_wrong_up_front_digest_is_data_loss_and_the_last_chunk_never_goes(field: str) -> None:
    glance = FakeGlance()
    wrong = "a" * (128 if field == "expected_sha512" else 32)
    outcome = add(glance, spec(**{field: wrong}), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.DATA_LOSS, "CHECKSUM_MISMATCH")
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


def test_a_finish_digest_that_disagrees_with_the_up_front_one_is_data_loss() -> None:
    glance = FakeGlance()
    outcome = add(
        glance,
        spec(expected_sha512=SHA512, finish_digests=[pb.DIGEST_ALGORITHM_SHA512]),
        *chunks(*CHUNKS),
        finish(sha512="b" * 128),
    )
    error = failed(outcome)
    assert (error.code, error.reason) == (C.DATA_LOSS, "CHECKSUM_MISMATCH")
    assert_discarded(glance, outcome)


@pytest.mark.parametrize(
    "fields",
    [{"ends_with_finish": True}, {"finish_digests": [pb.DIGEST_ALGORITHM_SHA512]}],
    ids=["ends_with_finish", "finish_digests"],
)
def test_a_missing_finish_without_any_data_creates_nothing(fields: dict[str, Any]) -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(**fields))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_MISSING")
    assert glance.requests == []


@pytest.mark.parametrize(
    "fields",
    [{"ends_with_finish": True}, {"finish_digests": [pb.DIGEST_ALGORITHM_MD5]}],
    ids=["ends_with_finish", "finish_digests"],
)
def test_a_missing_finish_after_data_deletes_the_record(fields: dict[str, Any]) -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(**fields), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_MISSING")
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


@pytest.mark.parametrize(
    "fields, sent",
    [
        ({"ends_with_finish": True}, finish(sha512=SHA512)),
        ({"finish_digests": [pb.DIGEST_ALGORITHM_SHA512]}, finish(sha512=SHA512, md5=MD5)),
    ],
    ids=["none-announced", "md5-not-announced"],
)
def test_an_unannounced_finish_digest_is_refused(fields: dict[str, Any], sent: pb.AddImageRequest) -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(**fields), *chunks(*CHUNKS), sent)
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_DIGEST_NOT_ANNOUNCED")
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


@pytest.mark.parametrize(
    "digests, sent",
    [
        ([pb.DIGEST_ALGORITHM_SHA512], finish()),
        ([pb.DIGEST_ALGORITHM_SHA512, pb.DIGEST_ALGORITHM_MD5], finish(sha512=SHA512)),
    ],
    ids=["sha512", "md5-of-both"],
)
def test_an_announced_digest_missing_from_the_finish_is_refused(
    digests: list[pb.DigestAlgorithm.ValueType], sent: pb.AddImageRequest
) -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(finish_digests=digests), *chunks(*CHUNKS), sent)
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_DIGEST_MISSING")
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


def test_an_announced_digest_is_required_in_the_finish_even_when_also_expected_up_front() -> None:
    # The contract (UploadFinish.sha512): required when finish_digests names SHA512, whatever came up front.
    glance = FakeGlance()
    outcome = add(
        glance,
        spec(expected_sha512=SHA512, finish_digests=[pb.DIGEST_ALGORITHM_SHA512]),
        *chunks(*CHUNKS),
        finish(),
    )
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_DIGEST_MISSING")


def test_an_unknown_finish_digest_algorithm_is_refused_before_glance_is_asked() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(finish_digests=[pb.DIGEST_ALGORITHM_UNSPECIFIED]), *chunks(*CHUNKS), finish())
    assert failed(outcome).reason == "INVALID_DIGEST_ALGORITHM"
    assert glance.requests == []


def test_the_last_chunk_waits_in_the_gateway_until_the_finish_arrives() -> None:
    async def scenario() -> tuple[bytes, str, Outcome]:
        glance = FakeGlance()
        send_finish = asyncio.Event()

        async def client() -> AsyncIterator[UploadMessage]:
            yield spec(finish_digests=[pb.DIGEST_ALGORITHM_SHA512])
            for message in chunks(*CHUNKS):
                yield message
            await send_finish.wait()
            yield finish(sha512=SHA512)

        running = asyncio.create_task(attempt(glance, client()))
        await asyncio.wait_for(glance.arrived["PUT"].wait(), 5)
        await asyncio.sleep(0.05)  # time for every chunk Glance could be sent
        image_id = str(only_post(glance)["id"])
        received_before_finish = bytes(glance.received[image_id])
        status_before_finish = str(glance.images[image_id]["status"])
        send_finish.set()
        return received_before_finish, status_before_finish, await running

    before, status, outcome = asyncio.run(scenario())
    assert before == ALL_BUT_LAST and status == "saving"
    assert outcome.error is None and outcome.image is not None and outcome.image["status"] == "active"


def test_a_short_upload_fails_its_size_and_the_record_goes() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(size=len(DATA) + 1), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "SIZE_MISMATCH")
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


def test_a_long_upload_fails_on_the_chunk_that_overflows_before_it_goes() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(size=len(CHUNKS[0]) + 1), *chunks(*CHUNKS))
    error = failed(outcome)
    assert error.reason == "SIZE_MISMATCH"
    image_id = assert_discarded(glance, outcome)
    # The second chunk overflowed: not even the first (held back) reached Glance.
    assert bytes(glance.received[image_id]) == b""


def test_create_answered_409_for_a_clients_id_deletes_nothing() -> None:
    glance = FakeGlance()
    theirs = {"id": SOMEBODY_ELSES, "name": "theirs", "status": "active", "protected": False}
    glance.images[SOMEBODY_ELSES] = dict(theirs)
    outcome = add(glance, spec(id=SOMEBODY_ELSES), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.ALREADY_EXISTS, "IMAGE_ALREADY_EXISTS")
    assert error.metadata["glance_status"] == "409"
    # Even after the Janitor finished: it never looked at, let alone deleted, somebody else's image.
    assert glance.methods == ["POST"]
    assert glance.images == {SOMEBODY_ELSES: theirs}


def test_create_answered_500_for_a_clients_id_deletes_nothing() -> None:
    glance = FakeGlance()
    glance.failures["POST"] = [500]
    outcome = add(glance, spec(id=SOMEBODY_ELSES), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")
    assert glance.methods == ["POST"]


def test_a_record_made_under_the_gateways_id_by_a_create_answered_503_is_deleted() -> None:
    glance = FakeGlance()
    glance.create_made_then = 503
    outcome = add(glance, spec(), *chunks(*CHUNKS))
    assert failed(outcome).code == C.UNAVAILABLE
    assert_discarded(glance, outcome)
    assert "PUT" not in glance.methods


def test_a_record_made_under_a_clients_id_by_a_create_answered_503_is_left_marked_for_the_sweep() -> None:
    glance = FakeGlance()
    glance.create_made_then = 503
    outcome = add(glance, spec(id=SOMEBODY_ELSES), *chunks(*CHUNKS))
    assert failed(outcome).code == C.UNAVAILABLE
    assert glance.methods == ["POST"]
    assert glance.images[SOMEBODY_ELSES][upload_marker.KEY] == upload_marker.VALUE


def test_a_failed_put_deletes_the_record_before_add_image_raises() -> None:
    glance = FakeGlance()
    glance.failures["PUT"] = [500]
    outcome = add(glance, spec(), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INTERNAL, "GLANCE_INTERNAL_ERROR")
    assert_discarded(glance, outcome)
    assert outcome.methods_then[:2] == ["POST", "PUT"] and outcome.methods_then[-1] == "GET"


def test_a_failed_final_patch_deletes_the_record() -> None:
    glance = FakeGlance()
    glance.failures["PATCH"] = [503]
    outcome = add(glance, spec(protected=True), *chunks(*CHUNKS))
    assert failed(outcome).code == C.UNAVAILABLE
    assert_discarded(glance, outcome)


def test_a_create_cancelled_in_flight_still_completes_and_the_janitor_deletes_the_record() -> None:
    async def scenario() -> tuple[FakeGlance, list[str]]:
        glance = FakeGlance()
        glance.holds["POST"] = asyncio.Event()
        async with glance.client() as client, Janitor(client) as janitor:
            uploads = Uploads(client, janitor, 5.0)
            call = asyncio.create_task(uploads.add_image(stream(spec(), *chunks(*CHUNKS)), CallContext()))
            await asyncio.wait_for(glance.arrived["POST"].wait(), 5)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # The create goes on: Glance makes the record after the call is gone.
            assert glance.images == {}
            glance.holds["POST"].set()
            await asyncio.sleep(0)
            assert janitor.pending == 1
            methods_at_cancel = glance.methods
        return glance, methods_at_cancel

    glance, methods_at_cancel = asyncio.run(scenario())
    assert methods_at_cancel == ["POST"]
    assert glance.images == {}
    assert "PUT" not in glance.methods and "DELETE" in glance.methods
    (delete,) = glance.seen("DELETE")
    assert delete.path == f"/v2/images/{only_post(glance)['id']}"


def test_a_call_cancelled_mid_upload_never_completes_the_image_and_the_record_goes() -> None:
    async def scenario() -> tuple[FakeGlance, bytes]:
        glance = FakeGlance()
        stuck = asyncio.Event()

        async def client() -> AsyncIterator[UploadMessage]:
            yield spec()
            for message in chunks(*CHUNKS):
                yield message
            await stuck.wait()  # never set: the client is cancelled here

        async with glance.client() as client_, Janitor(client_) as janitor:
            call = asyncio.create_task(Uploads(client_, janitor, 5.0).add_image(client(), CallContext()))
            await asyncio.wait_for(glance.arrived["PUT"].wait(), 5)
            await asyncio.sleep(0.02)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            image_id = str(only_post(glance)["id"])
            received = bytes(glance.received[image_id])
        return glance, received

    glance, received = asyncio.run(scenario())
    assert received == ALL_BUT_LAST
    assert glance.images == {} and "PATCH" not in glance.methods


def test_a_client_stalled_mid_upload_ends_with_the_record_deleted() -> None:
    glance = FakeGlance()
    outcome = asyncio.run(attempt(glance, stalling(spec(), *chunks(*CHUNKS)), stall_timeout=0.05))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.DEADLINE_EXCEEDED, "CLIENT_STALLED")
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


def test_a_client_stalled_before_any_data_creates_nothing() -> None:
    glance = FakeGlance()
    outcome = asyncio.run(attempt(glance, stalling(spec()), stall_timeout=0.05))
    assert failed(outcome).reason == "CLIENT_STALLED"
    assert glance.requests == []


def test_a_malformed_message_mid_upload_deletes_the_record() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(), *chunks(*CHUNKS), MALFORMED)
    assert failed(outcome).reason == "MALFORMED_REQUEST"
    image_id = assert_discarded(glance, outcome)
    assert bytes(glance.received[image_id]) == ALL_BUT_LAST


def test_a_failed_call_returns_after_the_discard_wait_even_if_the_removal_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upload, "DISCARD_WAIT_SECONDS", 0.1)

    async def scenario() -> tuple[Outcome, FakeGlance]:
        glance = FakeGlance()
        glance.holds["DELETE"] = asyncio.Event()
        running = asyncio.create_task(attempt(glance, stream(spec(expected_md5="0" * 32), *chunks(*CHUNKS))))
        await asyncio.wait_for(glance.arrived["DELETE"].wait(), 5)
        await asyncio.sleep(0.3)
        glance.holds["DELETE"].set()
        return await running, glance

    outcome, glance = asyncio.run(scenario())
    assert failed(outcome).reason == "CHECKSUM_MISMATCH"
    # add_image returned while the DELETE was still held; the Janitor finished it afterwards.
    assert len(outcome.images_then) == 1
    assert glance.images == {}


def test_data_without_formats_is_refused_before_glance_is_asked() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(type=pb.IMAGE_TYPE_UNSPECIFIED), *chunks(*CHUNKS))
    assert failed(outcome).reason == "MISSING_FORMAT"
    assert glance.requests == []


def test_an_unknown_store_is_refused_before_the_record_exists() -> None:
    glance = FakeGlance()
    glance.stores = ["file", "fast"]
    outcome = add(glance, spec(store="slow"), *chunks(*CHUNKS))
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "UNKNOWN_STORE")
    assert glance.methods == ["GET"] and glance.images == {}


def test_a_known_store_goes_with_the_upload() -> None:
    glance = FakeGlance()
    glance.stores = ["file", "fast"]
    outcome = add(glance, spec(store="fast"), *chunks(*CHUNKS))
    assert outcome.error is None
    assert glance.methods == ["GET", "POST", "PUT", "GET"]
    assert glance.seen("PUT")[0].headers["x-image-meta-store"] == "fast"


def test_a_negative_size_is_refused_before_glance_is_asked() -> None:
    glance = FakeGlance()
    outcome = add(glance, spec(size=-1), *chunks(*CHUNKS))
    assert failed(outcome).reason == "INVALID_SIZE"
    assert glance.requests == []


def test_closing_the_janitor_stops_a_removal_still_waiting_for_its_create_but_not_the_create() -> None:
    async def scenario() -> tuple[bool, list[str], FakeGlance]:
        glance = FakeGlance()
        glance.holds["POST"] = asyncio.Event()
        async with glance.client() as client:
            janitor = Janitor(client)
            uploads = Uploads(client, janitor, 5.0)
            call = asyncio.create_task(uploads.add_image(stream(spec(), *chunks(*CHUNKS)), CallContext()))
            await asyncio.wait_for(glance.arrived["POST"].wait(), 5)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # The removal now waits for the create; discarding the same id again gives its task.
            removal = janitor.discard(str(only_post(glance)["id"]), CallContext())
            await janitor.close(grace=0.05)
            seen_at_close = len(glance.requests)
            glance.holds["POST"].set()
            await asyncio.sleep(0.2)
            return removal.cancelled(), glance.methods[seen_at_close:], glance

    cancelled, after_close, glance = asyncio.run(scenario())
    # Nothing after close(): serve() closes the GlanceClient right after it.
    assert after_close == [], f"requests after Janitor.close(): {after_close}"
    assert cancelled
    # The create was not cut off by the close: its record is made, and keeps its mark for the sweep.
    (record,) = glance.images.values()
    assert record[upload_marker.KEY] == upload_marker.VALUE


def test_a_finish_digest_not_announced_is_refused_even_when_expected_up_front() -> None:
    glance = FakeGlance()
    outcome = add(
        glance, spec(expected_sha512=SHA512, ends_with_finish=True), *chunks(*CHUNKS), finish(sha512=SHA512)
    )
    error = failed(outcome)
    assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "FINISH_DIGEST_NOT_ANNOUNCED")
    assert_discarded(glance, outcome)


def test_a_failed_create_under_an_id_already_being_removed_leaves_no_unawaited_coroutine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upload, "DISCARD_WAIT_SECONDS", 0.1)

    async def scenario() -> GatewayError:
        glance = FakeGlance()
        glance.images[SOMEBODY_ELSES] = {"id": SOMEBODY_ELSES, "status": "queued"}
        glance.holds["GET"] = asyncio.Event()
        async with glance.client() as client:
            janitor = Janitor(client)
            earlier = janitor.discard(SOMEBODY_ELSES, CallContext())  # a failed upload's record, going
            with pytest.raises(GatewayError) as caught:
                await Uploads(client, janitor, 5.0).add_image(
                    stream(spec(id=SOMEBODY_ELSES), *chunks(*CHUNKS)), CallContext()
                )
            glance.holds["GET"].set()
            assert await earlier
        return caught.value

    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        error = asyncio.run(scenario())
        gc.collect()
    assert error.reason == "IMAGE_ALREADY_EXISTS"
    assert [
        str(warning.message) for warning in caught_warnings if "never awaited" in str(warning.message)
    ] == []


# --- Uploads.stage (StageImageData) against the fake Glance ---------------------------------------------

QUEUED_ID = "5f0c2a51-98a6-4a57-9a53-0c3a7e2f1d6b"
STAGE_MALFORMED = wire.MalformedMessage("StageImageData", pb.StageImageDataRequest.DESCRIPTOR.full_name)


def stage_spec(**fields: Any) -> pb.StageImageDataRequest:
    fields.setdefault("image_id", QUEUED_ID)
    return pb.StageImageDataRequest(spec=pb.StageSpec(**fields))


def stage_finish(sha512: str = "", md5: str = "") -> pb.StageImageDataRequest:
    return pb.StageImageDataRequest(finish=pb.UploadFinish(sha512=sha512, md5=md5))


def stage_chunks(*pieces: bytes) -> list[StageMessage]:
    return [
        memoryview(piece) if index % 2 else pb.StageImageDataRequest(data=piece)
        for index, piece in enumerate(pieces)
    ]


def queued_glance(status: str = "queued") -> FakeGlance:
    glance = FakeGlance()
    glance.images[QUEUED_ID] = {"id": QUEUED_ID, "name": "q", "status": status, "size": None}
    return glance


@dataclass
class Staged:
    image: JsonObject | None
    error: GatewayError | None
    # What Glance had when stage() returned.
    status_then: str
    methods_then: list[str]
    workers_busy_then: int = 0


async def stage_attempt(
    glance: FakeGlance, messages: AsyncIterator[StageMessage], stall_timeout: float = 5.0
) -> Staged:
    async with glance.client() as client, Janitor(client) as janitor:
        uploads = Uploads(client, janitor, stall_timeout)
        image: JsonObject | None = None
        error: GatewayError | None = None
        try:
            image = await uploads.stage(messages, CallContext(token="tok"))
        except GatewayError as failure:
            error = failure
        status = str(glance.images.get(QUEUED_ID, {}).get("status"))
        return Staged(image, error, status, glance.methods, glance.workers_busy)


def stage(glance: FakeGlance, *items: StageMessage, stall_timeout: float = 5.0) -> Staged:
    async def messages() -> AsyncIterator[StageMessage]:
        for item in items:
            yield item

    return asyncio.run(stage_attempt(glance, messages(), stall_timeout))


def stage_failed(outcome: Staged) -> GatewayError:
    assert outcome.error is not None, f"stage succeeded: {outcome.image}"
    return outcome.error


@pytest.mark.parametrize("size", [None, len(DATA)], ids=["unsized", "sized"])
def test_a_stage_checks_the_image_then_puts_the_data_to_its_staging_area(size: int | None) -> None:
    glance = queued_glance()
    outcome = stage(glance, stage_spec(size=size), *stage_chunks(*CHUNKS))
    assert outcome.error is None and outcome.image is not None
    # The image checked; the PUT; after its first chunk, a look that Glance has begun (it has: "uploading");
    # the staged image.
    assert glance.methods == ["GET", "PUT", "GET", "GET"]
    put = glance.seen("PUT")[0]
    assert put.path == f"/v2/images/{QUEUED_ID}/stage"
    assert put.headers["content-type"] == "application/octet-stream"
    assert put.headers["x-auth-token"] == "tok"
    assert put.headers.get("x-openstack-image-size") == (None if size is None else str(size))
    assert "x-image-meta-store" not in put.headers
    assert glance.staged[QUEUED_ID] == DATA
    assert outcome.image["status"] == "uploading" and outcome.image["size"] == len(DATA)
    # Staging never creates or deletes an image.
    assert list(glance.images) == [QUEUED_ID]


def test_a_stage_with_the_right_finish_digests_is_staged() -> None:
    glance = queued_glance()
    spec = stage_spec(finish_digests=[pb.DIGEST_ALGORITHM_SHA512, pb.DIGEST_ALGORITHM_MD5])
    outcome = stage(glance, spec, *stage_chunks(*CHUNKS), stage_finish(sha512=SHA512, md5=MD5))
    assert outcome.error is None
    assert glance.staged[QUEUED_ID] == DATA


@pytest.mark.parametrize(
    "image_id, reason", [("", "MISSING_IMAGE_ID"), ("not-a-uuid", "INVALID_IMAGE_ID")], ids=["none", "bad"]
)
def test_a_stage_spec_without_a_valid_image_id_is_refused_before_glance_is_asked(
    image_id: str, reason: str
) -> None:
    glance = queued_glance()
    outcome = stage(glance, stage_spec(image_id=image_id), *stage_chunks(*CHUNKS))
    assert (stage_failed(outcome).code, stage_failed(outcome).reason) == (C.INVALID_ARGUMENT, reason)
    assert glance.requests == []


@pytest.mark.parametrize(
    "after_spec, reason",
    [
        ([], "NO_DATA"),
        ([stage_finish()], "NO_DATA"),
        ([pb.StageImageDataRequest(data=b"")], "NO_DATA"),
    ],
    ids=["spec-only", "finish-only", "empty-chunk"],
)
def test_a_stage_without_data_is_refused_before_glance_is_asked(
    after_spec: list[StageMessage], reason: str
) -> None:
    glance = queued_glance()
    outcome = stage(glance, stage_spec(), *after_spec)
    assert (stage_failed(outcome).code, stage_failed(outcome).reason) == (C.INVALID_ARGUMENT, reason)
    assert glance.requests == []


def test_a_stage_announcing_a_finish_that_never_comes_before_any_data_asks_glance_nothing() -> None:
    glance = queued_glance()
    outcome = stage(glance, stage_spec(ends_with_finish=True))
    assert stage_failed(outcome).reason == "FINISH_MISSING"
    assert "StageImageData" in stage_failed(outcome).message
    assert glance.requests == []


def test_the_first_stage_message_must_be_the_spec() -> None:
    glance = queued_glance()
    outcome = stage(glance, *stage_chunks(*CHUNKS))
    error = stage_failed(outcome)
    assert (error.reason, error.message) == (
        "SPEC_NOT_FIRST",
        "the first StageImageData message must carry the spec",
    )
    assert glance.requests == []


def test_a_stage_into_a_missing_image_is_not_found_with_no_data_sent() -> None:
    glance = FakeGlance()
    outcome = stage(glance, stage_spec(), *stage_chunks(*CHUNKS))
    error = stage_failed(outcome)
    assert (error.code, error.reason) == (C.NOT_FOUND, "NOT_FOUND")
    assert error.metadata["glance_status"] == "404"
    assert glance.methods == ["GET"]


@pytest.mark.parametrize("status", ["active", "uploading", "importing", "saving"])
def test_a_stage_into_an_image_that_is_not_queued_is_failed_precondition_with_no_data_sent(
    status: str,
) -> None:
    glance = queued_glance(status)
    outcome = stage(glance, stage_spec(), *stage_chunks(*CHUNKS))
    error = stage_failed(outcome)
    assert (error.code, error.reason) == (C.FAILED_PRECONDITION, "IMAGE_NOT_QUEUED")
    assert error.metadata == {"image_id": QUEUED_ID} and status in error.message
    assert glance.methods == ["GET"] and outcome.status_then == status


def assert_unstaged(glance: FakeGlance, outcome: Staged) -> None:
    """The stage was cut off before its last chunk: nothing staged, the image queued when stage() returned."""
    assert bytes(glance.received[QUEUED_ID]) == ALL_BUT_LAST
    assert QUEUED_ID not in glance.staged
    assert outcome.status_then == "queued"


@pytest.mark.parametrize(
    "spec, ending, reason",
    [
        (stage_spec(expected_sha512="a" * 128), [], "CHECKSUM_MISMATCH"),
        (
            stage_spec(finish_digests=[pb.DIGEST_ALGORITHM_MD5]),
            [stage_finish(md5="0" * 32)],
            "CHECKSUM_MISMATCH",
        ),
        (stage_spec(size=len(DATA) + 1), [], "SIZE_MISMATCH"),
        (stage_spec(ends_with_finish=True), [], "FINISH_MISSING"),
        (stage_spec(), [STAGE_MALFORMED], "MALFORMED_REQUEST"),
    ],
    ids=["sha512", "finish-md5", "short", "no-finish", "malformed"],
)
def test_a_stage_failing_its_checks_never_sends_the_last_chunk_and_leaves_the_image_queued(
    spec: pb.StageImageDataRequest, ending: list[StageMessage], reason: str
) -> None:
    glance = queued_glance()
    outcome = stage(glance, spec, *stage_chunks(*CHUNKS), *ending)
    assert stage_failed(outcome).reason == reason
    assert_unstaged(glance, outcome)


def test_a_failed_stage_returns_only_once_glance_has_put_the_image_back_to_queued() -> None:
    glance = queued_glance()
    glance.unstage_after = 0.3  # the cut-off stage is noticed later, as in a real Glance's worker
    outcome = stage(glance, stage_spec(expected_md5="0" * 32), *stage_chunks(*CHUNKS))
    assert stage_failed(outcome).code == C.DATA_LOSS
    assert_unstaged(glance, outcome)
    # The looks that waited for it, after the PUT.
    assert outcome.methods_then[:2] == ["GET", "PUT"] and outcome.methods_then[-1] == "GET"
    assert len(outcome.methods_then) > 3


def test_the_wait_for_a_failed_stage_to_be_undone_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "DISCARD_WAIT_SECONDS", 0.2)
    glance = queued_glance()
    glance.unstage_after = float("inf")
    outcome = stage(glance, stage_spec(expected_md5="0" * 32), *stage_chunks(*CHUNKS))
    assert stage_failed(outcome).reason == "CHECKSUM_MISMATCH"
    assert outcome.status_then == "uploading"


def test_a_stage_glance_refuses_is_its_answer_with_no_wait() -> None:
    glance = queued_glance()
    glance.failures["PUT"] = [413]
    outcome = stage(glance, stage_spec(), *stage_chunks(*CHUNKS))
    error = stage_failed(outcome)
    assert (error.code, error.metadata["glance_status"]) == (C.RESOURCE_EXHAUSTED, "413")
    assert glance.methods == ["GET", "PUT"]


def test_a_client_stalled_mid_stage_ends_with_nothing_staged() -> None:
    glance = queued_glance()
    glance.unstage_after = 0.1

    async def stalling_stage() -> AsyncIterator[StageMessage]:
        yield stage_spec()
        for message in stage_chunks(*CHUNKS):
            yield message
        await asyncio.sleep(60)

    outcome = asyncio.run(stage_attempt(glance, stalling_stage(), stall_timeout=0.05))
    error = stage_failed(outcome)
    assert (error.code, error.reason) == (C.DEADLINE_EXCEEDED, "CLIENT_STALLED")
    assert_unstaged(glance, outcome)


def test_a_stage_cancelled_mid_data_never_completes_and_does_not_wait() -> None:
    async def scenario() -> tuple[FakeGlance, list[str]]:
        glance = queued_glance()
        stuck = asyncio.Event()

        async def client() -> AsyncIterator[StageMessage]:
            yield stage_spec()
            for message in stage_chunks(*CHUNKS):
                yield message
            await stuck.wait()  # never set: the client is cancelled here

        async with glance.client() as client_, Janitor(client_) as janitor:
            call = asyncio.create_task(Uploads(client_, janitor, 5.0).stage(client(), CallContext()))
            await asyncio.wait_for(glance.arrived["PUT"].wait(), 5)
            await asyncio.sleep(0.02)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        return glance, glance.methods

    glance, methods = asyncio.run(scenario())
    assert methods == ["GET", "PUT", "GET"]  # no look after the cancel
    assert bytes(glance.received[QUEUED_ID]) == ALL_BUT_LAST
    assert QUEUED_ID not in glance.staged and glance.images[QUEUED_ID]["status"] == "queued"


def test_a_stage_sends_only_its_first_chunk_until_glance_has_begun_reading() -> None:
    glance = queued_glance()
    glance.worker_delay = 0.2
    outcome = stage(glance, stage_spec(), *stage_chunks(*CHUNKS))
    assert outcome.error is None and glance.staged[QUEUED_ID] == DATA
    # The gateway looked until the worker had begun; only then did the rest of the data go.
    assert glance.methods.count("GET") > 3


def test_a_failed_stage_whose_glance_worker_starts_late_returns_once_that_worker_has_undone_it() -> None:
    # Measured on Glance 33: the data of a stage cut off before a worker took it up waited in socket buffers,
    # and the worker made the image "uploading" after the gateway had found it untouched.
    glance = queued_glance()
    glance.worker_delay = 0.2
    outcome = stage(glance, stage_spec(expected_md5="0" * 32), *stage_chunks(*CHUNKS))
    assert stage_failed(outcome).reason == "CHECKSUM_MISMATCH"
    assert (outcome.workers_busy_then, outcome.status_then) == (0, "queued")
    assert QUEUED_ID not in glance.staged and bytes(glance.received[QUEUED_ID]) == ALL_BUT_LAST


def test_a_stage_glance_never_begins_to_take_fails_and_waits_no_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upload, "GLANCE_START_SECONDS", 0.2)
    monkeypatch.setattr(upload, "DISCARD_WAIT_SECONDS", 0.2)
    glance = queued_glance()
    glance.worker_delay = 60.0
    outcome = stage(glance, stage_spec(), *stage_chunks(*CHUNKS))
    error = stage_failed(outcome)
    assert (error.code, error.reason) == (C.DEADLINE_EXCEEDED, "GLANCE_TIMEOUT")
    assert "did not begin" in error.message
    assert QUEUED_ID not in glance.staged
