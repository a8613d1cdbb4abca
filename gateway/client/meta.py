"""The one place where the classic Glance metadata dicts meet the gateway's protobuf messages.

Images come back as dicts with Glance v2's attribute names (id, name, status, visibility, size, ...,
min_ram, min_disk, created_at, updated_at, uri) plus the classic `is_public` and `properties`; enum values are
Glance's lower-case strings ("active", "public").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import field_mask_pb2

from generated.glance.gateway.v1 import image_service_pb2 as pb

ImageMeta = dict[str, Any]

# The brief listing's fields (ListImages BASIC view).
BRIEF_KEYS = ("id", "name", "status", "size", "disk_format", "container_format", "checksum", "uri")

TRUE_STRINGS = frozenset({"on", "1", "true", "yes"})
FALSE_STRINGS = frozenset({"off", "0", "false", "no"})


def enum_in(wrapper: Any, prefix: str, value: str | int) -> Any:
    """ "active" → IMAGE_STATUS_ACTIVE; ints pass through; "glance-direct" → ..._GLANCE_DIRECT."""
    if isinstance(value, int):
        return value
    try:
        return wrapper.Value(prefix + value.upper().replace("-", "_"))
    except ValueError:
        names: list[str] = wrapper.keys()
        choices = ", ".join(n[len(prefix) :].lower() for n in names if not n.endswith("UNSPECIFIED"))
        raise ValueError(f"unknown value {value!r}; expected one of: {choices}") from None


def enum_out(wrapper: Any, prefix: str, value: int) -> str:
    """IMAGE_STATUS_ACTIVE → "active"; unspecified → ""."""
    name: str = wrapper.Name(value)
    return "" if name.endswith("UNSPECIFIED") else name[len(prefix) :].lower()


def _time(message: Any, field: str) -> str | None:
    return str(getattr(message, field).ToJsonString()) if message.HasField(field) else None


def image_to_dict(image: pb.Image, brief: bool = False) -> ImageMeta:
    """An Image as a metadata dict: BRIEF_KEYS only when brief, else every field."""
    visibility = enum_out(pb.Visibility, "VISIBILITY_", image.visibility)
    full: ImageMeta = {
        "id": image.id,
        "name": image.name,
        "status": enum_out(pb.ImageStatus, "IMAGE_STATUS_", image.status),
        "size": image.size if image.HasField("size") else None,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "checksum": image.checksum,
        "uri": image.uri,
    }
    if brief:
        return full
    full.update(
        visibility=visibility,
        is_public=visibility == "public",
        virtual_size=image.virtual_size if image.HasField("virtual_size") else None,
        os_hash_algo=image.os_hash_algo,
        os_hash_value=image.os_hash_value,
        owner=image.owner,
        protected=image.protected,
        hidden=image.hidden,
        min_ram=image.min_ram_mib,
        min_disk=image.min_disk_gib,
        tags=sorted(image.tags),
        properties=dict(image.properties),
        created_at=_time(image, "create_time"),
        updated_at=_time(image, "update_time"),
        stores=list(image.stores),
    )
    return full


def _is_public(value: bool | str) -> str:
    # Strings go as given so the gateway validates the classic spellings ("on", "1", "yes", ...).
    return ("true" if value else "false") if isinstance(value, bool) else value


def _visibility_of(is_public: bool | str) -> str:
    # UpdateImage has no is_public field: the classic flag is turned into a visibility here.
    flag = _is_public(is_public).lower()
    if flag not in TRUE_STRINGS | FALSE_STRINGS:
        raise ValueError(
            f"is_public must be a bool or one of on/1/true/yes/off/0/false/no, not {is_public!r}"
        )
    return "public" if flag in TRUE_STRINGS else "private"


def image_spec(image_meta: Mapping[str, Any], *, ends_with_finish: bool) -> pb.ImageSpec:
    """add_image's metadata → ImageSpec.

    Keys: name (required), id, store, type ("kernel", "machine", "raw", "ramdisk"), size, is_public (bool or
    "on"/"1"/"true"/"yes" and their opposites), properties (dict), disk_format, container_format, visibility,
    tags, min_ram (MiB), min_disk (GiB), protected, hidden, checksum (expected MD5), sha512 (expected
    SHA-512).
    """
    spec = pb.ImageSpec()
    for key, value in image_meta.items():
        if value is None:
            continue
        if key in ("name", "id", "store", "disk_format", "container_format"):
            setattr(spec, key, value)
        elif key == "type":
            spec.type = enum_in(pb.ImageType, "IMAGE_TYPE_", value)
        elif key == "size":
            spec.size = int(value)
        elif key == "is_public":
            spec.is_public = _is_public(value)
        elif key == "visibility":
            spec.visibility = enum_in(pb.Visibility, "VISIBILITY_", value)
        elif key == "properties":
            spec.properties.update({str(k): str(v) for k, v in value.items()})
        elif key == "tags":
            spec.tags.extend(value)
        elif key in ("min_ram", "min_disk"):
            setattr(spec, key + ("_mib" if key == "min_ram" else "_gib"), int(value))
        elif key in ("protected", "hidden"):
            setattr(spec, key, bool(value))
        elif key == "checksum":
            spec.expected_md5 = value
        elif key == "sha512":
            spec.expected_sha512 = value
        else:
            raise ValueError(f"unknown image metadata key {key!r}")
    if ends_with_finish:
        # The client hashes while it sends and proves the data with the digest in UploadFinish.
        spec.finish_digests.append(pb.DIGEST_ALGORITHM_SHA512)
        spec.ends_with_finish = True
    return spec


_TYPE_FORMATS = {"kernel": "aki", "machine": "ami", "ramdisk": "ari"}


def update_request(image_id: str, image_meta: Mapping[str, Any]) -> pb.UpdateImageRequest:
    """update_image's metadata → UpdateImageRequest with an update_mask of exactly the keys given.

    Keys: name, visibility, is_public, protected, hidden, min_ram, min_disk, tags (replaces all), disk_format,
    container_format, type (sets both formats), properties (dict: each key is set on its own; a None value
    removes that property; other properties are left alone).
    """
    image = pb.Image()
    paths: list[str] = []
    for key, value in image_meta.items():
        if key in ("name", "disk_format", "container_format"):
            setattr(image, key, value)
            paths.append(key)
        elif key in ("visibility", "is_public"):
            if key == "is_public":
                value = _visibility_of(value)
            image.visibility = enum_in(pb.Visibility, "VISIBILITY_", value)
            paths.append("visibility")
        elif key in ("protected", "hidden"):
            setattr(image, key, bool(value))
            paths.append(key)
        elif key in ("min_ram", "min_disk"):
            field = key + ("_mib" if key == "min_ram" else "_gib")
            setattr(image, field, int(value))
            paths.append(field)
        elif key == "tags":
            image.tags.extend(value)
            paths.append("tags")
        elif key == "type":
            enum_in(pb.ImageType, "IMAGE_TYPE_", value)  # rejects anything but the four classic types
            image.disk_format = _TYPE_FORMATS.get(value, "raw")
            image.container_format = _TYPE_FORMATS.get(value, "bare")
            paths += ["disk_format", "container_format"]
        elif key == "properties":
            for prop, prop_value in value.items():
                if prop_value is not None:
                    image.properties[str(prop)] = str(prop_value)
                paths.append(f"properties.{prop}")
        else:
            raise ValueError(f"unknown or read-only image metadata key {key!r}")
    return pb.UpdateImageRequest(
        image_id=image_id, image=image, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
