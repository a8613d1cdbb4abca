"""Request building and response conversion shared by Client and AsyncClient.

Each unary method is an `Op`: the RPC's name, its request, and how to turn the response into the value the
method returns. The two clients differ only in how they run it (blocking or awaited).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from generated.glance.gateway.v1 import image_service_pb2 as pb

from .meta import ImageMeta, enum_in, enum_out, image_spec, image_to_dict, update_request

R = TypeVar("R")


@dataclass(frozen=True)
class Op(Generic[R]):
    """One unary call: `rpc` names the ImageService method; `convert` maps its response to the result."""

    rpc: str
    request: Message
    convert: Callable[[Any], R]


def _none(_: Any) -> None:
    return None


def _image(response: Any) -> ImageMeta:
    return image_to_dict(response.image)


def is_uri(image_id_or_uri: str) -> bool:
    return "://" in image_id_or_uri


def member_to_dict(member: pb.ImageMember) -> dict[str, Any]:
    return {
        "image_id": member.image_id,
        "member_id": member.member_id,
        "status": enum_out(pb.MemberStatus, "MEMBER_STATUS_", member.status),
        "created_at": member.create_time.ToJsonString() if member.HasField("create_time") else None,
        "updated_at": member.update_time.ToJsonString() if member.HasField("update_time") else None,
    }


def _member(response: Any) -> dict[str, Any]:
    return member_to_dict(response.member)


def _stores(response: pb.ListStoresResponse) -> list[dict[str, Any]]:
    return [
        {"id": s.id, "description": s.description, "is_default": s.is_default, "read_only": s.read_only}
        for s in response.stores
    ]


def _quota(response: pb.GetQuotaUsageResponse) -> dict[str, dict[str, int]]:
    return {name: {"usage": q.usage, "limit": q.limit} for name, q in response.usage.items()}


# -- listing --

_SIMPLE_FILTERS = ("name", "owner", "disk_format", "container_format")


def list_request(filters: Mapping[str, Any], *, detailed: bool) -> pb.ListImagesRequest:
    """get_images / get_images_detailed filters → ListImagesRequest (see Client.get_images)."""
    request = pb.ListImagesRequest(view=pb.IMAGE_VIEW_FULL if detailed else pb.IMAGE_VIEW_BASIC)
    for key, value in filters.items():
        if value is None:
            continue
        if key in _SIMPLE_FILTERS:
            setattr(request, key, value)
        elif key == "status":
            request.status = enum_in(pb.ImageStatus, "IMAGE_STATUS_", value)
        elif key == "visibility":
            request.visibility = enum_in(pb.Visibility, "VISIBILITY_", value)
        elif key == "is_public":
            # The classic filter: is_public=True lists public images, False private ones.
            request.visibility = pb.VISIBILITY_PUBLIC if value else pb.VISIBILITY_PRIVATE
        elif key == "tags":
            request.tags.extend([value] if isinstance(value, str) else value)
        elif key in ("size_min", "size_max", "page_size"):
            setattr(request, key, int(value))
        elif key in ("hidden", "protected"):
            setattr(request, key, bool(value))
        elif key == "properties":
            request.properties.update({str(k): str(v) for k, v in value.items()})
        elif key == "sort_key":
            key_name = {"created_at": "create_time", "updated_at": "update_time"}.get(value, value)
            request.sort_key = enum_in(pb.SortKey, "SORT_KEY_", key_name)
        elif key == "sort_dir":
            direction = {"asc": "ascending", "desc": "descending"}.get(value, value)
            request.sort_direction = enum_in(pb.SortDirection, "SORT_DIRECTION_", direction)
        elif key == "member_status":
            request.member_status = enum_in(pb.MemberStatusFilter, "MEMBER_STATUS_FILTER_", value)
        else:
            raise TypeError(f"unknown image filter {key!r}")
    return request


def _page(response: pb.ListImagesResponse) -> pb.ListImagesResponse:
    return response


def list_page(request: pb.ListImagesRequest) -> Op[pb.ListImagesResponse]:
    """One page; the clients loop over next_page_token."""
    return Op("ListImages", request, _page)


def page_images(response: pb.ListImagesResponse, detailed: bool) -> list[ImageMeta]:
    return [image_to_dict(image, brief=not detailed) for image in response.images]


# -- unary operations --


def get_image_meta(image_id_or_uri: str) -> Op[ImageMeta]:
    if is_uri(image_id_or_uri):
        request = pb.GetImageMetaRequest(image_uri=image_id_or_uri)
    else:
        request = pb.GetImageMetaRequest(image_id=image_id_or_uri)
    return Op("GetImageMeta", request, _image)


def add_queued_image(image_meta: Mapping[str, Any]) -> pb.AddImageRequest:
    """The whole request stream of an add_image without data: just the spec (a "queued" image)."""
    return pb.AddImageRequest(spec=image_spec(image_meta, ends_with_finish=False))


def update_image(image_id: str, image_meta: Mapping[str, Any]) -> Op[ImageMeta]:
    return Op("UpdateImage", update_request(image_id, image_meta), _image)


def delete_image(image_id: str) -> Op[None]:
    return Op("DeleteImage", pb.DeleteImageRequest(image_id=image_id), _none)


def add_tag(image_id: str, tag: str) -> Op[None]:
    return Op("AddImageTag", pb.AddImageTagRequest(image_id=image_id, tag=tag), _none)


def remove_tag(image_id: str, tag: str) -> Op[None]:
    return Op("RemoveImageTag", pb.RemoveImageTagRequest(image_id=image_id, tag=tag), _none)


def add_member(image_id: str, member_id: str) -> Op[dict[str, Any]]:
    return Op(
        "CreateImageMember", pb.CreateImageMemberRequest(image_id=image_id, member_id=member_id), _member
    )


def get_members(image_id: str) -> Op[list[dict[str, Any]]]:
    def convert(response: pb.ListImageMembersResponse) -> list[dict[str, Any]]:
        return [member_to_dict(m) for m in response.members]

    return Op("ListImageMembers", pb.ListImageMembersRequest(image_id=image_id), convert)


def get_member(image_id: str, member_id: str) -> Op[dict[str, Any]]:
    return Op("GetImageMember", pb.GetImageMemberRequest(image_id=image_id, member_id=member_id), _member)


def update_member(image_id: str, member_id: str, status: str) -> Op[dict[str, Any]]:
    request = pb.UpdateImageMemberRequest(
        image_id=image_id,
        member_id=member_id,
        status=enum_in(pb.MemberStatus, "MEMBER_STATUS_", status),
    )
    return Op("UpdateImageMember", request, _member)


def delete_member(image_id: str, member_id: str) -> Op[None]:
    return Op("DeleteImageMember", pb.DeleteImageMemberRequest(image_id=image_id, member_id=member_id), _none)


def get_stores() -> Op[list[dict[str, Any]]]:
    return Op("ListStores", pb.ListStoresRequest(), _stores)


def delete_image_from_store(image_id: str, store_id: str) -> Op[None]:
    request = pb.DeleteImageFromStoreRequest(image_id=image_id, store_id=store_id)
    return Op("DeleteImageFromStore", request, _none)


def import_image(
    image_id: str,
    method: str = "glance-direct",
    *,
    uri: str = "",
    stores: list[str] | None = None,
    all_stores: bool = False,
    all_stores_must_succeed: bool | None = None,
) -> Op[None]:
    request = pb.ImportImageRequest(
        image_id=image_id,
        method=enum_in(pb.ImportMethod, "IMPORT_METHOD_", method),
        uri=uri,
        stores=stores or [],
        all_stores=all_stores,
    )
    if all_stores_must_succeed is not None:
        request.all_stores_must_succeed = all_stores_must_succeed
    return Op("ImportImage", request, _none)


def watch_import_request(image_id: str) -> pb.WatchImageImportRequest:
    return pb.WatchImageImportRequest(image_id=image_id)


def import_progress(response: pb.WatchImageImportResponse) -> dict[str, Any]:
    """One WatchImageImport message: the image, the state ("in_progress", "succeeded", "failed" or "")."""
    return {
        "image": image_to_dict(response.image),
        "state": enum_out(pb.ImportState, "IMPORT_STATE_", response.state),
        "importing_to_stores": list(response.importing_to_stores),
        "failed_stores": list(response.failed_stores),
    }


def deactivate_image(image_id: str) -> Op[None]:
    return Op("DeactivateImage", pb.DeactivateImageRequest(image_id=image_id), _none)


def reactivate_image(image_id: str) -> Op[None]:
    return Op("ReactivateImage", pb.ReactivateImageRequest(image_id=image_id), _none)


def get_quota_usage() -> Op[dict[str, dict[str, int]]]:
    return Op("GetQuotaUsage", pb.GetQuotaUsageRequest(), _quota)
