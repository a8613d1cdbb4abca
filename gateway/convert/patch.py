"""UpdateImageRequest (image + update_mask) to Glance's JSON-patch operations."""

from __future__ import annotations

from gateway import validation
from gateway.convert.image import VISIBILITY_TO_GLANCE, JsonObject, custom_properties, enum_value
from gateway.errors import invalid_argument
from generated.glance.gateway.v1 import image_service_pb2 as pb

_SIMPLE_PATHS = {
    "name": "name",
    "visibility": "visibility",
    "protected": "protected",
    "hidden": "os_hidden",
    "min_ram_mib": "min_ram",
    "min_disk_gib": "min_disk",
    "disk_format": "disk_format",
    "container_format": "container_format",
    "tags": "tags",
}
_READ_ONLY_PATHS = frozenset(
    {"id", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "owner",
     "create_time", "update_time", "stores", "uri"}
)  # fmt: skip


def patch_needs_current(paths: list[str]) -> bool:
    """Whether building the patch needs the image as it is now (to know which properties exist)."""
    return any(path == "properties" or path.startswith("properties.") for path in paths)


def patch_operations(image: pb.Image, paths: list[str], current: JsonObject | None) -> list[JsonObject]:
    """The JSON patch (Glance's v2.1 media type) that applies `image`'s masked fields."""
    if not paths:
        raise invalid_argument("MISSING_UPDATE_MASK", "update_mask must name at least one field")
    existing = set(custom_properties(current or {}))
    operations: list[JsonObject] = []
    for path in dict.fromkeys(paths):
        if path in _SIMPLE_PATHS:
            operations.append(
                {"op": "replace", "path": f"/{_SIMPLE_PATHS[path]}", "value": _simple_value(image, path)}
            )
        elif path == "properties":
            for key in sorted(existing - set(image.properties)):
                operations.append({"op": "remove", "path": _pointer(key)})
            for key, value in sorted(image.properties.items()):
                operations.append(_set_property(key, value))
        elif path.startswith("properties."):
            key = path[len("properties.") :]
            if key in image.properties:
                operations.append(_set_property(key, image.properties[key]))
            elif key in existing:
                validation.property_key(key)
                operations.append({"op": "remove", "path": _pointer(key)})
            # else: clearing a property that is not there is already done.
        elif path in _READ_ONLY_PATHS:
            raise invalid_argument("READ_ONLY_FIELD", f"{path} cannot be changed", field=path)
        else:
            raise invalid_argument(
                "UNKNOWN_FIELD",
                f"update_mask names an unknown field {validation.quoted(path)}",
                field=path[: validation.MAX_QUOTED],
            )
    return operations


def _simple_value(image: pb.Image, path: str) -> object:
    if path == "name":
        return validation.image_name(image.name)
    if path == "visibility":
        return enum_value(VISIBILITY_TO_GLANCE, image.visibility, "visibility")
    if path in ("disk_format", "container_format"):
        return validation.disk_or_container_format(path, getattr(image, path))
    if path == "tags":
        return sorted({validation.tag(tag) for tag in image.tags})
    if path in ("min_ram_mib", "min_disk_gib") and getattr(image, path) < 0:
        raise invalid_argument("INVALID_MINIMUM", f"{path} must not be negative")
    value: object = getattr(image, path)
    return value


def _set_property(key: str, value: str) -> JsonObject:
    # "add" on an existing property replaces it in Glance, so it serves for both.
    return {
        "op": "add",
        "path": _pointer(validation.property_key(key)),
        "value": validation.property_value(key, value),
    }


def _pointer(key: str) -> str:
    """A JSON pointer (RFC 6901) to a top-level key."""
    return "/" + key.replace("~", "~0").replace("/", "~1")
