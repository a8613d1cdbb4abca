"""The one place that converts between Glance's JSON and the gateway's protobuf messages, one module per
kind of resource or request; the image conversions are re-exported here for their many callers."""

from gateway.convert.image import (
    FALSE_WORDS,
    SORT_DIRECTIONS,
    SORT_KEYS,
    STATUS_FROM_GLANCE,
    STATUS_TO_GLANCE,
    TRUE_WORDS,
    TYPE_FORMATS,
    VISIBILITY_FROM_GLANCE,
    VISIBILITY_TO_GLANCE,
    JsonObject,
    create_body,
    custom_properties,
    image_to_proto,
    parse_is_public,
)
from gateway.convert.patch import patch_needs_current, patch_operations
from gateway.convert.query import list_query

__all__ = [
    "FALSE_WORDS",
    "SORT_DIRECTIONS",
    "SORT_KEYS",
    "STATUS_FROM_GLANCE",
    "STATUS_TO_GLANCE",
    "TRUE_WORDS",
    "TYPE_FORMATS",
    "VISIBILITY_FROM_GLANCE",
    "VISIBILITY_TO_GLANCE",
    "JsonObject",
    "create_body",
    "custom_properties",
    "image_to_proto",
    "list_query",
    "parse_is_public",
    "patch_needs_current",
    "patch_operations",
]
