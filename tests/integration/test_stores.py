"""ListStores and DeleteImageFromStore on a real Glance 33 with two file stores, "file" (the default) and
"file2" (localglance's config).

First on the session Glance (noauth: every caller is admin), where an image can hold its data in one store
only: the noauth context has no project, and copy-image makes a task whose owner column must not be NULL, so
Glance answers it 500 (measured; add-location makes its task the same way). Then through Keystone
(`keystone_gateway`), where an admin copies an image to the second store over REST and the gateway removes
one copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer, Identities

from .support import (
    ImageTracker,
    add_requests,
    download,
    expect_error,
    glance_image,
    http,
    new_id,
    unique_name,
    wait_until,
)

C = grpc.StatusCode
DATA = b"store data " * 300


def delete_from(
    stub: pb_grpc.ImageServiceStub, image_id: str, store_id: str, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    request = pb.DeleteImageFromStoreRequest(image_id=image_id, store_id=store_id)
    stub.DeleteImageFromStore(request, metadata=metadata, timeout=30)


# -- noauth Glance ---------------------------------------------------------------------------------------


def test_list_stores_names_both_stores_and_the_default(stub: pb_grpc.ImageServiceStub) -> None:
    response = stub.ListStores(pb.ListStoresRequest(), timeout=30)
    # Glance leaves its reserved stores (os_glance_staging_store, os_glance_tasks_store) out.
    assert list(response.stores) == [pb.Store(id="file", is_default=True), pb.Store(id="file2")]


def test_data_goes_to_the_store_the_spec_names(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    into_default = new_image(data=DATA)
    into_file2 = new_image(data=DATA, store="file2")
    assert list(into_default.stores) == ["file"] and list(into_file2.stores) == ["file2"]
    _, data = download(stub, pb.GetImageRequest(image_id=into_file2.id))
    assert data == DATA


def test_the_only_store_holding_the_data_keeps_it(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer
) -> None:
    image = new_image(data=DATA)
    message = expect_error(
        lambda: delete_from(stub, image.id, "file"), C.FAILED_PRECONDITION, "ONLY_STORE", 403, image.id
    )
    assert "only store containing it" in message
    # Glance counts the image's locations before it looks for the store: naming a store that does not
    # hold the data of a single-store image is the same refusal, not NOT_FOUND.
    expect_error(
        lambda: delete_from(stub, image.id, "file2"), C.FAILED_PRECONDITION, "ONLY_STORE", 403, image.id
    )
    stored = glance_image(glance.url, image.id)
    assert stored is not None and (stored["status"], stored["stores"]) == ("active", "file")


@pytest.mark.parametrize("store", ["nosuch", "os_glance_staging_store"])
def test_a_store_glance_does_not_have_is_invalid_argument(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, store: str
) -> None:
    image = new_image(data=DATA)
    # Glance answers 409 "The selected store ... is not available on this node." (its reserved stores too).
    message = expect_error(
        lambda: delete_from(stub, image.id, store), C.INVALID_ARGUMENT, "UNKNOWN_STORE", 409, image.id
    )
    assert store in message


def test_an_image_without_data_has_nothing_to_delete_from_a_store(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    queued = new_image()
    expect_error(
        lambda: delete_from(stub, queued.id, "file"),
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_ACTIVE",
        409,
        queued.id,
    )


def test_a_missing_image_is_not_found(stub: pb_grpc.ImageServiceStub) -> None:
    missing = new_id()
    expect_error(lambda: delete_from(stub, missing, "file"), C.NOT_FOUND, "NOT_FOUND", 404, missing)


@pytest.mark.parametrize(
    ("image_id", "store_id", "reason"),
    [
        ("", "file", "MISSING_IMAGE_ID"),
        ("nope", "file", "INVALID_IMAGE_ID"),
        ("7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77", "", "MISSING_STORE_ID"),
        ("7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77", "../images", "INVALID_STORE"),
        ("7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77", "file/x", "INVALID_STORE"),
    ],
)
def test_bad_ids_are_refused_by_the_gateway(
    stub: pb_grpc.ImageServiceStub, image_id: str, store_id: str, reason: str
) -> None:
    # No glance_status: the gateway answered without asking Glance.
    expect_error(lambda: delete_from(stub, image_id, store_id), C.INVALID_ARGUMENT, reason, None)


# -- through Keystone: an admin can keep an image in two stores, and take one copy away ---------------


@pytest.fixture
def alpha_image(
    keystone_stub: pb_grpc.ImageServiceStub, keystone_glance: GlanceServer, identities: Identities
) -> Iterator[pb.Image]:
    """An image with data, made through the gateway by alpha-member; deleted at teardown by the admin."""
    spec = pb.ImageSpec(id=new_id(), name=unique_name("stores"), type=pb.IMAGE_TYPE_RAW)
    response = keystone_stub.AddImage(
        add_requests(spec, [DATA]), metadata=identities.metadata("alpha", "member"), timeout=60
    )
    try:
        yield response.image
    finally:
        admin = {"X-Auth-Token": identities.admin_token()}
        status, raw = http("DELETE", f"{keystone_glance.url}/v2/images/{spec.id}", headers=admin)
        assert status in (204, 404), raw


def stores_of(glance: GlanceServer, token: str, image_id: str) -> str:
    status, raw = http("GET", f"{glance.url}/v2/images/{image_id}", headers={"X-Auth-Token": token})
    assert status == 200, raw
    stores: str = json.loads(raw)["stores"]
    return stores


def test_an_admin_deletes_the_copy_in_one_of_two_stores(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    alpha_image: pb.Image,
) -> None:
    admin_token = identities.admin_token()
    # The second copy over plain REST (ImportImage is another group's RPC): copy-image is for admins only.
    copy = json.dumps({"method": {"name": "copy-image"}, "stores": ["file2"]}).encode()
    headers = {"X-Auth-Token": admin_token, "Content-Type": "application/json"}
    status, raw = http("POST", f"{keystone_glance.url}/v2/images/{alpha_image.id}/import", copy, headers)
    assert status == 202, raw
    wait_until(
        lambda: stores_of(keystone_glance, admin_token, alpha_image.id) == "file,file2",
        timeout=30,
        message="copy-image to file2",
    )
    member = identities.metadata("alpha", "member")

    # Owning the image is not enough: delete_image_location is admin-only by default.
    expect_error(
        lambda: delete_from(keystone_stub, alpha_image.id, "file2", metadata=member),
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
        alpha_image.id,
    )
    delete_from(keystone_stub, alpha_image.id, "file2", metadata=identities.metadata("admin", "admin"))

    image = keystone_stub.GetImageMeta(pb.GetImageMetaRequest(image_id=alpha_image.id), metadata=member).image
    assert list(image.stores) == ["file"] and image.status == pb.IMAGE_STATUS_ACTIVE
    header, data = download(keystone_stub, pb.GetImageRequest(image_id=alpha_image.id), metadata=member)
    assert data == DATA and header.verified
    # Now the last copy: refused even to the admin.
    expect_error(
        lambda: delete_from(
            keystone_stub, alpha_image.id, "file", metadata=identities.metadata("admin", "admin")
        ),
        C.FAILED_PRECONDITION,
        "ONLY_STORE",
        403,
        alpha_image.id,
    )


def test_members_and_readers_list_the_stores(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities
) -> None:
    for role in ("reader", "member"):
        response = keystone_stub.ListStores(
            pb.ListStoresRequest(), metadata=identities.metadata("beta", role), timeout=30
        )
        assert [(store.id, store.is_default) for store in response.stores] == [
            ("file", True),
            ("file2", False),
        ]
