"""AddImage's lifecycle on a real Glance: bursts of cancels leave no record, the explicit end of an upload
(UploadFinish), and the upload mark that the sweep relies on.

What is left is always checked straight in Glance, never through the gateway.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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
    sha512_hex,
    unique_name,
    wait_until,
)

C = grpc.StatusCode
MARK = "glance_grpc_gateway_upload"
DATA = os.urandom(256 * KIB)
SHA512 = pb.DIGEST_ALGORITHM_SHA512
MD5 = pb.DIGEST_ALGORITHM_MD5


def records_named(glance_url: str, name: str) -> list[JsonObject]:
    """Every record Glance lists under the name, hidden or not (a record stuck as "deleted" is listed too)."""
    return glance_list(glance_url, name=name) + glance_list(glance_url, name=name, os_hidden="true")


def finish(data: bytes, **override: str) -> pb.AddImageRequest:
    digests = {"sha512": sha512_hex(data), "md5": hashlib.md5(data).hexdigest(), **override}
    return pb.AddImageRequest(finish=pb.UploadFinish(**digests))


# -- bursts of cancelled uploads ----------------------------------------------------------------------------

BURST = 40
CONCURRENT = 10
# After the last cancel, the records must be gone within this time (the bound is 2 minutes).
SETTLE_SECONDS = 120.0


def stalling_upload(spec: pb.ImageSpec, release: threading.Event) -> Iterator[pb.AddImageRequest]:
    """The spec, data at a steady pace, then a stall: the stream only ever ends by the client's cancel."""
    yield pb.AddImageRequest(spec=spec)
    for chunk in chunks_of(DATA, 16 * KIB):
        if release.wait(0.02):
            return
        yield pb.AddImageRequest(data=chunk)
    release.wait(60)


