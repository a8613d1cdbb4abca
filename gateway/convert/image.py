"""Glance's image JSON to the Image message and back (the create body), and the enum tables both use."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from gateway import upload_marker, validation
from gateway.errors import invalid_argument
from generated.glance.gateway.v1 import image_service_pb2 as pb

JsonObject = dict[str, Any]

STATUS_FROM_GLANCE: dict[str, pb.ImageStatus.ValueType] = {
    "queued": pb.IMAGE_STATUS_QUEUED,
    "saving": pb.IMAGE_STATUS_SAVING,
    "active": pb.IMAGE_STATUS_ACTIVE,
    "killed": pb.IMAGE_STATUS_KILLED,
    "deleted": pb.IMAGE_STATUS_DELETED,
    "pending_delete": pb.IMAGE_STATUS_PENDING_DELETE,
    "deactivated": pb.IMAGE_STATUS_DEACTIVATED,
    "uploading": pb.IMAGE_STATUS_UPLOADING,
    "importing": pb.IMAGE_STATUS_IMPORTING,
}
STATUS_TO_GLANCE = {value: key for key, value in STATUS_FROM_GLANCE.items()}

VISIBILITY_FROM_GLANCE: dict[str, pb.Visibility.ValueType] = {
    "public": pb.VISIBILITY_PUBLIC,
    "private": pb.VISIBILITY_PRIVATE,
    "shared": pb.VISIBILITY_SHARED,
    "community": pb.VISIBILITY_COMMUNITY,
}
VISIBILITY_TO_GLANCE = {value: key for key, value in VISIBILITY_FROM_GLANCE.items()}

# The classic image types, as Glance v2 disk/container format pairs.
TYPE_FORMATS: dict[pb.ImageType.ValueType, tuple[str, str]] = {
    pb.IMAGE_TYPE_KERNEL: ("aki", "aki"),
    pb.IMAGE_TYPE_MACHINE: ("ami", "ami"),
    pb.IMAGE_TYPE_RAW: ("raw", "bare"),
    pb.IMAGE_TYPE_RAMDISK: ("ari", "ari"),
}

SORT_KEYS: dict[pb.SortKey.ValueType, str] = {
    pb.SORT_KEY_NAME: "name",
    pb.SORT_KEY_STATUS: "status",
    pb.SORT_KEY_CONTAINER_FORMAT: "container_format",
    pb.SORT_KEY_DISK_FORMAT: "disk_format",
    pb.SORT_KEY_SIZE: "size",
    pb.SORT_KEY_ID: "id",
    pb.SORT_KEY_CREATE_TIME: "created_at",
    pb.SORT_KEY_UPDATE_TIME: "updated_at",
}
SORT_DIRECTIONS: dict[pb.SortDirection.ValueType, str] = {
    pb.SORT_DIRECTION_ASCENDING: "asc",
    pb.SORT_DIRECTION_DESCENDING: "desc",
}

TRUE_WORDS = frozenset({"on", "1", "true", "yes"})
FALSE_WORDS = frozenset({"off", "0", "false", "no"})

# Attributes that Glance returns but that are not custom properties.
_NOT_PROPERTIES = validation.CORE_ATTRIBUTES - {"kernel_id", "ramdisk_id"}


def image_to_proto(body: JsonObject, glance_base: str, view: int = pb.IMAGE_VIEW_FULL) -> pb.Image:
    """Glance's image JSON as an Image message; BASIC fills only the brief listing's fields."""
    image = pb.Image(
        id=str(body.get("id") or ""),
        name=str(body.get("name") or ""),
        status=STATUS_FROM_GLANCE.get(str(body.get("status")), pb.IMAGE_STATUS_UNSPECIFIED),
        disk_format=str(body.get("disk_format") or ""),
        container_format=str(body.get("container_format") or ""),
        checksum=str(body.get("checksum") or ""),
    )
    if isinstance(body.get("size"), int):
        image.size = body["size"]
    if image.id:
        # In the brief listing too: the classic flow passes each listed image's uri to GetImageMeta/GetImage.
        image.uri = f"{glance_base}/v2/images/{image.id}"
    if view == pb.IMAGE_VIEW_BASIC:
        return image
    image.visibility = VISIBILITY_FROM_GLANCE.get(str(body.get("visibility")), pb.VISIBILITY_UNSPECIFIED)
    if isinstance(body.get("virtual_size"), int):
        image.virtual_size = body["virtual_size"]
    image.os_hash_algo = str(body.get("os_hash_algo") or "")
    image.os_hash_value = str(body.get("os_hash_value") or "")
    image.owner = str(body.get("owner") or "")
    image.protected = bool(body.get("protected"))
    image.hidden = bool(body.get("os_hidden"))
    image.min_ram_mib = int(body.get("min_ram") or 0)
    image.min_disk_gib = int(body.get("min_disk") or 0)
    image.tags.extend(sorted(str(tag) for tag in body.get("tags") or []))
    stores = body.get("stores")
    if isinstance(stores, str) and stores:
        image.stores.extend(stores.split(","))
    image.properties.update(custom_properties(body))
    set_time(image.create_time, body.get("created_at"))
    set_time(image.update_time, body.get("updated_at"))
    return image


def custom_properties(body: JsonObject) -> dict[str, str]:
    """The custom properties among Glance's image attributes (its own os_glance_* ones left out)."""
    return {
        key: value
        for key, value in body.items()
        if key not in _NOT_PROPERTIES
        and not key.startswith("os_glance")
        and key != upload_marker.KEY
        and isinstance(value, str)
    }


