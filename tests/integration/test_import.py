"""Interoperable import on a real Glance: StageImageData, ImportImage (glance-direct, copy-image,
web-download) and WatchImageImport, and a failed stage leaving the image as it was.

What Glance did is checked straight in Glance (its image JSON, its staging directory), not only through the
gateway. The session Glance is noauth, where every caller is admin (copy-image needs that).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import (
    KIB,
    MIB,
    ImageTracker,
    LoopbackHttpServer,
    StartGateway,
    assert_error,
    chunks_of,
    download,
    glance_image,
    open_channel,
    pseudo_random_chunks,
    sha512_hex,
    wait_until,
)

C = grpc.StatusCode
DATA = b"".join(pseudo_random_chunks(seed=33, total=3 * MIB + 123))
CHUNK = 256 * KIB
WATCH_TIMEOUT = 60.0


def queued_image(new_image: ImageTracker) -> pb.Image:
    """A reservation: an image with formats and no data, as interoperable import starts from."""
    image = new_image(type=pb.IMAGE_TYPE_RAW)
    assert image.status == pb.IMAGE_STATUS_QUEUED
    return image


def stage_requests(
    image_id: str, data: bytes, *, finish: pb.UploadFinish | None = None, **spec: Any
) -> Iterator[pb.StageImageDataRequest]:
    yield pb.StageImageDataRequest(spec=pb.StageSpec(image_id=image_id, **spec))
    for chunk in chunks_of(data, CHUNK):
        yield pb.StageImageDataRequest(data=chunk)
    if finish is not None:
        yield pb.StageImageDataRequest(finish=finish)


def watch(stub: pb_grpc.ImageServiceStub, image_id: str) -> list[pb.WatchImageImportResponse]:
    request = pb.WatchImageImportRequest(image_id=image_id)
    return list(stub.WatchImageImport(request, timeout=WATCH_TIMEOUT))


def staged_file(glance: GlanceServer, image_id: str) -> Path:
    """Where Glance keeps an image's staged data ([os_glance_staging_store], localglance's config)."""
    return glance.config.data_dir / "staging" / image_id


def import_fields(image: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in image.items() if key.startswith("os_glance")}


# -- glance-direct: stage, import, watch, download --------------------------------------------------------


def test_staged_data_imported_with_glance_direct_is_the_active_images_data(
    stub: pb_grpc.ImageServiceStub, glance: GlanceServer, new_image: ImageTracker
) -> None:
    image_id = queued_image(new_image).id
    requests = stage_requests(
        image_id,
        DATA,
        size=len(DATA),
        expected_sha512=sha512_hex(DATA),
        finish_digests=[pb.DIGEST_ALGORITHM_MD5],
        finish=pb.UploadFinish(md5=hashlib.md5(DATA).hexdigest()),
    )
    staged = stub.StageImageData(requests, timeout=60).image
    assert (staged.id, staged.status, staged.size) == (image_id, pb.IMAGE_STATUS_UPLOADING, len(DATA))
    assert staged_file(glance, image_id).read_bytes() == DATA

    stub.ImportImage(pb.ImportImageRequest(image_id=image_id, method=pb.IMPORT_METHOD_GLANCE_DIRECT))
    responses = watch(stub, image_id)
    assert responses[0].state == pb.IMPORT_STATE_IN_PROGRESS
    assert all(r.state == pb.IMPORT_STATE_IN_PROGRESS for r in responses[:-1])
    last = responses[-1]
    assert last.state == pb.IMPORT_STATE_SUCCEEDED
    assert (last.image.status, list(last.image.stores)) == (pb.IMAGE_STATUS_ACTIVE, ["file"])
    assert (list(last.importing_to_stores), list(last.failed_stores)) == ([], [])

    header, data = download(stub, pb.GetImageRequest(image_id=image_id))
    assert header.verified and data == DATA
    # Glance's own view: done, lock dropped, staging emptied.
    after = glance_image(glance.url, image_id)
    assert after is not None and after["status"] == "active"
    assert "os_glance_import_task" not in after and not staged_file(glance, image_id).exists()


def test_import_before_staging_is_failed_precondition(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    image_id = queued_image(new_image).id
    with pytest.raises(grpc.RpcError) as caught:
        stub.ImportImage(pb.ImportImageRequest(image_id=image_id, method=pb.IMPORT_METHOD_GLANCE_DIRECT))
    assert_error(caught.value, C.FAILED_PRECONDITION, "NOT_STAGED", glance_status=409, image_id=image_id)


# -- copy-image -------------------------------------------------------------------------------------------


def test_copy_image_adds_a_store_and_copying_there_again_is_already_exists(
    stub: pb_grpc.ImageServiceStub, glance: GlanceServer, new_image: ImageTracker
) -> None:
    image_id = new_image(data=DATA[: 300 * KIB]).id
    copy = pb.ImportImageRequest(image_id=image_id, method=pb.IMPORT_METHOD_COPY_IMAGE, stores=["file2"])
    stub.ImportImage(copy)
    last = watch(stub, image_id)[-1]
    assert last.state == pb.IMPORT_STATE_SUCCEEDED
    assert (last.image.status, sorted(last.image.stores)) == (pb.IMAGE_STATUS_ACTIVE, ["file", "file2"])
    after = glance_image(glance.url, image_id)
    assert after is not None and after["stores"] == "file,file2"

    with pytest.raises(grpc.RpcError) as caught:
        stub.ImportImage(copy)
    assert_error(caught.value, C.ALREADY_EXISTS, "ALREADY_IN_STORE", glance_status=400, image_id=image_id)


# -- web-download -----------------------------------------------------------------------------------------


class WebServer(LoopbackHttpServer):
    """Serves DATA at /image.raw (anything else 404) on 127.0.0.1:<port>, counting the requests."""

    def __init__(self, port: int) -> None:
        self.paths: list[str] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                web.paths.append(self.path)
                found = self.path == "/image.raw"
                self.send_response(200 if found else 404)
                self.send_header("Content-Length", str(len(DATA) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(DATA)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler, "web-download", port)
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def web(glance: GlanceServer) -> Iterator[WebServer]:
    # The one loopback port the session Glance's import filtering lets web-download fetch from.
    with WebServer(glance.web_port) as server:
        yield server


def test_web_download_fetches_the_data_from_a_uri(
    stub: pb_grpc.ImageServiceStub, web: WebServer, new_image: ImageTracker
) -> None:
    image_id = queued_image(new_image).id
    stub.ImportImage(
        pb.ImportImageRequest(
            image_id=image_id, method=pb.IMPORT_METHOD_WEB_DOWNLOAD, uri=f"{web.url}/image.raw"
        )
    )
    last = watch(stub, image_id)[-1]
    assert (last.state, last.image.status) == (pb.IMPORT_STATE_SUCCEEDED, pb.IMAGE_STATUS_ACTIVE)
    assert web.paths == ["/image.raw"]
    header, data = download(stub, pb.GetImageRequest(image_id=image_id))
    assert header.verified and data == DATA


def test_a_web_download_whose_uri_answers_404_is_reported_failed(
    stub: pb_grpc.ImageServiceStub, glance: GlanceServer, web: WebServer, new_image: ImageTracker
) -> None:
    image_id = queued_image(new_image).id
    stub.ImportImage(
        pb.ImportImageRequest(
            image_id=image_id, method=pb.IMPORT_METHOD_WEB_DOWNLOAD, uri=f"{web.url}/nothing"
        )
    )
    responses = watch(stub, image_id)
    last = responses[-1]
    assert last.state == pb.IMPORT_STATE_FAILED
    assert (last.image.status, list(last.failed_stores)) == (pb.IMAGE_STATUS_QUEUED, ["file"])
    assert web.paths == ["/nothing"]
    after = glance_image(glance.url, image_id)
    assert after is not None
    assert after["os_glance_failed_import"] == "file", import_fields(after)


# -- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, code, reason, glance_status",
    [
        ({"method": pb.IMPORT_METHOD_UNSPECIFIED}, C.INVALID_ARGUMENT, "MISSING_IMPORT_METHOD", None),
        ({"method": pb.IMPORT_METHOD_WEB_DOWNLOAD, "uri": "ftp://127.0.0.1/x"}, C.INVALID_ARGUMENT,
         "INVALID_URI", None),
        # A loopback port Glance's import filtering does not allow: Glance's own refusal.
        ({"method": pb.IMPORT_METHOD_WEB_DOWNLOAD, "uri": "http://127.0.0.1:1/x"}, C.INVALID_ARGUMENT,
         "URI_NOT_ALLOWED", 400),
        ({"method": pb.IMPORT_METHOD_WEB_DOWNLOAD, "uri": "http://127.0.0.1/x", "stores": ["nosuch"]},
         C.INVALID_ARGUMENT, "UNKNOWN_STORE", 409),
        ({"method": pb.IMPORT_METHOD_COPY_IMAGE}, C.INVALID_ARGUMENT, "MISSING_STORES", None),
        ({"method": pb.IMPORT_METHOD_COPY_IMAGE, "stores": ["file2"]}, C.FAILED_PRECONDITION,
         "IMAGE_NOT_ACTIVE", 409),
    ],
    ids=["no-method", "ftp-uri", "filtered-uri", "unknown-store", "copy-nowhere", "copy-queued"],
)  # fmt: skip
def test_bad_import_requests_are_refused_and_leave_the_image_queued(
    stub: pb_grpc.ImageServiceStub,
    glance: GlanceServer,
    new_image: ImageTracker,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
    glance_status: int | None,
) -> None:
    image_id = queued_image(new_image).id
    with pytest.raises(grpc.RpcError) as caught:
        stub.ImportImage(pb.ImportImageRequest(image_id=image_id, **fields))
    assert_error(caught.value, code, reason, glance_status=glance_status)
    after = glance_image(glance.url, image_id)
    assert after is not None and after["status"] == "queued" and "os_glance_import_task" not in after


def test_staging_into_a_missing_or_active_image_is_refused_before_any_data_goes(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    missing = "00000000-0000-4000-8000-00000000d00d"
    with pytest.raises(grpc.RpcError) as caught:
        stub.StageImageData(stage_requests(missing, DATA[:KIB]), timeout=30)
    assert_error(caught.value, C.NOT_FOUND, "NOT_FOUND", glance_status=404, image_id=missing)
    active = new_image(data=DATA[:KIB]).id
    with pytest.raises(grpc.RpcError) as caught:
        stub.StageImageData(stage_requests(active, DATA[:KIB]), timeout=30)
    assert_error(caught.value, C.FAILED_PRECONDITION, "IMAGE_NOT_QUEUED", image_id=active)


def test_a_watch_of_an_image_with_no_import_sends_one_message(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    image_id = queued_image(new_image).id
    (only,) = watch(stub, image_id)
    assert (only.image.id, only.image.status, only.state) == (
        image_id,
        pb.IMAGE_STATUS_QUEUED,
        pb.IMPORT_STATE_UNSPECIFIED,
    )


# -- a failed stage leaves the image as it was --------------------------------------------------------------


def assert_as_it_was(glance: GlanceServer, image_id: str) -> None:
    """Queued, no size, nothing in the staging area; and it can still be staged (no leftover to refuse)."""
    after = glance_image(glance.url, image_id)
    assert after is not None and (after["status"], after["size"]) == ("queued", None), after
    assert not staged_file(glance, image_id).exists()


@pytest.mark.parametrize(
    "spec, finish, code, reason",
    [
        ({"expected_sha512": "0" * 128}, None, C.DATA_LOSS, "CHECKSUM_MISMATCH"),
        ({"size": len(DATA) + 1}, None, C.INVALID_ARGUMENT, "SIZE_MISMATCH"),
        ({"finish_digests": [pb.DIGEST_ALGORITHM_SHA512]}, pb.UploadFinish(sha512="f" * 128), C.DATA_LOSS,
         "CHECKSUM_MISMATCH"),
        ({"ends_with_finish": True}, None, C.INVALID_ARGUMENT, "FINISH_MISSING"),
    ],
    ids=["wrong-digest", "short", "wrong-finish-digest", "no-finish"],
)  # fmt: skip
def test_a_stage_failing_its_checks_leaves_the_image_queued_with_nothing_staged(
    stub: pb_grpc.ImageServiceStub,
    glance: GlanceServer,
    new_image: ImageTracker,
    spec: dict[str, Any],
    finish: pb.UploadFinish | None,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    image_id = queued_image(new_image).id
    with pytest.raises(grpc.RpcError) as caught:
        stub.StageImageData(stage_requests(image_id, DATA, finish=finish, **spec), timeout=60)
    assert_error(caught.value, code, reason)
    # At once: the gateway answers only once Glance has put the image back.
    assert_as_it_was(glance, image_id)
    stub.StageImageData(stage_requests(image_id, DATA[:KIB]), timeout=60)


class Paused:
    """A stage request stream that sends the spec and some data, then waits until released."""

    def __init__(self, image_id: str) -> None:
        self.image_id = image_id
        self.release = threading.Event()

    def __iter__(self) -> Iterator[pb.StageImageDataRequest]:
        yield pb.StageImageDataRequest(spec=pb.StageSpec(image_id=self.image_id))
        for chunk in chunks_of(DATA[: 4 * CHUNK], CHUNK):
            yield pb.StageImageDataRequest(data=chunk)
        self.release.wait(60)


def test_a_stage_cancelled_by_the_client_leaves_the_image_queued_with_nothing_staged(
    stub: pb_grpc.ImageServiceStub, glance: GlanceServer, new_image: ImageTracker
) -> None:
    image_id = queued_image(new_image).id
    paused = Paused(image_id)
    call = stub.StageImageData.future(iter(paused), timeout=60)
    try:
        # Glance is receiving the data: the image is "uploading" and its staged file growing.
        wait_until(lambda: staged_file(glance, image_id).exists(), 15, "Glance to start staging")
        call.cancel()
    finally:
        paused.release.set()
    assert call.cancelled()
    wait_until(lambda: not staged_file(glance, image_id).exists(), 15, "Glance to drop the staged data")
    wait_until(
        lambda: (glance_image(glance.url, image_id) or {}).get("status") == "queued", 15, "the image queued"
    )
    assert_as_it_was(glance, image_id)


def test_a_stalled_stage_leaves_the_image_queued_with_nothing_staged(
    glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    gateway = start_gateway(glance.url, "--stall-timeout", "1")
    image_id = queued_image(new_image).id
    paused = Paused(image_id)
    try:
        with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.ImageServiceStub(channel).StageImageData(iter(paused), timeout=60)
    finally:
        paused.release.set()
    assert_error(caught.value, C.DEADLINE_EXCEEDED, "CLIENT_STALLED")
    assert_as_it_was(glance, image_id)
