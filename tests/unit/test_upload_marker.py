"""The upload mark: a property only the gateway sets, that callers can neither set, filter by, nor see."""

import pytest

from gateway import convert, upload_marker, validation
from gateway.errors import GatewayError
from generated.glance.gateway.v1 import image_service_pb2 as pb


def test_the_mark_is_a_plain_custom_property_and_the_sweep_looks_at_records_without_data() -> None:
    assert upload_marker.KEY == "glance_grpc_gateway_upload"
    assert upload_marker.VALUE == "1"
    assert upload_marker.UNFINISHED_STATUSES == ("queued", "saving")


def test_validation_refuses_the_mark_as_a_property_key() -> None:
    with pytest.raises(GatewayError) as caught:
        validation.property_key(upload_marker.KEY)
    assert caught.value.reason == "INVALID_PROPERTY"
    assert "upload mark" in caught.value.message
    # Keys around it stay ordinary properties.
    for neighbour in ("glance_grpc_gateway", "glance_grpc_gateway_upload2", "GLANCE_GRPC_GATEWAY_UPLOAD"):
        assert validation.property_key(neighbour) == neighbour


def test_a_spec_cannot_set_the_mark() -> None:
    spec = pb.ImageSpec(name="n", properties={upload_marker.KEY: upload_marker.VALUE})
    with pytest.raises(GatewayError) as caught:
        convert.create_body(spec)
    assert caught.value.reason == "INVALID_PROPERTY"


def test_a_listing_cannot_filter_by_the_mark() -> None:
    request = pb.ListImagesRequest(properties={upload_marker.KEY: upload_marker.VALUE})
    with pytest.raises(GatewayError) as caught:
        convert.list_query(request)
    assert caught.value.reason == "INVALID_PROPERTY"


def test_an_update_cannot_set_the_mark() -> None:
    image = pb.Image(properties={upload_marker.KEY: "done"})
    with pytest.raises(GatewayError) as caught:
        convert.patch_operations(image, [f"properties.{upload_marker.KEY}"], {"id": "x"})
    assert caught.value.reason == "INVALID_PROPERTY"


def test_custom_properties_hide_the_mark() -> None:
    body = {"id": "x", "name": "n", "status": "queued", "os_glance_foo": "y", "owner_note": "mine"}
    body[upload_marker.KEY] = upload_marker.VALUE
    assert convert.custom_properties(body) == {"owner_note": "mine"}
    image = convert.image_to_proto(body, "http://glance.test")
    assert dict(image.properties) == {"owner_note": "mine"}


def test_replacing_all_properties_never_removes_the_mark() -> None:
    current = {"id": "x", "keep": "1", "drop": "2", upload_marker.KEY: upload_marker.VALUE}
    operations = convert.patch_operations(pb.Image(properties={"keep": "1"}), ["properties"], current)
    assert {"op": "remove", "path": "/drop"} in operations
    assert all(upload_marker.KEY not in str(operation.get("path")) for operation in operations)
