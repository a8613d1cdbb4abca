"""The one table that maps Glance/HTTP outcomes to gRPC statuses, and the error type that carries them."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "glance-grpc-gateway"


class Operation(enum.Enum):
    """What the gateway asked Glance to do; some statuses mean different things per operation."""

    LIST = "list"
    SHOW = "show"
    CREATE = "create"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    UPDATE = "update"
    DELETE = "delete"
    STORES = "stores"
    ADD_TAG = "add_tag"
    REMOVE_TAG = "remove_tag"
    CREATE_MEMBER = "create_member"
    LIST_MEMBERS = "list_members"
    SHOW_MEMBER = "show_member"
    UPDATE_MEMBER = "update_member"
    DELETE_MEMBER = "delete_member"
    DELETE_FROM_STORE = "delete_from_store"
    STAGE = "stage"
    IMPORT = "import"
    DEACTIVATE = "deactivate"
    REACTIVATE = "reactivate"
    USAGE = "usage"


class Failure(enum.Enum):
    """Outcomes that are not an HTTP status from Glance."""

    CONNECT_ERROR = "connect_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_BROKEN = "upstream_broken"
    CLIENT_DEADLINE = "client_deadline"
    HASH_MISMATCH = "hash_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    # The gRPC client stopped reading a download, or sending an upload, for longer than the stall timeout.
    CLIENT_STALLED = "client_stalled"
    # The gateway already serves --max-streams data streams (GetImage, AddImage, StageImageData); refused at
    # once, never queued.
    TOO_MANY_STREAMS = "too_many_streams"
    # Every one of the --max-connections upstream connections stayed busy: until the client's deadline
    # (GATEWAY_BUSY_PAST_DEADLINE) or, with no nearer deadline, for the whole --read-timeout (GATEWAY_BUSY).
    # Nothing was sent to Glance, so either is safe to retry.
    GATEWAY_BUSY_PAST_DEADLINE = "gateway_busy_past_deadline"
    GATEWAY_BUSY = "gateway_busy"


@dataclass(frozen=True)
class Rule:
    """One row: when `outcome` happens (optionally only for `operation`, or a message containing `hint`)."""

    outcome: int | Failure
    code: grpc.StatusCode
    reason: str
    operation: Operation | None = None
    hint: str | None = None

    def matches(self, outcome: int | Failure, operation: Operation | None, message: str) -> bool:
        if self.outcome != outcome:
            return False
        if self.operation is not None and self.operation != operation:
            return False
        return self.hint is None or self.hint in message.lower()


C = grpc.StatusCode

# First matching row wins: specific rows come before the general row for the same status.
ERROR_TABLE: tuple[Rule, ...] = (
    Rule(400, C.INVALID_ARGUMENT, "UNKNOWN_STORE", Operation.UPLOAD, "store for identifier"),
    # Import (POST .../import). Glance's import filtering refused a web-download URI (hosts, ports, schemes).
    Rule(400, C.INVALID_ARGUMENT, "URI_NOT_ALLOWED", Operation.IMPORT, "does not pass filtering"),
    # copy-image into a store that already holds the image's data.
    Rule(400, C.ALREADY_EXISTS, "ALREADY_IN_STORE", Operation.IMPORT, "already present at store"),
    # A method of the API that this Glance does not enable (enabled_import_methods).
    Rule(400, C.UNIMPLEMENTED, "IMPORT_METHOD_NOT_ENABLED", Operation.IMPORT, "unknown import method name"),
    Rule(400, C.INVALID_ARGUMENT, "BAD_REQUEST"),
    Rule(401, C.UNAUTHENTICATED, "UNAUTHENTICATED"),
    Rule(403, C.INVALID_ARGUMENT, "READ_ONLY_ATTRIBUTE", None, "is read-only"),
    Rule(403, C.INVALID_ARGUMENT, "RESERVED_ATTRIBUTE", None, "is reserved"),
    Rule(403, C.FAILED_PRECONDITION, "IMAGE_PROTECTED", Operation.DELETE, "protected"),
    Rule(403, C.FAILED_PRECONDITION, "IMAGE_DEACTIVATED", Operation.DOWNLOAD, "deactivated"),
    Rule(
        403, C.FAILED_PRECONDITION, "IMAGE_NOT_QUEUED", Operation.UPDATE, "only replaced for a queued image"
    ),
    # Glance 33 answers these two with 403, not the 400 of its api-ref (domain Image.deactivate/reactivate).
    Rule(
        403,
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_ACTIVE",
        Operation.DEACTIVATE,
        "not allowed to deactivate image",
    ),
    Rule(
        403,
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_DEACTIVATED",
        Operation.REACTIVATE,
        "not allowed to reactivate image",
    ),
    Rule(403, C.FAILED_PRECONDITION, "ONLY_STORE", Operation.DELETE_FROM_STORE, "only store containing it"),
    # Glance 33's 403 for a member call on an image whose visibility is not "shared" (its policy refusals say
    # "not authorized to complete ..." instead): the visibility is the caller's to change.
    Rule(403, C.FAILED_PRECONDITION, "IMAGE_NOT_SHARED", Operation.LIST_MEMBERS, "only shared images have"),
    Rule(
        403,
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
        Operation.CREATE_MEMBER,
        "not allowed to create member",
    ),
    Rule(
        403,
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
        Operation.UPDATE_MEMBER,
        "not allowed to update member",
    ),
    Rule(
        403,
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
        Operation.DELETE_MEMBER,
        "not allowed to delete member",
    ),
    Rule(403, C.PERMISSION_DENIED, "PERMISSION_DENIED"),
    Rule(404, C.NOT_FOUND, "IMAGE_NOT_IN_STORE", Operation.DELETE_FROM_STORE, "is not stored in store"),
    # Staging is glance-direct's first half; a Glance without glance-direct answers 404 to it.
    Rule(404, C.UNIMPLEMENTED, "IMPORT_METHOD_NOT_ENABLED", Operation.STAGE, "not available at this site"),
    Rule(404, C.NOT_FOUND, "NOT_FOUND"),
    Rule(409, C.ALREADY_EXISTS, "IMAGE_ALREADY_EXISTS", Operation.CREATE),
    # The same mistake as AddImage's unknown store, though Glance says it with another status here.
    Rule(409, C.INVALID_ARGUMENT, "UNKNOWN_STORE", Operation.DELETE_FROM_STORE, "not available on this node"),
    Rule(
        409, C.FAILED_PRECONDITION, "IMAGE_NOT_ACTIVE", Operation.DELETE_FROM_STORE, "status is not 'active'"
    ),
    Rule(409, C.ALREADY_EXISTS, "MEMBER_ALREADY_EXISTS", Operation.CREATE_MEMBER),
    Rule(409, C.FAILED_PRECONDITION, "NOT_STAGED", Operation.IMPORT, "needs to be staged"),
    Rule(409, C.INVALID_ARGUMENT, "UNKNOWN_STORE", Operation.IMPORT, "store for identifier"),
    Rule(409, C.FAILED_PRECONDITION, "IMAGE_NOT_QUEUED", Operation.IMPORT, "needs to be in 'queued' state"),
    Rule(409, C.FAILED_PRECONDITION, "IMAGE_NOT_ACTIVE", Operation.IMPORT, "only images with status active"),
    Rule(409, C.FAILED_PRECONDITION, "IMAGE_ALREADY_ACTIVE", Operation.IMPORT, "cannot be target for import"),
    Rule(409, C.FAILED_PRECONDITION, "FORMAT_NOT_SET", Operation.IMPORT, "needs to be set before import"),
    # Another import holds the image (its os_glance_import_task lock): wait for it, e.g. WatchImageImport.
    Rule(409, C.FAILED_PRECONDITION, "IMPORT_IN_PROGRESS", Operation.IMPORT, "has active task"),
    Rule(409, C.FAILED_PRECONDITION, "IMPORT_IN_PROGRESS", Operation.IMPORT, "is still in progress"),
    # A queued image with staged data left behind (Glance crashed mid-import); a stage racing a status change.
    Rule(409, C.FAILED_PRECONDITION, "ALREADY_STAGED", Operation.STAGE, "has data on staging"),
    Rule(409, C.FAILED_PRECONDITION, "IMAGE_NOT_QUEUED", Operation.STAGE, "status transition from"),
    Rule(409, C.FAILED_PRECONDITION, "IMAGE_STATE_CONFLICT"),
    Rule(410, C.ABORTED, "IMAGE_GONE"),
    Rule(413, C.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"),
    Rule(415, C.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE"),
    Rule(416, C.OUT_OF_RANGE, "RANGE_NOT_SATISFIABLE"),
    Rule(429, C.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    Rule(500, C.INTERNAL, "GLANCE_INTERNAL_ERROR"),
    Rule(502, C.UNAVAILABLE, "GLANCE_UNAVAILABLE"),
    Rule(503, C.UNAVAILABLE, "GLANCE_UNAVAILABLE"),
    Rule(504, C.DEADLINE_EXCEEDED, "GLANCE_TIMEOUT"),
    Rule(Failure.CONNECT_ERROR, C.UNAVAILABLE, "GLANCE_UNREACHABLE"),
    Rule(Failure.UPSTREAM_TIMEOUT, C.DEADLINE_EXCEEDED, "GLANCE_TIMEOUT"),
    Rule(Failure.UPSTREAM_BROKEN, C.UNAVAILABLE, "GLANCE_CONNECTION_BROKEN"),
    Rule(Failure.CLIENT_DEADLINE, C.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    Rule(Failure.HASH_MISMATCH, C.DATA_LOSS, "CHECKSUM_MISMATCH"),
    Rule(Failure.SIZE_MISMATCH, C.INVALID_ARGUMENT, "SIZE_MISMATCH"),
    Rule(Failure.CLIENT_STALLED, C.DEADLINE_EXCEEDED, "CLIENT_STALLED"),
    # The client caused it by its own concurrency; an immediate automatic retry would only be refused again.
    Rule(Failure.TOO_MANY_STREAMS, C.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS"),
    # The deadline did pass (the client's own library reports the same code); the reason says where it went.
    Rule(Failure.GATEWAY_BUSY_PAST_DEADLINE, C.DEADLINE_EXCEEDED, "GATEWAY_BUSY"),
    # Transient, and nothing reached Glance: UNAVAILABLE is the code gRPC retry policies retry with backoff.
    Rule(Failure.GATEWAY_BUSY, C.UNAVAILABLE, "GATEWAY_BUSY"),
)

# A status no row names is Glance doing something this gateway does not understand: never UNKNOWN.
UNEXPECTED = Rule(0, C.INTERNAL, "UNEXPECTED_GLANCE_STATUS")


def lookup(outcome: int | Failure, operation: Operation | None = None, message: str = "") -> Rule:
    """The first row of ERROR_TABLE that matches, or UNEXPECTED."""
    for rule in ERROR_TABLE:
        if rule.matches(outcome, operation, message):
            return rule
    return UNEXPECTED


@dataclass
class GatewayError(Exception):
    """A failure with its gRPC status; the servicer turns it into the call's status with ErrorInfo."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    def to_status(self) -> grpc.Status:
        metadata = {key: _cut(value, MAX_DETAIL_VALUE) for key, value in self.metadata.items()}
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=metadata)
        detail = any_pb2.Any()
        detail.Pack(info)
        message = _cut(self.message, MAX_STATUS_MESSAGE)
        proto = status_pb2.Status(code=self.code.value[0], message=message, details=[detail])
        status: grpc.Status = rpc_status.to_status(proto)
        return status


# The status travels in trailers, which clients refuse past 8-16 KiB (grpc-go's and grpc-java's defaults), and
# Glance's error text can be up to 64 KiB: the status and its details are cut well below that.
MAX_STATUS_MESSAGE = 2048
MAX_DETAIL_VALUE = 256


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid_argument(reason: str, message: str, **metadata: str) -> GatewayError:
    """Bad input found by the gateway itself, before anything is sent to Glance."""
    return GatewayError(C.INVALID_ARGUMENT, reason, message, dict(metadata))


def from_outcome(
    outcome: int | Failure,
    operation: Operation | None,
    message: str,
    metadata: Mapping[str, str] | None = None,
) -> GatewayError:
    """The GatewayError for an outcome, through the table."""
    rule = lookup(outcome, operation, message)
    details = {k: v for k, v in (metadata or {}).items() if v}
    if isinstance(outcome, int):
        details["glance_status"] = str(outcome)
    return GatewayError(rule.code, rule.reason, message, details)


_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def clean_glance_message(text: str) -> str:
    """Glance messages carry HTML noise (`<br /><br />` and trailing newlines) even in JSON bodies."""
    return _SPACE.sub(" ", _TAGS.sub(" ", text)).strip()
