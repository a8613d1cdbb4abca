"""AIP-158 paging over Glance's marker-based listing: page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from gateway import validation
from gateway.errors import invalid_argument

DEFAULT_PAGE_SIZE = 25
# Glance caps a listing at 1000; one more than the page is asked for to learn whether a next page exists.
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise invalid_argument("INVALID_PAGE_SIZE", "page_size must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _query_fingerprint(query: list[tuple[str, str]]) -> str:
    """Binds a token to the filters and sort it was issued for."""
    return hashlib.sha256(json.dumps(query).encode()).hexdigest()[:16]


def encode_token(marker: str, query: list[tuple[str, str]]) -> str:
    payload = json.dumps({"m": marker, "q": _query_fingerprint(query)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str, query: list[tuple[str, str]]) -> str | None:
    """The marker (last image id of the previous page) in a token, or None for the first page."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        marker = payload["m"]
        fingerprint = payload["q"]
    # RecursionError: deeply nested JSON (the length limit in convert.list_query stops it first, but a token
    # must never be able to fail the call any other way).
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise invalid_argument(
            "INVALID_PAGE_TOKEN", "page_token is not a token this gateway issued"
        ) from None
    if not isinstance(marker, str) or not validation.is_image_id(marker):
        raise invalid_argument("INVALID_PAGE_TOKEN", "page_token is not a token this gateway issued")
    if fingerprint != _query_fingerprint(query):
        raise invalid_argument(
            "PAGE_TOKEN_MISMATCH", "page_token was issued for other filters or sort order; start again"
        )
    return marker
