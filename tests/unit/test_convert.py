import base64

import grpc
import pytest

from gateway import convert, paging
from gateway.convert import member as member_convert
from gateway.errors import GatewayError
from generated.glance.gateway.v1 import image_service_pb2 as pb

BASE = "http://glance.example.com:9292"
ID = "7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77"

# Shaped like Glance 33's answer to GET /v2/images/<id> for an active image with two custom properties.
GLANCE_IMAGE = {
    "name": "Ubuntu 10.10 5G",
    "disk_format": "ami",
    "container_format": "ami",
    "visibility": "public",
    "size": 1000,
    "virtual_size": 1000,
    "status": "active",
    "checksum": "e78a049c",
    "protected": False,
    "min_ram": 512,
    "min_disk": 2,
    "owner": None,
    "os_hidden": False,
    "os_hash_algo": "sha512",
    "os_hash_value": "ab" * 64,
    "id": ID,
    "created_at": "2026-11-27T01:42:04Z",
    "updated_at": "2026-11-27T01:42:05Z",
    "tags": ["b", "a"],
    "self": f"/v2/images/{ID}",
    "file": f"/v2/images/{ID}/file",
    "schema": "/v2/schemas/image",
    "stores": "file,file2",
    "distro": "Ubuntu 10.10",
    "kernel_id": "k-1",
    "os_glance_importing_to_stores": "",
}


def invalid(call: object, *args: object) -> str:
    with pytest.raises(GatewayError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.reason


def test_full_view_carries_every_field() -> None:
    image = convert.image_to_proto(GLANCE_IMAGE, BASE)
    assert image.id == ID
    assert image.status == pb.IMAGE_STATUS_ACTIVE
    assert image.visibility == pb.VISIBILITY_PUBLIC
    assert (image.size, image.virtual_size) == (1000, 1000)
    assert (image.min_ram_mib, image.min_disk_gib) == (512, 2)
    assert image.os_hash_value == "ab" * 64
    assert list(image.tags) == ["a", "b"]
    assert list(image.stores) == ["file", "file2"]
    assert dict(image.properties) == {"distro": "Ubuntu 10.10", "kernel_id": "k-1"}
    assert image.owner == ""
    assert image.create_time.ToJsonString() == "2026-11-27T01:42:04Z"
    assert image.uri == f"{BASE}/v2/images/{ID}"


def test_basic_view_is_the_brief_listing() -> None:
    image = convert.image_to_proto(GLANCE_IMAGE, BASE, pb.IMAGE_VIEW_BASIC)
    assert (image.name, image.size, image.disk_format, image.checksum) == (
        "Ubuntu 10.10 5G",
        1000,
        "ami",
        "e78a049c",
    )
    assert not image.properties
    assert not image.HasField("create_time")
    assert image.visibility == pb.VISIBILITY_UNSPECIFIED
    # The classic flow takes each listed image's uri to GetImageMeta and GetImage.
    assert image.uri == f"{BASE}/v2/images/{ID}"


def test_queued_image_has_no_size() -> None:
    image = convert.image_to_proto({**GLANCE_IMAGE, "status": "queued", "size": None, "checksum": None}, BASE)
    assert not image.HasField("size")
    assert image.checksum == ""
    assert image.status == pb.IMAGE_STATUS_QUEUED


def test_unknown_status_and_bad_timestamp_do_not_fail() -> None:
    image = convert.image_to_proto(
        {**GLANCE_IMAGE, "status": "new-in-glance-99", "created_at": "yesterday"}, BASE
    )
    assert image.status == pb.IMAGE_STATUS_UNSPECIFIED
    assert not image.HasField("create_time")


def test_classic_machine_image_spec() -> None:
    spec = pb.ImageSpec(
        name="Ubuntu 10.10 5G",
        type=pb.IMAGE_TYPE_MACHINE,
        is_public="True",
        properties={"distro": "Ubuntu 10.10"},
        tags=["b", "a", "b"],
        id=ID.upper(),
    )
    assert convert.create_body(spec) == {
        "name": "Ubuntu 10.10 5G",
        "id": ID,
        "disk_format": "ami",
        "container_format": "ami",
        "visibility": "public",
        "tags": ["a", "b"],
        "distro": "Ubuntu 10.10",
    }


@pytest.mark.parametrize(
    ("image_type", "formats"),
    [
        (pb.IMAGE_TYPE_KERNEL, ("aki", "aki")),
        (pb.IMAGE_TYPE_MACHINE, ("ami", "ami")),
        (pb.IMAGE_TYPE_RAW, ("raw", "bare")),
        (pb.IMAGE_TYPE_RAMDISK, ("ari", "ari")),
    ],
)
def test_types_map_to_formats(image_type: int, formats: tuple[str, str]) -> None:
    body = convert.create_body(pb.ImageSpec(name="x", type=image_type))  # type: ignore[arg-type]
    assert (body["disk_format"], body["container_format"]) == formats


@pytest.mark.parametrize(
    ("word", "visibility"),
    [
        ("on", "public"),
        ("1", "public"),
        ("true", "public"),
        ("YES", "public"),
        ("off", "private"),
        ("0", "private"),
        ("false", "private"),
        ("", "private"),
    ],
)
def test_is_public_words(word: str, visibility: str) -> None:
    assert convert.create_body(pb.ImageSpec(name="x", is_public=word))["visibility"] == visibility


def test_is_public_nonsense_is_refused() -> None:
    assert invalid(convert.create_body, pb.ImageSpec(name="x", is_public="maybe")) == "INVALID_IS_PUBLIC"


def test_visibility_must_agree_with_is_public() -> None:
    spec = pb.ImageSpec(name="x", is_public="true", visibility=pb.VISIBILITY_PRIVATE)
    assert invalid(convert.create_body, spec) == "CONFLICTING_VISIBILITY"
    agreed = pb.ImageSpec(name="x", is_public="1", visibility=pb.VISIBILITY_PUBLIC)
    assert convert.create_body(agreed)["visibility"] == "public"
    assert convert.create_body(pb.ImageSpec(name="x", visibility=pb.VISIBILITY_COMMUNITY))["visibility"] == (
        "community"
    )


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (pb.ImageSpec(), "MISSING_NAME"),
        (pb.ImageSpec(name="x", id="nope"), "INVALID_IMAGE_ID"),
        (pb.ImageSpec(name="x", type=pb.IMAGE_TYPE_RAW, disk_format="raw"), "CONFLICTING_FORMAT"),
        (pb.ImageSpec(name="x", disk_format="RAW;drop"), "INVALID_FORMAT"),
        (pb.ImageSpec(name="x", properties={"status": "active"}), "INVALID_PROPERTY"),
        (pb.ImageSpec(name="x", min_ram_mib=-1), "INVALID_MINIMUM"),
        (pb.ImageSpec(name="x", tags=[""]), "INVALID_TAG"),
    ],
)
def test_bad_specs(spec: pb.ImageSpec, reason: str) -> None:
    assert invalid(convert.create_body, spec) == reason


