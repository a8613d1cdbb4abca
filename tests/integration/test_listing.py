"""ListImages against a real Glance: AIP-158 paging, filters and sort order.

Every request filters on this module's unique property (or tag), so images of other tests never show up.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

from .support import ImageTracker, assert_error, unique_name

SUITE = uuid.uuid4().hex[:12]
TAG = f"tag-{SUITE}"
MINE = {"suite": SUITE}

# name: (type, data size or None for a queued image, is_public, extra tags, extra properties)
CATALOG: dict[str, tuple[pb.ImageType.ValueType, int | None, str, list[str], dict[str, str]]] = {
    "alpha": (pb.IMAGE_TYPE_RAW, 100, "true", ["red"], {"color": "red"}),
    "bravo": (pb.IMAGE_TYPE_MACHINE, 300, "false", ["blue"], {"color": "blue"}),
    "charlie": (pb.IMAGE_TYPE_KERNEL, 200, "on", ["red", "blue"], {"color": "red"}),
    "delta": (pb.IMAGE_TYPE_RAMDISK, None, "0", [], {}),
    "echo": (pb.IMAGE_TYPE_RAW, 400, "off", [], {"color": "green"}),
}


def full_name(short: str) -> str:
    return f"{short}-{SUITE}"


@pytest.fixture(scope="module")
def catalog(module_images: ImageTracker) -> dict[str, pb.Image]:
    """Five images: four active of different sizes, formats and visibilities, and one queued."""
    images = {}
    for short, (image_type, size, is_public, tags, properties) in CATALOG.items():
        images[short] = module_images(
            name=full_name(short),
            data=None if size is None else os.urandom(size),
            type=image_type,
            is_public=is_public,
            tags=[TAG, *tags],
            properties={**MINE, **properties},
        )
    return images


def names(response: pb.ListImagesResponse) -> list[str]:
    return [image.name.removesuffix(f"-{SUITE}") for image in response.images]


def list_all(stub: pb_grpc.ImageServiceStub, **fields: Any) -> list[pb.ListImagesResponse]:
    """Every page of a listing, following next_page_token."""
    pages = []
    request = pb.ListImagesRequest(**fields)
    while True:
        page = stub.ListImages(request)
        pages.append(page)
        if not page.next_page_token:
            return pages
        assert len(pages) < 20, "the listing never ends"
        request.page_token = page.next_page_token


# -- paging --------------------------------------------------------------------


def test_pages_cover_every_image_once(catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub) -> None:
    pages = list_all(stub, page_size=2, properties=MINE)
    assert [len(page.images) for page in pages] == [2, 2, 1]
    # Every page but the last says where to go on; the last one says nothing.
    assert all(page.next_page_token for page in pages[:-1])
    assert pages[-1].next_page_token == ""
    seen = [image.id for page in pages for image in page.images]
    assert sorted(seen) == sorted(image.id for image in catalog.values())


def test_pages_keep_the_sort_order(catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub) -> None:
    for direction, expected in (
        (pb.SORT_DIRECTION_ASCENDING, sorted(CATALOG)),
        (pb.SORT_DIRECTION_DESCENDING, sorted(CATALOG, reverse=True)),
    ):
        pages = list_all(
            stub, page_size=2, properties=MINE, sort_key=pb.SORT_KEY_NAME, sort_direction=direction
        )
        assert [name for page in pages for name in names(page)] == expected


def test_exactly_full_last_page_has_no_token(
    catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub
) -> None:
    # AIP-158: no token when nothing follows, even when the page is full (Glance itself would link to an
    # empty page).
    page = stub.ListImages(pb.ListImagesRequest(page_size=len(CATALOG), properties=MINE))
    assert len(page.images) == len(CATALOG)
    assert page.next_page_token == ""


def test_page_size_zero_is_the_default_of_25(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    name = unique_name("page-default")
    for _ in range(26):
        new_image(name=name)  # queued images: cheap
    first = stub.ListImages(pb.ListImagesRequest(name=name, page_size=0))
    assert len(first.images) == 25
    assert first.next_page_token
    second = stub.ListImages(pb.ListImagesRequest(name=name, page_token=first.next_page_token))
    assert len(second.images) == 1
    assert second.next_page_token == ""
    # Too big is clamped (to 500), not an error.
    everything = stub.ListImages(pb.ListImagesRequest(name=name, page_size=100_000))
    assert len(everything.images) == 26
    assert everything.next_page_token == ""


def test_negative_page_size_is_invalid(stub: pb_grpc.ImageServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListImages(pb.ListImagesRequest(page_size=-1))
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_SIZE")


def _b64(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!not base64!!!",
        _b64(["a", "list"]),
        _b64({"m": "not-a-uuid", "q": "0" * 16}),
        # A marker Glance would be asked about: the gateway must refuse it before sending anything.
        _b64({"m": "../../v2/images", "q": "0" * 16}),
    ],
)
def test_garbage_page_token_is_invalid(token: str, stub: pb_grpc.ImageServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListImages(pb.ListImagesRequest(page_token=token, properties=MINE))
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    "change",
    [
        {"properties": {**MINE, "color": "red"}},
        {"sort_key": pb.SORT_KEY_NAME},
        {"status": pb.IMAGE_STATUS_ACTIVE},
    ],
    ids=["filter", "sort", "status"],
)
def test_token_with_other_filters_is_invalid(
    change: dict[str, Any], catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub
) -> None:
    first = stub.ListImages(pb.ListImagesRequest(page_size=2, properties=MINE))
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListImages(
            pb.ListImagesRequest(
                **{"page_size": 2, "properties": MINE, **change}, page_token=first.next_page_token
            )
        )
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_MISMATCH")


def test_default_view_is_basic(catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub) -> None:
    page = stub.ListImages(pb.ListImagesRequest(properties=MINE))
    assert len(page.images) == len(CATALOG)
    assert all(not image.properties and not image.tags for image in page.images)


# -- filters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": full_name("alpha")}, ["alpha"]),
        ({"status": pb.IMAGE_STATUS_QUEUED}, ["delta"]),
        ({"status": pb.IMAGE_STATUS_ACTIVE}, ["alpha", "bravo", "charlie", "echo"]),
        ({"visibility": pb.VISIBILITY_PUBLIC}, ["alpha", "charlie"]),
        ({"visibility": pb.VISIBILITY_PRIVATE}, ["bravo", "delta", "echo"]),
        ({"tags": ["red"]}, ["alpha", "charlie"]),
        ({"tags": ["red", "blue"]}, ["charlie"]),
        ({"properties": {"color": "red"}}, ["alpha", "charlie"]),
        ({"properties": {"color": "green"}}, ["echo"]),
        ({"disk_format": "ami"}, ["bravo"]),
        ({"container_format": "aki"}, ["charlie"]),
        ({"disk_format": "raw", "container_format": "bare"}, ["alpha", "echo"]),
        ({"size_min": 200}, ["bravo", "charlie", "echo"]),
        ({"size_max": 200}, ["alpha", "charlie"]),
        ({"size_min": 150, "size_max": 350}, ["bravo", "charlie"]),
        # noauth Glance records no owner, so no image of ours belongs to any project.
        ({"owner": "some-project"}, []),
        ({"name": "no-such-name-" + SUITE}, []),
    ],
    ids=lambda value: json.dumps(value, sort_keys=True) if isinstance(value, dict) else None,
)
def test_filter(
    fields: dict[str, Any], expected: list[str], catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub
) -> None:
    properties = {**MINE, **fields.pop("properties", {})}
    page = stub.ListImages(
        pb.ListImagesRequest(
            properties=properties, sort_key=pb.SORT_KEY_NAME, sort_direction=pb.SORT_DIRECTION_ASCENDING,
            view=pb.IMAGE_VIEW_FULL, **fields,
        )
    )  # fmt: skip
    assert names(page) == expected
    for image in page.images:
        assert image.properties["suite"] == SUITE


def test_filter_by_tag_alone(catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub) -> None:
    page = stub.ListImages(pb.ListImagesRequest(tags=[TAG], view=pb.IMAGE_VIEW_FULL))
    assert sorted(names(page)) == sorted(CATALOG)
    assert all(TAG in image.tags for image in page.images)


# -- sort ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "direction", "expected"),
    [
        (pb.SORT_KEY_NAME, pb.SORT_DIRECTION_ASCENDING, ["alpha", "bravo", "charlie", "delta", "echo"]),
        (pb.SORT_KEY_NAME, pb.SORT_DIRECTION_DESCENDING, ["echo", "delta", "charlie", "bravo", "alpha"]),
        # The queued image has no size; sizes are compared among the active ones.
        (pb.SORT_KEY_SIZE, pb.SORT_DIRECTION_ASCENDING, ["alpha", "charlie", "bravo", "echo"]),
        (pb.SORT_KEY_SIZE, pb.SORT_DIRECTION_DESCENDING, ["echo", "bravo", "charlie", "alpha"]),
        (pb.SORT_KEY_DISK_FORMAT, pb.SORT_DIRECTION_ASCENDING, ["charlie", "bravo", "alpha", "echo"]),
    ],
    ids=["name-asc", "name-desc", "size-asc", "size-desc", "disk-format-asc"],
)
def test_sort(
    key: pb.SortKey.ValueType,
    direction: pb.SortDirection.ValueType,
    expected: list[str],
    catalog: dict[str, pb.Image],
    stub: pb_grpc.ImageServiceStub,
) -> None:
    status = pb.IMAGE_STATUS_UNSPECIFIED if key == pb.SORT_KEY_NAME else pb.IMAGE_STATUS_ACTIVE
    page = stub.ListImages(
        pb.ListImagesRequest(properties=MINE, sort_key=key, sort_direction=direction, status=status)
    )
    found = names(page)
    if key == pb.SORT_KEY_DISK_FORMAT:
        # aki < ami < raw; the two raw images may come in either order.
        assert found[:2] == expected[:2] and sorted(found[2:]) == sorted(expected[2:])
    else:
        assert found == expected


def test_default_sort_is_newest_first(catalog: dict[str, pb.Image], stub: pb_grpc.ImageServiceStub) -> None:
    page = stub.ListImages(pb.ListImagesRequest(properties=MINE, view=pb.IMAGE_VIEW_FULL))
    times = [image.create_time.ToDatetime() for image in page.images]
    assert times == sorted(times, reverse=True)


def test_filter_hidden_and_protected(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    group = {"group": unique_name("flags")}
    plain = new_image(name="plain", properties=group)
    hidden = new_image(name="hidden", properties=group, hidden=True)
    guarded = new_image(name="guarded", properties=group, protected=True)
    try:

        def listed(**flags: bool) -> set[str]:
            request = pb.ListImagesRequest(properties=group)
            for flag, value in flags.items():
                setattr(request, flag, value)
            return {image.id for image in stub.ListImages(request).images}

        # Glance leaves hidden images out unless they are asked for.
        assert listed() == {plain.id, guarded.id}
        assert listed(hidden=True) == {hidden.id}
        assert listed(hidden=False) == {plain.id, guarded.id}
        assert listed(protected=True) == {guarded.id}
        assert listed(protected=False) == {plain.id}
    finally:
        unprotect = pb.UpdateImageRequest(
            image_id=guarded.id,
            image=pb.Image(protected=False),
            update_mask=field_mask_pb2.FieldMask(paths=["protected"]),
        )
        stub.UpdateImage(unprotect)
