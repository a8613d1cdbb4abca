"""Glance's image member JSON to the ImageMember message, and the member statuses both ways (a member's own
status, and ListImages' member_status filter)."""

from __future__ import annotations

from gateway.convert.image import JsonObject, enum_value, set_time
from gateway.errors import invalid_argument
from generated.glance.gateway.v1 import image_service_pb2 as pb

MEMBER_STATUS_FROM_GLANCE: dict[str, pb.MemberStatus.ValueType] = {
    "pending": pb.MEMBER_STATUS_PENDING,
    "accepted": pb.MEMBER_STATUS_ACCEPTED,
    "rejected": pb.MEMBER_STATUS_REJECTED,
}
MEMBER_STATUS_TO_GLANCE = {value: key for key, value in MEMBER_STATUS_FROM_GLANCE.items()}

# Glance's GET /v2/images?member_status=...; unset leaves Glance's default ("accepted").
MEMBER_STATUS_FILTERS: dict[pb.MemberStatusFilter.ValueType, str] = {
    pb.MEMBER_STATUS_FILTER_PENDING: "pending",
    pb.MEMBER_STATUS_FILTER_ACCEPTED: "accepted",
    pb.MEMBER_STATUS_FILTER_REJECTED: "rejected",
    pb.MEMBER_STATUS_FILTER_ALL: "all",
}


def member_to_proto(body: JsonObject) -> pb.ImageMember:
    """One member as Glance 33 answers it: {"member_id", "image_id", "status", "created_at", "updated_at"}."""
    member = pb.ImageMember(
        image_id=_text(body.get("image_id")),
        # Glance echoes the member as it was given; a client other than the gateway may have sent a number.
        member_id=_text(body.get("member_id")),
        status=MEMBER_STATUS_FROM_GLANCE.get(str(body.get("status")), pb.MEMBER_STATUS_UNSPECIFIED),
    )
    set_time(member.create_time, body.get("created_at"))
    set_time(member.update_time, body.get("updated_at"))
    return member


def members_to_proto(body: JsonObject) -> list[pb.ImageMember]:
    """The members of GET /v2/images/{id}/members ({"members": [...], "schema": ...})."""
    members = body.get("members")
    if not isinstance(members, list):
        return []
    return [member_to_proto(item) for item in members if isinstance(item, dict)]


def status_body(status: pb.MemberStatus.ValueType) -> JsonObject:
    """The PUT /v2/images/{id}/members/{member_id} body for a new status."""
    if status == pb.MEMBER_STATUS_UNSPECIFIED:
        raise invalid_argument("MISSING_MEMBER_STATUS", "status is required: PENDING, ACCEPTED or REJECTED")
    return {"status": enum_value(MEMBER_STATUS_TO_GLANCE, status, "status")}


def _text(value: object) -> str:
    return "" if value is None else str(value)
