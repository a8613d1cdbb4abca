"""The seed client doc's walkthrough (seed-glance-client.rst), over gRPC against a real Glance."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from google.protobuf import field_mask_pb2

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import ImageTracker, assert_error, download, glance_image, unique_name

# ~1.5 MiB: more than one default (1 MiB) download chunk, and not a multiple of it.
DATA = os.urandom(3 * 512 * 1024 + 123)


@pytest.fixture(scope="module")
def machine_image(module_images: ImageTracker) -> pb.Image:
    """The seed's add_image example: a public machine image with a distro property, and its data."""
    return module_images(
        name=unique_name("Ubuntu 10.10 5G"),
        data=DATA,
        type=pb.IMAGE_TYPE_MACHINE,
        is_public="true",
        properties={"distro": "Ubuntu 10.10"},
    )


def test_add_machine_image(machine_image: pb.Image, glance: GlanceServer) -> None:
    assert machine_image.status == pb.IMAGE_STATUS_ACTIVE
    assert machine_image.size == len(DATA)
    # type MACHINE is the ami/ami format pair; is_public "true" makes it public.
    assert (machine_image.disk_format, machine_image.container_format) == ("ami", "ami")
    assert machine_image.visibility == pb.VISIBILITY_PUBLIC
    assert machine_image.properties["distro"] == "Ubuntu 10.10"
    assert machine_image.os_hash_algo == "sha512"
    assert machine_image.os_hash_value == hashlib.sha512(DATA).hexdigest()
    assert machine_image.checksum == hashlib.md5(DATA).hexdigest()
    assert machine_image.uri == f"{glance.url}/v2/images/{machine_image.id}"


def test_list_basic_and_full(machine_image: pb.Image, stub: pb_grpc.ImageServiceStub) -> None:
    # get_images (brief) and get_images_detailed are one RPC with a view.
    basic = stub.ListImages(pb.ListImagesRequest(name=machine_image.name, view=pb.IMAGE_VIEW_BASIC))
    full = stub.ListImages(pb.ListImagesRequest(name=machine_image.name, view=pb.IMAGE_VIEW_FULL))
    assert [image.id for image in basic.images] == [machine_image.id]
    assert [image.id for image in full.images] == [machine_image.id]
    brief, detailed = basic.images[0], full.images[0]

    # BASIC: id, name, status, size, formats, checksum, uri.
    assert (brief.name, brief.status, brief.size) == (machine_image.name, pb.IMAGE_STATUS_ACTIVE, len(DATA))
    assert (brief.disk_format, brief.container_format) == ("ami", "ami")
    assert brief.checksum == machine_image.checksum
    # ... and nothing of the FULL-only fields.
    assert not brief.properties
    assert brief.visibility == pb.VISIBILITY_UNSPECIFIED
    assert not brief.os_hash_value
    assert not brief.HasField("create_time")
    # The seed's flow: the brief listing's uri is what get_image_meta and get_image take.
    assert brief.uri == machine_image.uri
    by_uri = stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=brief.uri)).image
    assert by_uri.id == machine_image.id

    assert detailed.properties["distro"] == "Ubuntu 10.10"
    assert detailed.visibility == pb.VISIBILITY_PUBLIC
    assert detailed.os_hash_value == machine_image.os_hash_value
    assert detailed.uri == machine_image.uri
    assert detailed.HasField("create_time")
    assert not basic.next_page_token and not full.next_page_token


@pytest.mark.parametrize("path", ["images", "v2/images"])
def test_get_meta_by_id_and_uri(
    path: str, machine_image: pb.Image, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    by_id = stub.GetImageMeta(pb.GetImageMetaRequest(image_id=machine_image.id)).image
    # The seed's get_image_meta("http://glance.example.com/images/1"), and the v2 form of the URI.
    uri = f"{glance.url}/{path}/{machine_image.id}"
    by_uri = stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=uri)).image
    assert by_id == by_uri
    assert by_id.id == machine_image.id
    assert by_id.properties["distro"] == "Ubuntu 10.10"
    assert by_id.status == pb.IMAGE_STATUS_ACTIVE


