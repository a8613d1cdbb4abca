"""Checks on client input before any of it reaches a Glance URL, query or header."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from gateway import upload_marker
from gateway.errors import invalid_argument

# Glance's own schema pattern for ids: dashed hex UUIDs only.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_STORE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_FORMAT = re.compile(r"[a-z0-9_-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_NAME = 255
MAX_KEY = 255
MAX_TAG = 255
MAX_TOKEN = 8192
# Glance keeps property values in a TEXT column: at most 64 KiB of UTF-8 on MySQL, its reference database.
MAX_PROPERTY_VALUE_BYTES = 65535
# The gateway's own tokens are under 100 characters; a bound keeps junk from reaching the JSON decoder (whose
# recursion limit a deeply nested payload would hit).
MAX_PAGE_TOKEN = 512
# A list query (percent-encoded) must fit a request line of 8 KiB, Apache's and nginx's default limit in front
# of Glance, with room for the path, limit and marker; longer ones would fail as 414 or a reset connection.
MAX_LIST_QUERY = 6144
# How much of a client's value an error message quotes: messages and ErrorInfo go into the trailers, which a
# client refuses beyond 8-16 KiB.
MAX_QUOTED = 64

# Core image attributes: a custom property may not shadow one (Glance would treat it as the attribute).
CORE_ATTRIBUTES = frozenset(
    {
        "id", "name", "status", "visibility", "size", "virtual_size", "disk_format", "container_format",
        "checksum", "os_hash_algo", "os_hash_value", "owner", "protected", "os_hidden", "min_ram", "min_disk",
        "tags", "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url", "stores",
        "members", "kernel_id", "ramdisk_id",
    }
)  # fmt: skip
# Glance list query parameters: a property filter with one of these names would change the query.
LIST_PARAMETERS = frozenset(
    {"limit", "marker", "sort", "sort_key", "sort_dir", "size_min", "size_max", "tag", "member_status"}
)
# kernel_id/ramdisk_id are real Glance properties of AMI images; allow them as properties after all.
_PROPERTY_ALLOWED_CORE = frozenset({"kernel_id", "ramdisk_id"})


def image_id(value: str, field: str = "image_id") -> str:
    if not value:
        raise invalid_argument("MISSING_IMAGE_ID", f"{field} is required")
    if not is_image_id(value):
        raise invalid_argument("INVALID_IMAGE_ID", f"{field} must be a UUID like 8-4-4-4-12 hex digits")
    return value.lower()


def store_name(value: str) -> str:
    if not _STORE.fullmatch(value):
        raise invalid_argument("INVALID_STORE", "store must be a plain identifier (letters, digits, _ . -)")
    return value


def image_name(value: str) -> str:
    if not value.strip():
        raise invalid_argument("MISSING_NAME", "name is required")
    _text("name", value, MAX_NAME)
    return value


def disk_or_container_format(field: str, value: str) -> str:
    if not _FORMAT.fullmatch(value):
        raise invalid_argument("INVALID_FORMAT", f"{field} must be a format name such as raw, qcow2 or bare")
    return value


def property_key(key: str) -> str:
    if not key:
        raise invalid_argument("INVALID_PROPERTY", "property keys must not be empty")
    _text("property key", key, MAX_KEY)
    if key in CORE_ATTRIBUTES and key not in _PROPERTY_ALLOWED_CORE:
        raise invalid_argument("INVALID_PROPERTY", f"property {quoted(key)} would shadow the image attribute")
    if key.startswith("os_glance"):
        raise invalid_argument(
            "INVALID_PROPERTY", f"property {quoted(key)} uses Glance's reserved os_glance prefix"
        )
    if key == upload_marker.KEY:
        # A caller who could set or clear the mark could have the sweep delete an image, or spare one.
        raise invalid_argument("INVALID_PROPERTY", f"property {key!r} is the gateway's own upload mark")
    return key


def property_value(key: str, value: str) -> str:
    if "\x00" in value:
        raise invalid_argument("INVALID_PROPERTY", f"property {quoted(key)} contains a NUL character")
    # Characters first: a short string cannot be too long in UTF-8, and most values are short.
    if len(value) > MAX_PROPERTY_VALUE_BYTES // 4 and len(value.encode()) > MAX_PROPERTY_VALUE_BYTES:
        raise invalid_argument(
            "VALUE_TOO_LONG",
            f"property {quoted(key)} is longer than {MAX_PROPERTY_VALUE_BYTES} bytes of UTF-8",
        )
    return value


def page_token(value: str) -> str:
    if len(value) > MAX_PAGE_TOKEN:
        raise invalid_argument("INVALID_PAGE_TOKEN", "page_token is not a token this gateway issued")
    return value


def quoted(value: str) -> str:
    """A client's value for an error message: repr'd, and cut short when long."""
    return repr(value) if len(value) <= MAX_QUOTED else f"{value[:MAX_QUOTED]!r}..."


def tag(value: str) -> str:
    if not value:
        raise invalid_argument("INVALID_TAG", "tags must not be empty")
    _text("tag", value, MAX_TAG)
    return value


def path_tag(value: str) -> str:
    """A tag that goes into a URL path (/v2/images/{id}/tags/{tag}): a tag, with no "/" (WSGI decodes the path
    before Glance routes it, so an encoded "/" still splits the path) and ASCII only (Glance 33 stores a
    non-ASCII tag sent this way mis-decoded: "é" came back as "Ã©", measured)."""
    tag(value)
    if "/" in value:
        raise invalid_argument("INVALID_TAG", f"tag {quoted(value)} contains '/', which Glance cannot take")
    if value in DOT_SEGMENTS:
        # httpx resolves dot segments: "/tags/.." would go out as the image (RemoveImageTag deleted it).
        raise invalid_argument("INVALID_TAG", f"tag {quoted(value)} is a dot segment, which no URL can carry")
    if not value.isascii():
        raise invalid_argument(
            "INVALID_TAG",
            f"tag {quoted(value)} is not ASCII: Glance would store it garbled; use UpdateImage's tags",
        )
    return value


def request_id(value: str) -> str:
    if not _REQUEST_ID.fullmatch(value):
        raise invalid_argument(
            "INVALID_REQUEST_ID", "x-request-id must be 1-64 characters of [A-Za-z0-9_.:-]"
        )
    return value


def auth_token(value: str) -> str:
    if not value or len(value) > MAX_TOKEN or _CONTROL.search(value):
        raise invalid_argument("INVALID_TOKEN", "the auth token is empty, too long or has control characters")
    return value


def _text(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise invalid_argument("VALUE_TOO_LONG", f"{field} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise invalid_argument("INVALID_CHARACTERS", f"{field} contains control characters")


def image_id_from_uri(uri: str, glance_base: str) -> str:
    """The image id in a URI that points at the configured Glance; anything else is INVALID_ARGUMENT.

    Accepted: <glance>/images/<id> (the classic form) and <glance>/v2/images/<id>.
    """
    try:
        given = urlsplit(uri)
        given_port = given.port
    except ValueError:
        raise invalid_argument("INVALID_IMAGE_URI", "image_uri is not a valid URI") from None
    ours = urlsplit(glance_base)
    if (
        given.scheme.lower() != ours.scheme
        or (given.hostname or "").lower() != (ours.hostname or "").lower()
        or _effective_port(given.scheme, given_port) != _effective_port(ours.scheme, ours.port)
        or given.username is not None
        or given.password is not None
        or given.query
        or given.fragment
    ):
        raise invalid_argument(
            "FOREIGN_IMAGE_URI",
            "image_uri does not point at the Glance this gateway serves",
            image_uri=uri[:256],
        )
    prefix = ours.path.rstrip("/")
    for shape in (f"{prefix}/v2/images/", f"{prefix}/images/"):
        if given.path.startswith(shape):
            candidate = given.path[len(shape) :]
            if "/" not in candidate:
                return image_id(candidate, "the id in image_uri")
    raise invalid_argument("INVALID_IMAGE_URI", "image_uri must look like <glance>/v2/images/<id>")


def _effective_port(scheme: str, port: int | None) -> int:
    if port is not None:
        return port
    return 443 if scheme.lower() == "https" else 80


def is_image_id(value: str) -> bool:
    return bool(_UUID.fullmatch(value))


def store_id(value: str, field: str = "store_id") -> str:
    """A store id that goes into a URL path (/v2/stores/{store}/...): required, and a plain identifier."""
    if not value:
        raise invalid_argument("MISSING_STORE_ID", f"{field} is required")
    return store_name(value)


# Keystone project ids are 32 hex digits, but Glance takes any string as a member: a plain charset rather than
# a shape. None of these can end a path segment ("@" goes out as %40, which Glance decodes back).
_MEMBER_ID = re.compile(r"[A-Za-z0-9_.@-]+")
# Glance's image_members.member column is VARCHAR(255) (SQLite does not enforce it; MySQL would fail).
MAX_MEMBER_ID = 255
# Dot segments: httpx resolves them, so DELETE .../members/.. would go out as DELETE /v2/images/<id>.
DOT_SEGMENTS = frozenset({".", ".."})


def member_id(value: str, field: str = "member_id") -> str:
    """A member (project) id, which goes into a URL path (/v2/images/{id}/members/{member_id}) and, on create,
    into Glance's database: one Glance stores but cannot find again by path (a "/" or non-ASCII, measured on
    Glance 33) is refused before it is created."""
    if not value:
        raise invalid_argument("MISSING_MEMBER_ID", f"{field} is required")
    if len(value) > MAX_MEMBER_ID:
        raise invalid_argument("INVALID_MEMBER_ID", f"{field} is longer than {MAX_MEMBER_ID} characters")
    if not _MEMBER_ID.fullmatch(value) or value in DOT_SEGMENTS:
        raise invalid_argument(
            "INVALID_MEMBER_ID",
            f"{field} {quoted(value)} must be a project id: letters, digits and _ . @ - (not . or .. alone)",
        )
    return value


# A web-download URI's length limit: what browsers and proxies reliably pass; Glance stores it in a task.
MAX_IMPORT_URI = 2048


def import_uri(value: str) -> str:
    """A URI for Glance to fetch (web-download): http or https with a host, printable ASCII without spaces
    (percent-encode anything else), at most MAX_IMPORT_URI characters. Which hosts and ports are allowed is
    Glance's import filtering's to say (INVALID_ARGUMENT URI_NOT_ALLOWED)."""
    if not value:
        raise invalid_argument("MISSING_URI", "uri is required for WEB_DOWNLOAD")
    if len(value) > MAX_IMPORT_URI:
        raise invalid_argument("INVALID_URI", f"uri is longer than {MAX_IMPORT_URI} characters")
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise invalid_argument(
            "INVALID_URI", "uri must be printable ASCII without spaces (percent-encode anything else)"
        )
    try:
        parts = urlsplit(value)
        _ = parts.port  # urlsplit parses the port only when asked
    except ValueError:
        raise invalid_argument("INVALID_URI", f"uri {quoted(value)} is not a valid URI") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise invalid_argument("INVALID_URI", "uri must be an http or https URI with a host")
    return value