def test_list_query_filters_and_sort() -> None:
    request = pb.ListImagesRequest(
        name="n",
        status=pb.IMAGE_STATUS_ACTIVE,
        visibility=pb.VISIBILITY_PUBLIC,
        owner="p1",
        tags=["t1", "t2"],
        disk_format="raw",
        container_format="bare",
        size_min=1,
        size_max=10,
        properties={"os": "linux"},
        sort_key=pb.SORT_KEY_NAME,
        sort_direction=pb.SORT_DIRECTION_ASCENDING,
    )
    assert convert.list_query(request) == [
        ("name", "n"),
        ("status", "active"),
        ("visibility", "public"),
        ("owner", "p1"),
        ("tag", "t1"),
        ("tag", "t2"),
        ("disk_format", "raw"),
        ("container_format", "bare"),
        ("size_min", "1"),
        ("size_max", "10"),
        ("os", "linux"),
        ("sort_key", "name"),
        ("sort_dir", "asc"),
    ]


def test_list_query_defaults_are_left_to_glance() -> None:
    assert convert.list_query(pb.ListImagesRequest()) == []
    only_direction = pb.ListImagesRequest(sort_direction=pb.SORT_DIRECTION_ASCENDING)
    assert convert.list_query(only_direction) == [("sort_key", "created_at"), ("sort_dir", "asc")]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (pb.ListImagesRequest(properties={"limit": "5"}), "INVALID_PROPERTY"),
        (pb.ListImagesRequest(size_min=-1), "INVALID_SIZE_FILTER"),
        (pb.ListImagesRequest(status=99), "INVALID_ENUM"),  # type: ignore[arg-type]
        (pb.ListImagesRequest(owner="a\nb"), "INVALID_FILTER"),
    ],
)
def test_bad_list_filters(request_: pb.ListImagesRequest, reason: str) -> None:
    assert invalid(convert.list_query, request_) == reason