def test_a_burst_of_cancelled_uploads_leaves_no_record(
    stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    # Ten callers at once against three Glance workers: creates queue in Glance, so cancels land before the
    # create is sent, while it waits in Glance's queue, and mid-data. No id is given: the gateway picks it.
    rng = random.Random(7)
    names = [unique_name("burst") for _ in range(BURST)]

    def one(name: str) -> str:
        release = threading.Event()
        spec = pb.ImageSpec(name=name, type=pb.IMAGE_TYPE_RAW)
        future = stub.AddImage.future(stalling_upload(spec, release), timeout=60)
        time.sleep(rng.uniform(0, 0.5))
        future.cancel()
        release.set()
        try:
            future.result()
        except grpc.RpcError as error:
            return str(error.code().name)
        except grpc.FutureCancelledError:
            return "CANCELLED"
        return "OK"

    with ThreadPoolExecutor(CONCURRENT) as pool:
        outcomes = list(pool.map(one, names))
    assert set(outcomes) == {"CANCELLED"}, outcomes

    deadline = time.monotonic() + SETTLE_SECONDS
    left: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        left = {name: [r["status"] for r in records_named(glance.url, name)] for name in names}
        left = {name: statuses for name, statuses in left.items() if statuses}
        if not left:
            break
        time.sleep(1)
    assert left == {}, f"{len(left)} of {BURST} cancelled uploads left records: {left}"


# -- the explicit end: UploadFinish -------------------------------------------------------------------------


def test_finish_with_digests_makes_the_image(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    spec = pb.ImageSpec(
        name=unique_name("finish"),
        type=pb.IMAGE_TYPE_RAW,
        ends_with_finish=True,
        finish_digests=[SHA512, MD5],
    )
    requests = [*add_requests(spec, chunks_of(DATA, 64 * KIB)), finish(DATA)]
    image = stub.AddImage(iter(requests), timeout=30).image
    new_image.track(image.id)
    assert image.status == pb.IMAGE_STATUS_ACTIVE
    assert (image.size, image.os_hash_value, image.checksum) == (
        len(DATA),
        sha512_hex(DATA),
        hashlib.md5(DATA).hexdigest(),
    )
    assert MARK not in image.properties


def test_finish_alone_makes_an_empty_image(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    spec = pb.ImageSpec(name=unique_name("empty"), type=pb.IMAGE_TYPE_RAW, ends_with_finish=True)
    image = stub.AddImage(
        iter([pb.AddImageRequest(spec=spec), finish(b"", sha512="", md5="")]), timeout=30
    ).image
    new_image.track(image.id)
    assert (image.status, image.size) == (pb.IMAGE_STATUS_ACTIVE, 0)


FINISH_FAILURES: dict[str, tuple[dict[str, object], list[pb.AddImageRequest], C, str]] = {
    "wrong-sha512": ({"finish_digests": [SHA512]}, [finish(DATA, sha512="0" * 128, md5="")], C.DATA_LOSS,
                     "CHECKSUM_MISMATCH"),
    "wrong-md5": ({"finish_digests": [MD5]}, [finish(DATA, sha512="", md5="f" * 32)], C.DATA_LOSS,
                  "CHECKSUM_MISMATCH"),
    "no-finish": ({"ends_with_finish": True}, [], C.INVALID_ARGUMENT, "FINISH_MISSING"),
    "announced-digest-missing": ({"finish_digests": [SHA512, MD5]}, [finish(DATA, md5="")],
                                 C.INVALID_ARGUMENT, "FINISH_DIGEST_MISSING"),
    "unannounced-digest": ({"ends_with_finish": True}, [finish(DATA, md5="")], C.INVALID_ARGUMENT,
                           "FINISH_DIGEST_NOT_ANNOUNCED"),
    "data-after-finish": ({"ends_with_finish": True}, [finish(DATA, sha512="", md5=""),
                          pb.AddImageRequest(data=b"x")], C.INVALID_ARGUMENT, "FINISH_NOT_LAST"),
}  # fmt: skip


@pytest.mark.parametrize("case", FINISH_FAILURES)
def test_a_bad_finish_fails_and_leaves_no_record(
    case: str, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    fields, tail, code, reason = FINISH_FAILURES[case]
    name = unique_name(case)
    spec = pb.ImageSpec(name=name, type=pb.IMAGE_TYPE_RAW, **fields)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddImage(iter([*add_requests(spec, chunks_of(DATA, 64 * KIB)), *tail]), timeout=30)
    assert_error(caught.value, code, reason)
    # A failed call (other than a cancel) removes its record before it answers.
    assert records_named(glance.url, name) == []


def test_a_cancel_before_the_finish_never_completes_the_image(
    stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    # Every byte is sent and then the client cancels instead of finishing: with ends_with_finish the gateway
    # must not take the end of the stream for the end of the data, however grpc reports it.
    names = [unique_name("unfinished") for _ in range(8)]
    for name in names:
        release = threading.Event()
        spec = pb.ImageSpec(name=name, type=pb.IMAGE_TYPE_RAW, size=len(DATA), ends_with_finish=True)

        def requests(
            spec: pb.ImageSpec = spec, release: threading.Event = release
        ) -> Iterator[pb.AddImageRequest]:
            yield from add_requests(spec, chunks_of(DATA, 64 * KIB))
            release.wait(30)

        future = stub.AddImage.future(requests(), timeout=30)
        time.sleep(0.3)
        future.cancel()
        release.set()
    deadline = time.monotonic() + SETTLE_SECONDS
    left = names
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [name for name in left if records_named(glance.url, name)]
    assert not left, [
        (r["id"], r["status"], r.get("size")) for name in left for r in records_named(glance.url, name)
    ]


# -- the upload mark ----------------------------------------------------------------------------------------


def test_an_upload_marks_its_record_and_callers_never_see_the_mark(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    name = unique_name("marked")
    release = threading.Event()
    spec = pb.ImageSpec(name=name, type=pb.IMAGE_TYPE_RAW, ends_with_finish=True)

    def requests() -> Iterator[pb.AddImageRequest]:
        yield from add_requests(spec, chunks_of(DATA, 64 * KIB))
        release.wait(30)
        yield finish(DATA, sha512="", md5="")

    future = stub.AddImage.future(requests(), timeout=30)
    try:
        wait_until(lambda: bool(records_named(glance.url, name)), 10, "the record to exist")
        record = records_named(glance.url, name)[0]
        new_image.track(record["id"])
        assert record[MARK] == "1"
        # Callers never see the mark.
        shown = stub.GetImageMeta(pb.GetImageMetaRequest(image_id=record["id"]), timeout=10).image
        assert MARK not in shown.properties
    finally:
        release.set()
    image = future.result().image
    assert MARK not in image.properties
    stored = glance_image(glance.url, image.id)
    assert stored is not None and stored[MARK] == "1" and stored["status"] == "active"


def test_a_reservation_carries_no_mark(new_image: ImageTracker, glance: GlanceServer) -> None:
    image = new_image(name=unique_name("reservation"))
    stored = glance_image(glance.url, image.id)
    assert stored is not None and stored["status"] == "queued" and MARK not in stored


def test_callers_cannot_set_the_mark(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    spec = pb.ImageSpec(name=unique_name("forged"), properties={MARK: "1"})
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddImage(add_requests(spec), timeout=10)
    assert_error(caught.value, C.INVALID_ARGUMENT, "INVALID_PROPERTY")
    image = new_image(name=unique_name("unforged"))
    update = pb.UpdateImageRequest(image_id=image.id, image=pb.Image(properties={MARK: "1"}))
    update.update_mask.paths.append(f"properties.{MARK}")
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateImage(update, timeout=10)
    assert_error(caught.value, C.INVALID_ARGUMENT, "INVALID_PROPERTY")
