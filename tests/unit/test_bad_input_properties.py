"""Property tests: whatever a client sends, input checks either accept it or refuse it with INVALID_ARGUMENT.

Never another exception, which would surface as INTERNAL (or worse) instead of a clear status.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import convert, paging, validation
from gateway.errors import GatewayError
from generated.glance.gateway.v1 import image_service_pb2 as pb

GLANCE = "http://glance.example.com:9292"
# Any text, with the characters that matter most here made likely: controls, path tricks, bidi and zero-width
# characters, astral ones.
text = st.text(max_size=300) | st.lists(
    st.sampled_from(
        ["\x00", "\r", "\n", "\x7f", "\x85", "../", "%2e%2e/", "~1", "\u202e", "\u200b", "\U0001f600", "k"]
    ),
    max_size=40,
).map("".join)
enums = st.integers(min_value=-3, max_value=20)
# Huge values too, around Glance's 64 KiB property limit, in one-, three- and four-byte characters.
huge = st.builds(
    lambda n, char: char * n, st.integers(10_000, 70_000), st.sampled_from(["v", "\u20ac", "\U0001f600"])
)
properties = st.dictionaries(text, text, max_size=5) | st.dictionaries(text, huge, max_size=2)


def accepted_or_invalid(call: Callable[[], object]) -> object:
    try:
        return call()
    except GatewayError as error:
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.reason and error.message
        # Message and ErrorInfo travel in the trailers, which clients refuse past 8-16 KiB: echoes stay short.
        assert len(error.message) <= 1024, error.message[:200]
        assert all(len(value) <= 256 for value in error.metadata.values())
        return None


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
        query = convert.list_query(request)
        # What goes to Glance fits a request line.
        assert len(urlencode(query)) <= validation.MAX_LIST_QUERY
        paging.decode_token(request.page_token, query)

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