def test_download_matches_upload(machine_image: pb.Image, stub: pb_grpc.ImageServiceStub) -> None:
    header, data = download(stub, pb.GetImageRequest(image_id=machine_image.id))
    # The header describes the whole image, and says the data is verified against its hash as it streams.
    assert header.image.id == machine_image.id
    assert (header.offset, header.length, header.verified) == (0, len(DATA), True)
    assert hashlib.sha512(data).hexdigest() == hashlib.sha512(DATA).hexdigest()
    assert hashlib.sha512(data).hexdigest() == header.image.os_hash_value


def test_download_by_uri(machine_image: pb.Image, stub: pb_grpc.ImageServiceStub) -> None:
    # The seed's get_image(uri): the image's own uri field is accepted back.
    header, data = download(stub, pb.GetImageRequest(image_uri=machine_image.uri))
    assert header.image.id == machine_image.id
    assert data == DATA


def test_partial_read(machine_image: pb.Image, stub: pb_grpc.ImageServiceStub) -> None:
    # offset/limit become an HTTP Range request; a partial read is not hash-verified.
    header, data = download(stub, pb.GetImageRequest(image_id=machine_image.id, offset=1000, limit=5000))
    assert (header.offset, header.length, header.verified) == (1000, 5000, False)
    assert data == DATA[1000:6000]
    # offset only: the rest of the image.
    header, data = download(stub, pb.GetImageRequest(image_id=machine_image.id, offset=len(DATA) - 10))
    assert (header.length, data) == (10, DATA[-10:])


def test_reserve_queued_image(new_image: ImageTracker, stub: pb_grpc.ImageServiceStub) -> None:
    # The seed's add_image(meta) without image_data reserves a slot: a queued image with no size.
    image = new_image(name=unique_name("reserved"), type=pb.IMAGE_TYPE_MACHINE)
    assert image.status == pb.IMAGE_STATUS_QUEUED
    assert not image.HasField("size")
    assert not image.checksum and not image.os_hash_value
    assert stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id)).image.status == pb.IMAGE_STATUS_QUEUED

    # There is nothing to download yet.
    with pytest.raises(grpc.RpcError) as caught:
        download(stub, pb.GetImageRequest(image_id=image.id))
    assert_error(caught.value, grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_HAS_NO_DATA", image_id=image.id)


def test_update_metadata(
    new_image: ImageTracker, stub: pb_grpc.ImageServiceStub, glance: GlanceServer
) -> None:
    # The seed's "change metadata about an image": a field mask becomes a JSON patch.
    image = new_image(name=unique_name("update"), properties={"a": "1", "b": "2"}, tags=["x"])
    new_name = unique_name("updated")
    request = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(name=new_name, properties={"a": "10", "c": "3"}, tags=["z", "y"], min_ram_mib=512),
        update_mask=field_mask_pb2.FieldMask(
            # properties.b is named but absent from image.properties: it is removed.
            paths=["name", "properties.a", "properties.b", "properties.c", "tags", "min_ram_mib"]
        ),
    )
    updated = stub.UpdateImage(request).image
    assert updated.name == new_name
    assert dict(updated.properties) == {"a": "10", "c": "3"}
    assert list(updated.tags) == ["y", "z"]
    assert updated.min_ram_mib == 512
    # Glance itself has it so.
    stored = glance_image(glance.url, image.id)
    assert stored is not None
    assert (stored["name"], stored["a"], stored["c"], stored["min_ram"]) == (new_name, "10", "3", 512)
    assert "b" not in stored and sorted(stored["tags"]) == ["y", "z"]

    # "properties" replaces the whole set of custom properties.
    replace_all = pb.UpdateImageRequest(
        image_id=image.id,
        image=pb.Image(properties={"only": "one"}),
        update_mask=field_mask_pb2.FieldMask(paths=["properties"]),
    )
    assert dict(stub.UpdateImage(replace_all).image.properties) == {"only": "one"}
