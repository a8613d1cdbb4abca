"""AddImageTag and RemoveImageTag on a real Glance: one tag at a time, beside UpdateImage's replace-all."""

from __future__ import annotations

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import GlanceServer

from .support import ImageTracker, assert_error, glance_image, new_id

# Characters a URL path must carry percent-encoded: they reach Glance as written.
AWKWARD_TAG = "b c%20?#&+;"


def _tags(stub: pb_grpc.ImageServiceStub, image_id: str) -> list[str]:
    return sorted(stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image_id)).image.tags)


def test_tags_are_added_and_removed_one_at_a_time(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, glance: GlanceServer
) -> None:
    image = new_image(tags=["kept"])
    stub.AddImageTag(pb.AddImageTagRequest(image_id=image.id, tag="a"))
    stub.AddImageTag(pb.AddImageTagRequest(image_id=image.id, tag="a"))  # already there: no error, no change
    stub.AddImageTag(pb.AddImageTagRequest(image_id=image.id, tag=AWKWARD_TAG))
    assert _tags(stub, image.id) == sorted(["kept", "a", AWKWARD_TAG])
    stored = glance_image(glance.url, image.id)
    assert stored is not None and sorted(stored["tags"]) == sorted(["kept", "a", AWKWARD_TAG])

    stub.RemoveImageTag(pb.RemoveImageTagRequest(image_id=image.id, tag=AWKWARD_TAG))
    stub.RemoveImageTag(pb.RemoveImageTagRequest(image_id=image.id, tag="a"))
    assert _tags(stub, image.id) == ["kept"]


def test_removing_a_tag_the_image_lacks_is_not_found(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    image = new_image(tags=["kept"])
    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveImageTag(pb.RemoveImageTagRequest(image_id=image.id, tag="absent"))
    assert_error(caught.value, grpc.StatusCode.NOT_FOUND, "NOT_FOUND", glance_status=404, image_id=image.id)
    assert _tags(stub, image.id) == ["kept"]


def test_tagging_a_missing_image_is_not_found(stub: pb_grpc.ImageServiceStub) -> None:
    missing = new_id()
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddImageTag(pb.AddImageTagRequest(image_id=missing, tag="a"))
    assert_error(caught.value, grpc.StatusCode.NOT_FOUND, "NOT_FOUND", glance_status=404, image_id=missing)


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("", "INVALID_TAG"),
        ("a/b", "INVALID_TAG"),
        ("é", "INVALID_TAG"),  # Glance stores a non-ASCII tag sent in the path garbled ("Ã©", measured)
        ("x" * 256, "VALUE_TOO_LONG"),
        ("a\nb", "INVALID_CHARACTERS"),
        # A dot segment: the URL would resolve to the image itself (RemoveImageTag once deleted the image).
        ("..", "INVALID_TAG"),
        (".", "INVALID_TAG"),
    ],
)
def test_bad_tags_never_reach_glance(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker, tag: str, reason: str
) -> None:
    image = new_image(tags=["kept"])
    for call in (
        lambda: stub.AddImageTag(pb.AddImageTagRequest(image_id=image.id, tag=tag)),
        lambda: stub.RemoveImageTag(pb.RemoveImageTagRequest(image_id=image.id, tag=tag)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert _tags(stub, image.id) == ["kept"]


def test_a_tag_over_glances_quota_is_resource_exhausted(
    stub: pb_grpc.ImageServiceStub, new_image: ImageTracker
) -> None:
    # The local Glance allows 128 tags per image (image_tag_quota): fill it in one create, then one more.
    image = new_image(tags=[f"t{number}" for number in range(128)])
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddImageTag(pb.AddImageTagRequest(image_id=image.id, tag="one-too-many"))
    assert_error(
        caught.value,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LIMIT_EXCEEDED",
        glance_status=413,
        image_id=image.id,
    )
    assert len(_tags(stub, image.id)) == 128