def test_patch_for_plain_fields() -> None:
    image = pb.Image(name="new", visibility=pb.VISIBILITY_COMMUNITY, protected=True, tags=["z", "y"])
    assert convert.patch_operations(image, ["name", "visibility", "protected", "tags"], None) == [
        {"op": "replace", "path": "/name", "value": "new"},
        {"op": "replace", "path": "/visibility", "value": "community"},
        {"op": "replace", "path": "/protected", "value": True},
        {"op": "replace", "path": "/tags", "value": ["y", "z"]},
    ]


def test_patch_for_single_properties_sets_removes_and_skips_absent() -> None:
    current = {**GLANCE_IMAGE, "a/b": "1"}
    image = pb.Image(properties={"arch": "x86_64"})
    paths = ["properties.arch", "properties.distro", "properties.a/b", "properties.never_there"]
    assert convert.patch_operations(image, paths, current) == [
        {"op": "add", "path": "/arch", "value": "x86_64"},
        {"op": "remove", "path": "/distro"},
        {"op": "remove", "path": "/a~1b"},
    ]


def test_patch_replacing_all_properties() -> None:
    image = pb.Image(properties={"distro": "Debian"})
    assert convert.patch_operations(image, ["properties"], GLANCE_IMAGE) == [
        {"op": "remove", "path": "/kernel_id"},
        {"op": "add", "path": "/distro", "value": "Debian"},
    ]


@pytest.mark.parametrize(
    ("paths", "reason"),
    [
        ([], "MISSING_UPDATE_MASK"),
        (["status"], "READ_ONLY_FIELD"),
        (["size"], "READ_ONLY_FIELD"),
        (["bogus"], "UNKNOWN_FIELD"),
        (["properties.os_glance_x"], "INVALID_PROPERTY"),
    ],
)
def test_bad_masks(paths: list[str], reason: str) -> None:
    image = pb.Image(properties={"os_glance_x": "1"})
    assert invalid(convert.patch_operations, image, paths, GLANCE_IMAGE) == reason


def test_only_property_paths_need_the_current_image() -> None:
    assert not convert.patch_needs_current(["name", "tags"])
    assert convert.patch_needs_current(["properties.x"])
    assert convert.patch_needs_current(["properties"])


def test_list_query_hidden_and_protected_flags() -> None:
    assert convert.list_query(pb.ListImagesRequest(hidden=True, protected=False)) == [
        ("os_hidden", "true"),
        ("protected", "false"),
    ]


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListImagesRequest(tags=[f"t{i}" for i in range(10_000)]),
        pb.ListImagesRequest(properties={f"k{i}": "v" for i in range(10_000)}),
        pb.ListImagesRequest(properties={"k": "v" * 7000}),
        # Percent-encoding counts: 1,000 three-byte characters are 9,000 characters of query.
        pb.ListImagesRequest(properties={"k": "\u202e" * 1000}),
    ],
)
def test_list_queries_longer_than_a_request_line_are_refused(request_: pb.ListImagesRequest) -> None:
    # httpx refuses a URL over 64 KiB (an INTERNAL before), proxies in front of Glance one over 8 KiB (414).
    assert invalid(convert.list_query, request_) == "QUERY_TOO_LONG"


def test_a_list_query_just_under_the_limit_passes() -> None:
    assert convert.list_query(pb.ListImagesRequest(properties={"k": "v" * 6000}))


def test_long_page_tokens_are_refused_before_decoding() -> None:
    # Base64 of a deeply nested JSON array: json.loads would hit the recursion limit (an INTERNAL before).
    nested = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    assert invalid(convert.list_query, pb.ListImagesRequest(page_token=nested)) == "INVALID_PAGE_TOKEN"


def test_a_junk_mask_path_is_quoted_short() -> None:
    with pytest.raises(GatewayError) as caught:
        convert.patch_operations(pb.Image(), ["x" * 3_000_000], None)
    # The message and ErrorInfo go into the trailers; a client refuses those beyond 8-16 KiB.
    assert caught.value.reason == "UNKNOWN_FIELD"
    assert len(caught.value.message) < 200 and len(caught.value.metadata["field"]) <= 64


