"""The classic metadata dicts ↔ the gateway's messages (gateway/client/meta.py, ops.py)."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from gateway.client import meta, ops
from generated.glance.gateway.v1 import image_service_pb2 as pb

# The seed document's complete add_image example.
SEED_META = {
    "name": "Ubuntu 10.10 5G",
    "type": "machine",
    "is_public": True,
    "properties": {"distro": "Ubuntu 10.10"},
}


def test_seed_example_meta_becomes_an_image_spec() -> None:
    spec = meta.image_spec(SEED_META, ends_with_finish=True)
    assert (spec.name, spec.type, spec.is_public) == ("Ubuntu 10.10 5G", pb.IMAGE_TYPE_MACHINE, "true")
    assert dict(spec.properties) == {"distro": "Ubuntu 10.10"}
    assert spec.ends_with_finish and list(spec.finish_digests) == [pb.DIGEST_ALGORITHM_SHA512]


def test_every_add_image_key() -> None:
    spec = meta.image_spec(
        {
            "id": "i",
            "name": "n",
            "store": "file",
            "size": 3,
            "is_public": "on",  # classic strings go to the gateway as given, for it to judge
            "disk_format": "qcow2",
            "container_format": "bare",
            "visibility": "shared",
            "tags": ["a", "b"],
            "min_ram": 512,
            "min_disk": 2,
            "protected": True,
            "hidden": False,
            "checksum": "md5hex",
        },
        ends_with_finish=False,
    )
    assert (spec.id, spec.store, spec.size, spec.is_public) == ("i", "file", 3, "on")
    assert (spec.disk_format, spec.container_format, spec.visibility) == (
        "qcow2",
        "bare",
        pb.VISIBILITY_SHARED,
    )
    assert (list(spec.tags), spec.min_ram_mib, spec.min_disk_gib, spec.protected) == (
        ["a", "b"],
        512,
        2,
        True,
    )
    assert spec.expected_md5 == "md5hex"
    assert not spec.ends_with_finish and not spec.finish_digests
    assert meta.image_spec({"name": "n", "is_public": False}, ends_with_finish=False).is_public == "false"


def test_bad_add_image_metadata_fails_before_any_call() -> None:
    with pytest.raises(ValueError, match="location"):
        meta.image_spec({"name": "n", "location": "http://x"}, ends_with_finish=False)
    with pytest.raises(ValueError, match="kernel, machine, raw, ramdisk"):
        meta.image_spec({"name": "n", "type": "floppy"}, ends_with_finish=False)


def test_update_mask_names_exactly_the_keys_given() -> None:
    request = meta.update_request(
        "img", {"name": "new", "is_public": True, "min_ram": 64, "properties": {"distro": "x", "gone": None}}
    )
    assert request.image_id == "img"
    assert list(request.update_mask.paths) == [
        "name",
        "visibility",
        "min_ram_mib",
        "properties.distro",
        "properties.gone",
    ]
    # A property named in the mask but absent from the image is removed.
    assert dict(request.image.properties) == {"distro": "x"}
    assert request.image.visibility == pb.VISIBILITY_PUBLIC
    typed = meta.update_request("img", {"type": "kernel", "is_public": "off"})
    assert (typed.image.disk_format, typed.image.container_format) == ("aki", "aki")
    assert typed.image.visibility == pb.VISIBILITY_PRIVATE
    with pytest.raises(ValueError, match="checksum"):
        meta.update_request("img", {"checksum": "x"})
    with pytest.raises(ValueError, match="is_public"):
        meta.update_request("img", {"is_public": "maybe"})


def test_image_to_dict_brief_and_full() -> None:
    image = pb.Image(
        id="i",
        name="n",
        status=pb.IMAGE_STATUS_ACTIVE,
        visibility=pb.VISIBILITY_PUBLIC,
        size=10,
        disk_format="raw",
        container_format="bare",
        checksum="c",
        uri="http://glance/v2/images/i",
        min_ram_mib=128,
        tags=["b", "a"],
        properties={"distro": "Ubuntu"},
        create_time=timestamp_pb2.Timestamp(seconds=0),
    )
    brief = meta.image_to_dict(image, brief=True)
    assert tuple(brief) == meta.BRIEF_KEYS
    assert (brief["status"], brief["size"], brief["uri"]) == ("active", 10, "http://glance/v2/images/i")
    full = meta.image_to_dict(image)
    assert (full["visibility"], full["is_public"], full["min_ram"]) == ("public", True, 128)
    assert (full["tags"], full["properties"]) == (["a", "b"], {"distro": "Ubuntu"})
    assert (full["created_at"], full["updated_at"], full["virtual_size"]) == (
        "1970-01-01T00:00:00Z",
        None,
        None,
    )
    assert meta.image_to_dict(pb.Image(id="q"))["size"] is None  # no data yet: no size, not 0


def test_list_filters() -> None:
    request = ops.list_request(
        {
            "name": "n",
            "status": "active",
            "visibility": "community",
            "tags": "one",
            "size_min": 1,
            "size_max": 9,
            "properties": {"distro": "Ubuntu"},
            "sort_key": "created_at",
            "sort_dir": "asc",
            "member_status": "all",
            "hidden": True,
            "page_size": 7,
        },
        detailed=True,
    )
    assert request.view == pb.IMAGE_VIEW_FULL
    assert (request.name, request.status, request.visibility) == (
        "n",
        pb.IMAGE_STATUS_ACTIVE,
        pb.VISIBILITY_COMMUNITY,
    )
    assert (list(request.tags), request.size_min, request.size_max) == (["one"], 1, 9)
    assert dict(request.properties) == {"distro": "Ubuntu"}
    assert (request.sort_key, request.sort_direction) == (
        pb.SORT_KEY_CREATE_TIME,
        pb.SORT_DIRECTION_ASCENDING,
    )
    assert (request.member_status, request.hidden, request.page_size) == (
        pb.MEMBER_STATUS_FILTER_ALL,
        True,
        7,
    )
    assert ops.list_request({"is_public": True}, detailed=False).visibility == pb.VISIBILITY_PUBLIC
    with pytest.raises(TypeError, match="colour"):
        ops.list_request({"colour": "red"}, detailed=False)


def test_other_requests() -> None:
    assert ops.get_image_meta("http://glance/v2/images/i").request == pb.GetImageMetaRequest(
        image_uri="http://glance/v2/images/i"
    )
    assert ops.get_image_meta("i").request == pb.GetImageMetaRequest(image_id="i")
    op = ops.import_image("i", "web-download", uri="http://x/img", all_stores_must_succeed=False)
    assert op.rpc == "ImportImage"
    assert op.request == pb.ImportImageRequest(
        image_id="i", method=pb.IMPORT_METHOD_WEB_DOWNLOAD, uri="http://x/img", all_stores_must_succeed=False
    )
    member = ops.update_member("i", "p", "accepted").request
    assert member == pb.UpdateImageMemberRequest(
        image_id="i", member_id="p", status=pb.MEMBER_STATUS_ACCEPTED
    )
    quota = pb.GetQuotaUsageResponse(usage={"image_count_total": pb.QuotaUsage(usage=1, limit=-1)})
    assert ops.get_quota_usage().convert(quota) == {"image_count_total": {"usage": 1, "limit": -1}}