def set_time(target: timestamp_pb2.Timestamp, value: object) -> None:
    if isinstance(value, str) and value:
        # A timestamp Glance formats oddly is left unset rather than failing the call.
        with contextlib.suppress(ValueError):
            target.FromDatetime(datetime.fromisoformat(value.replace("Z", "+00:00")))


def parse_is_public(value: str) -> bool | None:
    """The classic is_public flag: "on", "1", "true" (and "yes") are true; empty means not given."""
    word = value.strip().lower()
    if not word:
        return None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise invalid_argument("INVALID_IS_PUBLIC", "is_public must be one of on/1/true/yes or off/0/false/no")


def create_body(spec: pb.ImageSpec) -> JsonObject:
    """The POST /v2/images body for an ImageSpec, after checking every field."""
    body: JsonObject = {"name": validation.image_name(spec.name)}
    if spec.id:
        body["id"] = validation.image_id(spec.id, "id")
    disk_format, container_format = _formats(spec)
    if disk_format:
        body["disk_format"] = disk_format
    if container_format:
        body["container_format"] = container_format
    body["visibility"] = _visibility(spec)
    if spec.min_ram_mib < 0 or spec.min_disk_gib < 0:
        raise invalid_argument("INVALID_MINIMUM", "min_ram_mib and min_disk_gib must not be negative")
    if spec.min_ram_mib:
        body["min_ram"] = spec.min_ram_mib
    if spec.min_disk_gib:
        body["min_disk"] = spec.min_disk_gib
    if spec.protected:
        body["protected"] = True
    if spec.hidden:
        body["os_hidden"] = True
    if spec.tags:
        body["tags"] = sorted({validation.tag(tag) for tag in spec.tags})
    for key, value in spec.properties.items():
        body[validation.property_key(key)] = validation.property_value(key, value)
    return body


def _formats(spec: pb.ImageSpec) -> tuple[str, str]:
    if spec.type != pb.IMAGE_TYPE_UNSPECIFIED:
        if spec.disk_format or spec.container_format:
            raise invalid_argument("CONFLICTING_FORMAT", "give either type or disk_format/container_format")
        if spec.type not in TYPE_FORMATS:
            raise invalid_argument("INVALID_TYPE", "type must be KERNEL, MACHINE, RAW or RAMDISK")
        return TYPE_FORMATS[spec.type]
    disk = validation.disk_or_container_format("disk_format", spec.disk_format) if spec.disk_format else ""
    container = (
        validation.disk_or_container_format("container_format", spec.container_format)
        if spec.container_format
        else ""
    )
    return disk, container


def _visibility(spec: pb.ImageSpec) -> str:
    is_public = parse_is_public(spec.is_public)
    if spec.visibility != pb.VISIBILITY_UNSPECIFIED:
        if spec.visibility not in VISIBILITY_TO_GLANCE:
            raise invalid_argument("INVALID_VISIBILITY", "unknown visibility")
        chosen = VISIBILITY_TO_GLANCE[spec.visibility]
        if is_public is not None and is_public != (chosen == "public"):
            raise invalid_argument("CONFLICTING_VISIBILITY", "is_public and visibility disagree")
        return chosen
    # The classic rule: not public unless asked, and then specific to its owner.
    return "public" if is_public else "private"


def enum_value(table: dict[Any, str], value: int, field: str) -> str:
    if value not in table:
        raise invalid_argument("INVALID_ENUM", f"unknown {field} value {value}")
    return table[value]
