"""The sweep on a real Glance: records that a dead gateway left mid-upload go; reservations and images made
any other way stay, through every sweep.

A sweeping gateway removes every stale marked record in the session's Glance, so these tests make their own
and look only at those.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer, Identities

from .support import (
    KIB,
    ImageTracker,
    StartGateway,
    add_requests,
    chunks_of,
    glance_image,
    glance_list,
    http,
    new_id,
    open_channel,
    unique_name,
    wait_until,
)

MARK = "glance_grpc_gateway_upload"
SWEEP_FLAGS = ("--sweep-age", "2", "--sweep-interval", "1")


def create_in_glance(glance_url: str, tracker: ImageTracker, **fields: object) -> str:
    """An image record made straight through Glance's REST API, as another client (or a gateway) would."""
    image_id = new_id()
    body = {"id": image_id, "name": unique_name("swept"), "disk_format": "raw", "container_format": "bare"}
    status, raw = http(
        "POST",
        f"{glance_url}/v2/images",
        json.dumps({**body, **fields}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, raw
    tracker.track(image_id)
    return image_id


def exists(glance_url: str, image_id: str) -> bool:
    return glance_image(glance_url, image_id) is not None


def test_the_sweep_removes_stale_marked_records_and_nothing_else(
    new_image: ImageTracker, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    dead_upload = create_in_glance(glance.url, new_image, **{MARK: "1"})
    dead_hidden_upload = create_in_glance(glance.url, new_image, **{MARK: "1", "os_hidden": True})
    users_reservation = create_in_glance(glance.url, new_image)
    other_mark_value = create_in_glance(glance.url, new_image, **{MARK: "something else"})
    gateway_reservation = new_image(name=unique_name("reservation")).id
    # A finished upload keeps its mark; having its data, it is never swept.
    finished_upload = new_image(name=unique_name("finished"), data=b"finished").id
    time.sleep(2.5)  # older than the sweep age below (Glance's created_at has whole seconds)

    sweeper = start_gateway(glance.url, *SWEEP_FLAGS)
    wait_until(lambda: not exists(glance.url, dead_upload), 30, "the stale marked record to be swept")
    wait_until(lambda: not exists(glance.url, dead_hidden_upload), 30, "the hidden marked record to be swept")
    # Several more sweeps run (one a second); the others stay.
    time.sleep(3.5)
    for kept in (users_reservation, other_mark_value, gateway_reservation):
        image = glance_image(glance.url, kept)
        assert image is not None and image["status"] == "queued", kept
    finished = glance_image(glance.url, finished_upload)
    assert finished is not None and finished["status"] == "active" and finished[MARK] == "1"
    assert "sweep: removing image" in sweeper.log_text()


def test_a_young_marked_record_is_left_alone(
    new_image: ImageTracker, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    # An upload in progress on another replica looks like this: the sweep age must protect it.
    young = create_in_glance(glance.url, new_image, **{MARK: "1"})
    start_gateway(glance.url, "--sweep-age", "3600", "--sweep-interval", "1")
    time.sleep(3)
    assert exists(glance.url, young)


def stalled_upload(spec: pb.ImageSpec, release: threading.Event) -> Iterator[pb.AddImageRequest]:
    yield from add_requests(spec, chunks_of(os.urandom(256 * KIB), 64 * KIB))
    release.wait(60)


def test_a_gateway_killed_mid_upload_leaves_a_record_that_the_next_one_sweeps(
    new_image: ImageTracker, glance: GlanceServer, start_gateway: StartGateway
) -> None:
    reservation = new_image(name=unique_name("kept-reservation")).id
    name = unique_name("killed")
    doomed = start_gateway(glance.url)
    release = threading.Event()
    with open_channel(doomed.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        spec = pb.ImageSpec(name=name, type=pb.IMAGE_TYPE_RAW)
        future = stub.AddImage.future(stalled_upload(spec, release), timeout=60)
        try:
            wait_until(
                lambda: any(i["status"] == "saving" for i in glance_list(glance.url, name=name)),
                15,
                "the upload to be under way",
            )
            os.kill(doomed.pid, signal.SIGKILL)
            try:
                future.result(timeout=10)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            release.set()
    [listed] = glance_list(glance.url, name=name)
    left_id = str(listed["id"])
    new_image.track(left_id)
    # Nothing else will remove it: a few seconds on, Glance still has it, with the upload mark.
    time.sleep(3)
    left = glance_image(glance.url, left_id) or {}
    assert left.get(MARK) == "1" and left.get("status") in ("queued", "saving"), left

    start_gateway(glance.url, *SWEEP_FLAGS)
    wait_until(lambda: not exists(glance.url, left_id), 30, "the dead gateway's record to be swept")
    time.sleep(2)  # more sweeps
    image = glance_image(glance.url, reservation)
    assert image is not None and image["status"] == "queued"


def test_with_keystone_the_sweep_sweeps_with_the_token_from_its_file(
    keystone_glance: GlanceServer, identities: Identities, start_gateway: StartGateway, tmp_path: Path
) -> None:
    # A record an alpha member's upload left behind, made straight through Glance as a dying gateway would.
    image_id = new_id()
    body = {"id": image_id, "name": unique_name("swept"), "disk_format": "raw", "container_format": "bare"}
    member = {"X-Auth-Token": identities.token("alpha", "member"), "Content-Type": "application/json"}
    status, raw = http(
        "POST", f"{keystone_glance.url}/v2/images", json.dumps({**body, MARK: "1"}).encode(), member
    )
    assert status == 201, raw
    admin = {"X-Auth-Token": identities.admin_token()}
    url = f"{keystone_glance.url}/v2/images/{image_id}"
    try:
        time.sleep(2.5)  # older than the sweep age (Glance's created_at has whole seconds)
        without_token = start_gateway(keystone_glance.url, *SWEEP_FLAGS)
        wait_until(
            lambda: "UNAUTHENTICATED" in without_token.log_text(),
            30,
            "the sweep without a token to be refused by Glance",
        )
        assert http("GET", url, None, admin)[0] == 200
        without_token.stop()

        token_file = tmp_path / "sweep-token"
        token_file.write_text(identities.admin_token())
        start_gateway(keystone_glance.url, *SWEEP_FLAGS, "--sweep-token-file", str(token_file))
        wait_until(lambda: http("GET", url, None, admin)[0] == 404, 30, "the record to be swept")
    finally:
        http("DELETE", url, None, admin)