# -- image members ---------------------------------------------------------------------------------------


# Glance 33's answer to POST /v2/images/<id>/members, as measured.
GLANCE_MEMBER = {
    "member_id": "0c8a5b4ff1e94e4c9a1d6f3a2b7e8d90",
    "image_id": ID,
    "status": "accepted",
    "created_at": "2026-11-28T21:43:11Z",
    "updated_at": "2026-11-28T21:43:17Z",
    "schema": "/v2/schemas/member",
}


def test_a_member_carries_every_field() -> None:
    member = member_convert.member_to_proto(GLANCE_MEMBER)
    assert member.image_id == ID and member.member_id == GLANCE_MEMBER["member_id"]
    assert member.status == pb.MEMBER_STATUS_ACCEPTED
    assert member.create_time.ToJsonString() == "2026-11-28T21:43:11Z"
    assert member.update_time.ToJsonString() == "2026-11-28T21:43:17Z"


def test_a_member_glance_describes_oddly_does_not_fail() -> None:
    # Glance echoes a member id as it was given (another client may have sent a number).
    odd = {"member_id": 5, "image_id": ID, "status": "unheard-of", "created_at": "yesterday"}
    member = member_convert.member_to_proto(odd)
    assert (member.member_id, member.status) == ("5", pb.MEMBER_STATUS_UNSPECIFIED)
    assert not member.HasField("create_time") and not member.HasField("update_time")


def test_a_member_listing_skips_what_is_not_a_member() -> None:
    listing = {"members": [GLANCE_MEMBER, "junk"], "schema": "/v2/schemas/members"}
    assert [m.image_id for m in member_convert.members_to_proto(listing)] == [ID]
    assert member_convert.members_to_proto({"members": None}) == []


@pytest.mark.parametrize(
    ("status", "word"),
    [
        (pb.MEMBER_STATUS_PENDING, "pending"),
        (pb.MEMBER_STATUS_ACCEPTED, "accepted"),
        (pb.MEMBER_STATUS_REJECTED, "rejected"),
    ],
)
def test_member_statuses_go_both_ways(status: pb.MemberStatus.ValueType, word: str) -> None:
    assert member_convert.status_body(status) == {"status": word}
    assert member_convert.member_to_proto({"status": word}).status == status


def test_a_member_status_must_be_given_and_known() -> None:
    assert invalid(member_convert.status_body, pb.MEMBER_STATUS_UNSPECIFIED) == "MISSING_MEMBER_STATUS"
    assert invalid(member_convert.status_body, 9) == "INVALID_ENUM"


@pytest.mark.parametrize(
    ("status_filter", "word"),
    [
        (pb.MEMBER_STATUS_FILTER_PENDING, "pending"),
        (pb.MEMBER_STATUS_FILTER_ACCEPTED, "accepted"),
        (pb.MEMBER_STATUS_FILTER_REJECTED, "rejected"),
        (pb.MEMBER_STATUS_FILTER_ALL, "all"),
    ],
)
def test_list_query_member_status(status_filter: pb.MemberStatusFilter.ValueType, word: str) -> None:
    request = pb.ListImagesRequest(visibility=pb.VISIBILITY_SHARED, member_status=status_filter)
    assert convert.list_query(request) == [("visibility", "shared"), ("member_status", word)]


def test_list_query_leaves_the_member_status_to_glance_when_unset() -> None:
    assert "member_status" not in dict(convert.list_query(pb.ListImagesRequest(name="n")))


def test_an_unknown_member_status_filter_is_refused() -> None:
    request = pb.ListImagesRequest(member_status=9)  # type: ignore[arg-type]
    assert invalid(convert.list_query, request) == "INVALID_ENUM"


def test_a_page_token_is_bound_to_its_member_status() -> None:
    pending = convert.list_query(pb.ListImagesRequest(member_status=pb.MEMBER_STATUS_FILTER_PENDING))
    token = paging.encode_token(ID, pending)
    assert paging.decode_token(token, pending) == ID
    for other in (pb.MEMBER_STATUS_FILTER_UNSPECIFIED, pb.MEMBER_STATUS_FILTER_ALL):
        query = convert.list_query(pb.ListImagesRequest(member_status=other))
        assert invalid(paging.decode_token, token, query) == "PAGE_TOKEN_MISMATCH"
