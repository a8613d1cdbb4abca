"""Keystone unified limits through the gateway: GetQuotaUsage with numbers, and AddImage over a limit.

Project gamma (user gamma-member) has image_count_total = 2 of its own; its other quotas, like every other
project's, are Keystone's registered defaults (localglance/keystone_config.py). Uses `keystone_stub`.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from localglance import Identities
from localglance.keystone_config import PROJECT_LIMITS, QUOTA_PROJECT, REGISTERED_LIMITS

from .support import add_requests, assert_error, new_id, unique_name

C = grpc.StatusCode
GAMMA = (QUOTA_PROJECT, "member")
COUNT_LIMIT = PROJECT_LIMITS[QUOTA_PROJECT]["image_count_total"]
DATA = b"quota " * 1000


def quota_usage(stub: pb_grpc.ImageServiceStub, identities: Identities) -> dict[str, pb.QuotaUsage]:
    response = stub.GetQuotaUsage(pb.GetQuotaUsageRequest(), metadata=identities.metadata(*GAMMA), timeout=30)
    return dict(response.usage)


def image_count(stub: pb_grpc.ImageServiceStub, identities: Identities) -> int:
    return quota_usage(stub, identities)["image_count_total"].usage


def gamma_image_ids(stub: pb_grpc.ImageServiceStub, identities: Identities) -> set[str]:
    request = pb.ListImagesRequest(owner=identities.project_id(QUOTA_PROJECT), page_size=100)
    response = stub.ListImages(request, metadata=identities.metadata(*GAMMA), timeout=30)
    assert not response.next_page_token
    return {image.id for image in response.images}


@pytest.fixture
def gamma_ids(keystone_stub: pb_grpc.ImageServiceStub, identities: Identities) -> Iterator[list[str]]:
    """Ids of images `add` made as gamma-member; each is deleted as gamma-member at teardown."""
    ids: list[str] = []
    yield ids
    for image_id in ids:
        try:
            keystone_stub.DeleteImage(
                pb.DeleteImageRequest(image_id=image_id), metadata=identities.metadata(*GAMMA), timeout=30
            )
        except grpc.RpcError as err:
            assert isinstance(err, grpc.Call) and err.code() == C.NOT_FOUND, err


def add(stub: pb_grpc.ImageServiceStub, ids: list[str], identities: Identities) -> pb.Image:
    spec = pb.ImageSpec(id=new_id(), name=unique_name("quota"), type=pb.IMAGE_TYPE_RAW)
    ids.append(spec.id)
    response = stub.AddImage(add_requests(spec, [DATA]), metadata=identities.metadata(*GAMMA), timeout=60)
    image: pb.Image = response.image
    return image


def test_quota_usage_has_the_registered_and_project_limits(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities
) -> None:
    usage = quota_usage(keystone_stub, identities)
    expected = REGISTERED_LIMITS | PROJECT_LIMITS[QUOTA_PROJECT]
    assert {name: quota.limit for name, quota in usage.items()} == expected
    assert all(quota.usage >= 0 for quota in usage.values())


def test_image_count_quota_counts_and_refuses_the_image_over_the_limit(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, gamma_ids: list[str]
) -> None:
    stub, ids = keystone_stub, gamma_ids
    before = image_count(stub, identities)
    assert before < COUNT_LIMIT, "gamma's images of an earlier test were not cleaned up"
    for expected in range(before + 1, COUNT_LIMIT + 1):
        image = add(stub, ids, identities)
        assert image.status == pb.IMAGE_STATUS_ACTIVE
        assert image_count(stub, identities) == expected
    owned = gamma_image_ids(stub, identities)
    assert set(ids) <= owned

    # One more: Glance refuses the create itself (image_count_total is checked on POST /v2/images only),
    # so no record of it exists.
    with pytest.raises(grpc.RpcError) as caught:
        add(stub, ids, identities)
    refused = ids[-1]
    assert_error(caught.value, C.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", glance_status=413)
    assert isinstance(caught.value, grpc.Call)
    details = caught.value.details() or ""
    assert f"image_count_total is over limit of {COUNT_LIMIT}" in details, details
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetImageMeta(
            pb.GetImageMetaRequest(image_id=refused), metadata=identities.metadata(*GAMMA), timeout=30
        )
    assert_error(missing.value, C.NOT_FOUND, "NOT_FOUND", glance_status=404)
    assert gamma_image_ids(stub, identities) == owned
    assert image_count(stub, identities) == COUNT_LIMIT

    # The limit is on what the project holds now: after a delete one more fits again.
    stub.DeleteImage(pb.DeleteImageRequest(image_id=ids[0]), metadata=identities.metadata(*GAMMA), timeout=30)
    assert image_count(stub, identities) == COUNT_LIMIT - 1
    add(stub, ids, identities)
    assert image_count(stub, identities) == COUNT_LIMIT
