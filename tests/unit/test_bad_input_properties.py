"""Property tests: whatever a client sends, input checks either accept it or refuse it with INVALID_ARGUMENT.

Never another exception, which would surface as INTERNAL (or worse) instead of a clear status.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import convert, paging, validation
from gateway.errors import GatewayError
from generated.glance.gateway.v1 import image_service_pb2 as pb

GLANCE = "http://glance.example.com:9292"
text = st.text(max_size=300)
enums = st.integers(min_value=-3, max_value=20)
properties = st.dictionaries(text, text, max_size=5)


def accepted_or_invalid(call: Callable[[], object]) -> None:
    try:
        call()
    except GatewayError as error:
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.reason and error.message


specs = st.builds(
    pb.ImageSpec,
    name=text, id=text, store=text, type=enums, disk_format=text, container_format=text, is_public=text,
    visibility=enums, properties=properties, tags=st.lists(text, max_size=4), min_ram_mib=st.integers(-5, 5),
    min_disk_gib=st.integers(-5, 5), expected_sha512=text, expected_md5=text,
)  # fmt: skip
list_requests = st.builds(
    pb.ListImagesRequest,
    page_size=st.integers(-(2**31), 2**31 - 1), page_token=text, view=enums, name=text, status=enums,
    visibility=enums, owner=text, tags=st.lists(text, max_size=3), disk_format=text, container_format=text,
    size_min=st.integers(-(2**63), 2**63 - 1), properties=properties, sort_key=enums, sort_direction=enums,
)  # fmt: skip
paths = st.lists(
    st.one_of(
        st.sampled_from(["name", "visibility", "tags", "properties", "min_ram_mib", "status", "uri"]),
        text.map(lambda key: f"properties.{key}"),
        text,
    ),
    max_size=4,
)
images = st.builds(
    pb.Image, name=text, visibility=enums, tags=st.lists(text, max_size=3), properties=properties,
    min_ram_mib=st.integers(-5, 5), disk_format=text,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(specs)
def test_any_image_spec(spec: pb.ImageSpec) -> None:
    accepted_or_invalid(lambda: convert.create_body(spec))
    accepted_or_invalid(lambda: validation.store_name(spec.store))


@settings(max_examples=300, deadline=None)
@given(list_requests)
def test_any_list_request(request: pb.ListImagesRequest) -> None:
    def run() -> None:
        paging.page_size(request.page_size)
        paging.decode_token(request.page_token, convert.list_query(request))

    accepted_or_invalid(run)


@settings(max_examples=300, deadline=None)
@given(images, paths, properties)
def test_any_update(image: pb.Image, mask: list[str], current: dict[str, str]) -> None:
    accepted_or_invalid(lambda: convert.patch_operations(image, mask, {"id": "x", **current}))


@settings(max_examples=300, deadline=None)
@given(st.one_of(text, st.builds(lambda p: f"{GLANCE}/{p}", text), st.builds(lambda p: f"http://{p}", text)))
def test_any_image_reference(value: str) -> None:
    accepted_or_invalid(lambda: validation.image_id(value))
    accepted_or_invalid(lambda: validation.image_id_from_uri(value, GLANCE))
    accepted_or_invalid(lambda: validation.request_id(value))
    accepted_or_invalid(lambda: validation.auth_token(value))
