"""Glance's /v2/info answers as messages: the stores (GET /v2/info/stores) and the quota usage
(GET /v2/info/usage)."""

from __future__ import annotations

from gateway.convert.image import TRUE_WORDS, JsonObject
from generated.glance.gateway.v1 import image_service_pb2 as pb


def stores_to_proto(entries: list[JsonObject]) -> list[pb.Store]:
    """The entries of /v2/info/stores ({"id": "file", "default": "true", "description": ..., "read-only":
    "true"}), in Glance's order; an entry without an id names nothing a caller could use and is left out."""
    stores = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("id"):
            continue
        stores.append(
            pb.Store(
                id=str(entry["id"]),
                description=str(entry.get("description") or ""),
                is_default=_flag(entry.get("default")),
                read_only=_flag(entry.get("read-only")),
            )
        )
    return stores


def usage_to_proto(body: JsonObject) -> pb.GetQuotaUsageResponse:
    """{"usage": {"image_size_total": {"usage": 0, "limit": 1000}, ...}}, or {"usage": {}} without unified
    limits. A limit of -1 is Keystone's "unlimited" and is passed on as it is."""
    response = pb.GetQuotaUsageResponse()
    entries = body.get("usage")
    if not isinstance(entries, dict):
        return response
    for name, entry in entries.items():
        if isinstance(entry, dict):
            quota = response.usage[str(name)]
            quota.usage = _integer(entry.get("usage"))
            quota.limit = _integer(entry.get("limit"))
    return response


def _flag(value: object) -> bool:
    # Glance writes its store flags as the string "true" (discovery.py); a JSON true means the same.
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in TRUE_WORDS


def _integer(value: object) -> int:
    # bool is an int to Python, but never a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
