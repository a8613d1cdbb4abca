"""ListImagesRequest to Glance's list query (filters and sort, without limit and marker)."""

from __future__ import annotations

from urllib.parse import urlencode

from gateway import validation
from gateway.convert.image import (
    SORT_DIRECTIONS,
    SORT_KEYS,
    STATUS_TO_GLANCE,
    VISIBILITY_TO_GLANCE,
    enum_value,
)
from gateway.convert.member import MEMBER_STATUS_FILTERS
from gateway.errors import invalid_argument
from generated.glance.gateway.v1 import image_service_pb2 as pb


def list_query(request: pb.ListImagesRequest) -> list[tuple[str, str]]:
    """Glance list filters and sort for a ListImagesRequest (without limit and marker)."""
    query: list[tuple[str, str]] = []
    if request.name:
        validation.image_name(request.name)
        # Glance reads "in:a,b" as a list; a name that looks like one is asked for literally.
        query.append(("name", f'in:"{request.name}"' if request.name.startswith("in:") else request.name))
    if request.status != pb.IMAGE_STATUS_UNSPECIFIED:
        query.append(("status", enum_value(STATUS_TO_GLANCE, request.status, "status")))
    if request.visibility != pb.VISIBILITY_UNSPECIFIED:
        query.append(("visibility", enum_value(VISIBILITY_TO_GLANCE, request.visibility, "visibility")))
    if request.owner:
        query.append(("owner", _plain("owner", request.owner)))
    query.extend(("tag", validation.tag(tag)) for tag in request.tags)
    if request.disk_format:
        query.append(("disk_format", validation.disk_or_container_format("disk_format", request.disk_format)))
    if request.container_format:
        query.append(
            (
                "container_format",
                validation.disk_or_container_format("container_format", request.container_format),
            )
        )
    for bound in ("size_min", "size_max"):
        if request.HasField(bound):
            value = getattr(request, bound)
            if value < 0:
                raise invalid_argument("INVALID_SIZE_FILTER", f"{bound} must not be negative")
            query.append((bound, str(value)))
    if request.HasField("hidden"):
        query.append(("os_hidden", _flag(request.hidden)))
    if request.HasField("protected"):
        query.append(("protected", _flag(request.protected)))
    if request.member_status != pb.MEMBER_STATUS_FILTER_UNSPECIFIED:
        # Part of the query, so a page token stays bound to it like every other filter.
        query.append(
            ("member_status", enum_value(MEMBER_STATUS_FILTERS, request.member_status, "member_status"))
        )
    for key, value in sorted(request.properties.items()):
        if key in validation.LIST_PARAMETERS:
            raise invalid_argument("INVALID_PROPERTY", f"{key!r} cannot be used as a property filter")
        query.append((validation.property_key(key), validation.property_value(key, value)))
    if request.sort_key != pb.SORT_KEY_UNSPECIFIED or request.sort_direction != pb.SORT_DIRECTION_UNSPECIFIED:
        key = enum_value(SORT_KEYS, request.sort_key, "sort_key") if request.sort_key else "created_at"
        direction = (
            enum_value(SORT_DIRECTIONS, request.sort_direction, "sort_direction")
            if request.sort_direction
            else "desc"
        )
        query.append(("sort_key", key))
        query.append(("sort_dir", direction))
    # Checked here, before the servicer decodes it: the token's marker joins this query.
    validation.page_token(request.page_token)
    if len(urlencode(query)) > validation.MAX_LIST_QUERY:
        raise invalid_argument(
            "QUERY_TOO_LONG",
            f"the filters make a Glance query longer than {validation.MAX_LIST_QUERY} characters",
        )
    return query


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _plain(field: str, value: str) -> str:
    if len(value) > 255 or not value.isprintable():
        raise invalid_argument("INVALID_FILTER", f"{field} must be printable and at most 255 characters")
    return value


# Mask paths that are plain attributes: proto field name -> Glance attribute.
