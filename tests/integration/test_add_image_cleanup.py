"""A failed AddImage leaves no image in Glance, whatever made it fail after the record was created.

What is left is checked straight in Glance (GET /v2/images/<id> and a listing by the unique name), not
through the gateway.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import (
    KIB,
    ImageTracker,
    JsonObject,
    add_requests,
    assert_error,
    chunks_of,
    glance_image,
    glance_list,
    new_id,
    sha512_hex,
    unique_name,
    wait_until,
)

C = grpc.StatusCode
DATA = os.urandom(200 * KIB)
# Whether Glance is still busy with the aborted upload when the gateway deletes the record is a race, so
# one clean attempt proves little: every failure is tried several times.
ATTEMPTS = 5


def leftovers(glance_url: str, name: str, image_id: str) -> list[JsonObject]:
    """Whatever Glance still has of the image, by id and by name."""
    by_id = glance_image(glance_url, image_id)
    found = {image["id"]: image for image in glance_list(glance_url, name=name)}
    if by_id:
        found[by_id["id"]] = by_id
    return list(found.values())


def describe(images: list[JsonObject]) -> list[tuple[str, str, object]]:
    return [(image["id"], image["status"], image.get("size")) for image in images]


CASES: dict[str, tuple[dict[str, Any], grpc.StatusCode, str]] = {
    "more-bytes": (
        {"size": len(DATA) - 1},
        C.INVALID_ARGUMENT,
        "SIZE_MISMATCH",
    ),
    "fewer-bytes": (
        {"size": len(DATA) + 1},
        C.INVALID_ARGUMENT,
        "SIZE_MISMATCH",
    ),
    "protected-more-bytes": (
        {"size": len(DATA) - 1, "protected": True},
        C.INVALID_ARGUMENT,
        "SIZE_MISMATCH",
    ),
    "sha512-mismatch": (
        {"expected_sha512": sha512_hex(DATA[:-1])},
        C.DATA_LOSS,
        "CHECKSUM_MISMATCH",
    ),
    "md5-mismatch": (
        {"expected_md5": "0" * 32},
        C.DATA_LOSS,
        "CHECKSUM_MISMATCH",
    ),
}

# Guards the clean-up against Glance's own race: right after the gateway aborts an upload, the Glance worker
# still unwinding it holds the SQLite database, and a DELETE in that moment fails with "500 ... database is
# locked". The gateway retries the delete until the image is gone.


def test_failed_upload_leaves_nothing(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    # One test for all four failures, each tried ATTEMPTS times: a single leftover anywhere fails it.
    left: dict[str, list[tuple[str, str, object]]] = {}
    for case, (fields, code, reason) in CASES.items():
        for _ in range(ATTEMPTS):
            name, image_id = unique_name(case), new_id()
            new_image.track(image_id)  # teardown removes whatever the gateway leaves
            spec = pb.ImageSpec(name=name, id=image_id, type=pb.IMAGE_TYPE_RAW, **fields)
            with pytest.raises(grpc.RpcError) as caught:
                stub.AddImage(add_requests(spec, chunks_of(DATA, 64 * KIB)), timeout=30)
            assert_error(caught.value, code, reason)
            # The gateway cleans up before it answers, so this is checked at once.
            found = leftovers(glance.url, name, image_id)
            if found:
                left[f"{case} {image_id}"] = describe(found)
    total = ATTEMPTS * len(CASES)
    assert left == {}, f"{len(left)} of {total} failed AddImage calls left images behind: {left}"


def test_good_upload_after_failures_is_kept(new_image: ImageTracker, glance: GlanceServer) -> None:
    # The control for the test above: the same upload with the right size and digest is active and stays.
    image = new_image(name=unique_name("kept"), data=DATA, size=len(DATA), expected_sha512=sha512_hex(DATA))
    assert image.status == pb.IMAGE_STATUS_ACTIVE
    found = glance_image(glance.url, image.id)
    assert found is not None and found["status"] == "active" and found["os_hash_value"] == sha512_hex(DATA)


CANCEL_ATTEMPTS = 4

# Guards against grpc.aio ending a cancelled client's request stream like a finished one: if the gateway took
# that for the end of the data, it would send the held-back last chunk and Glance would activate an image with
# partial data. Seen without the gateway's settle delay in about 1 cancel of 10; each run tries several.


def blocking_upload(spec: pb.ImageSpec, release: threading.Event) -> Iterator[pb.AddImageRequest]:
    """The spec and some data, then a stall (as a client that hangs mid-upload) until `release`."""
    yield from add_requests(spec, chunks_of(DATA[: 128 * KIB], 32 * KIB))
    release.wait(30)


def status_of(glance_url: str, image_id: str) -> str | None:
    image = glance_image(glance_url, image_id)
    return None if image is None else str(image["status"])


def test_client_cancel_mid_upload_leaves_nothing(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    problems: dict[str, object] = {}
    for _ in range(CANCEL_ATTEMPTS):
        name, image_id = unique_name("cancel"), new_id()
        new_image.track(image_id)
        release = threading.Event()
        spec = pb.ImageSpec(name=name, id=image_id, type=pb.IMAGE_TYPE_RAW)  # no size: the client may stop
        future = stub.AddImage.future(blocking_upload(spec, release), timeout=60)
        try:
            # Cancel only once the upload really is under way: Glance shows the image as saving.
            wait_until(
                functools.partial(lambda i: status_of(glance.url, i) == "saving", image_id),
                10,
                "the upload to start",
            )
            assert future.cancel()
        finally:
            release.set()
        assert future.cancelled()

        # Clean-up after a cancel runs on the gateway's side after the client has gone: poll for it, and note
        # every state the image goes through on the way (it must never become active: the data is partial).
        seen: list[str] = []
        deadline = time.monotonic() + 5
        while (status := status_of(glance.url, image_id)) is not None and time.monotonic() < deadline:
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.02)
        if status is not None or "active" in seen or glance_list(glance.url, name=name):
            problems[image_id] = {"states": seen, "left": describe(leftovers(glance.url, name, image_id))}
    assert problems == {}, f"cancelled AddImage calls that went wrong (of {CANCEL_ATTEMPTS}): {problems}"


def test_oversized_chunk_is_resource_exhausted_and_leaves_nothing(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    # A data message above the gateway's max message size (4 MiB) is refused by gRPC itself mid-upload,
    # after the image record exists: the record must still go.
    name, image_id = unique_name("oversized"), new_id()
    new_image.track(image_id)
    spec = pb.ImageSpec(name=name, id=image_id, type=pb.IMAGE_TYPE_RAW)
    requests = add_requests(spec, [DATA, b"x" * (5 * 1024 * KIB)])
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddImage(requests, timeout=30)
    assert caught.value.code() == C.RESOURCE_EXHAUSTED
    wait_until(lambda: not leftovers(glance.url, name, image_id), 10, "the oversized upload's image to go")
