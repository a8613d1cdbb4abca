"""Every row of the error table, written out independently of the table so a changed row fails here."""

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import (
    ERROR_DOMAIN,
    ERROR_TABLE,
    MAX_STATUS_MESSAGE,
    Failure,
    GatewayError,
    Operation,
    clean_glance_message,
    from_outcome,
    lookup,
)

C = grpc.StatusCode

CASES: list[tuple[int | Failure, Operation, str, grpc.StatusCode, str]] = [
    (
        400,
        Operation.UPLOAD,
        "Store for identifier nosuchstore not found",
        C.INVALID_ARGUMENT,
        "UNKNOWN_STORE",
    ),
    (400, Operation.CREATE, "Provided object does not match schema", C.INVALID_ARGUMENT, "BAD_REQUEST"),
    (401, Operation.LIST, "Unauthorized", C.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (403, Operation.CREATE, "Attribute 'status' is read-only.", C.INVALID_ARGUMENT, "READ_ONLY_ATTRIBUTE"),
    (403, Operation.UPDATE, "Attribute 'os_glance_x' is reserved.", C.INVALID_ARGUMENT, "RESERVED_ATTRIBUTE"),
    (
        403,
        Operation.DELETE,
        "Image x is protected and cannot be deleted.",
        C.FAILED_PRECONDITION,
        "IMAGE_PROTECTED",
    ),
    (
        403,
        Operation.DOWNLOAD,
        "The requested image has been deactivated. Image data download is forbidden.",
        C.FAILED_PRECONDITION,
        "IMAGE_DEACTIVATED",
    ),
    (
        403,
        Operation.UPDATE,
        "Attribute disk_format can be only replaced for a queued image.",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_QUEUED",
    ),
    (
        403,
        Operation.CREATE,
        "You are not authorized to complete publicize_image action.",
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    ),
    (404, Operation.SHOW, "No image found with ID x", C.NOT_FOUND, "NOT_FOUND"),
    (409, Operation.CREATE, "Image ID x already exists!", C.ALREADY_EXISTS, "IMAGE_ALREADY_EXISTS"),
    (
        409,
        Operation.UPLOAD,
        "Image status transition from active to saving is not allowed",
        C.FAILED_PRECONDITION,
        "IMAGE_STATE_CONFLICT",
    ),
    (410, Operation.UPLOAD, "Gone", C.ABORTED, "IMAGE_GONE"),
    (
        413,
        Operation.CREATE,
        "The limit has been exceeded on the number of allowed image properties.",
        C.RESOURCE_EXHAUSTED,
        "LIMIT_EXCEEDED",
    ),
    (
        415,
        Operation.UPLOAD,
        "Image disk_format qcow2 does not match stream data raw",
        C.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        416,
        Operation.DOWNLOAD,
        "Invalid start position in Range header.",
        C.OUT_OF_RANGE,
        "RANGE_NOT_SATISFIABLE",
    ),
    (429, Operation.LIST, "Too many requests", C.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    (500, Operation.UPLOAD, "Internal Server Error", C.INTERNAL, "GLANCE_INTERNAL_ERROR"),
    (502, Operation.SHOW, "Bad Gateway", C.UNAVAILABLE, "GLANCE_UNAVAILABLE"),
    (503, Operation.SHOW, "Service Unavailable", C.UNAVAILABLE, "GLANCE_UNAVAILABLE"),
    (504, Operation.SHOW, "Gateway Timeout", C.DEADLINE_EXCEEDED, "GLANCE_TIMEOUT"),
    (Failure.CONNECT_ERROR, Operation.SHOW, "cannot connect", C.UNAVAILABLE, "GLANCE_UNREACHABLE"),
    (Failure.UPSTREAM_TIMEOUT, Operation.SHOW, "read timeout", C.DEADLINE_EXCEEDED, "GLANCE_TIMEOUT"),
    (Failure.UPSTREAM_BROKEN, Operation.DOWNLOAD, "reset", C.UNAVAILABLE, "GLANCE_CONNECTION_BROKEN"),
    (Failure.CLIENT_DEADLINE, Operation.SHOW, "deadline", C.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    (Failure.HASH_MISMATCH, Operation.DOWNLOAD, "sha512 differs", C.DATA_LOSS, "CHECKSUM_MISMATCH"),
    (Failure.SIZE_MISMATCH, Operation.UPLOAD, "too long", C.INVALID_ARGUMENT, "SIZE_MISMATCH"),
    (Failure.CLIENT_STALLED, Operation.DOWNLOAD, "stalled", C.DEADLINE_EXCEEDED, "CLIENT_STALLED"),
    (Failure.TOO_MANY_STREAMS, Operation.DOWNLOAD, "too many", C.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS"),
    (Failure.GATEWAY_BUSY_PAST_DEADLINE, Operation.SHOW, "busy", C.DEADLINE_EXCEEDED, "GATEWAY_BUSY"),
    (Failure.GATEWAY_BUSY, Operation.SHOW, "busy", C.UNAVAILABLE, "GATEWAY_BUSY"),
]


@pytest.mark.parametrize(("outcome", "operation", "message", "code", "reason"), CASES)
def test_each_row_maps_to_its_status(
    outcome: int | Failure, operation: Operation, message: str, code: grpc.StatusCode, reason: str
) -> None:
    rule = lookup(outcome, operation, message)
    assert (rule.code, rule.reason) == (code, reason)


def test_every_row_is_covered_by_a_case() -> None:
    covered = {lookup(outcome, operation, message) for outcome, operation, message, _, _ in CASES}
    assert covered == set(ERROR_TABLE)


def test_operation_specific_rows_do_not_leak_to_other_operations() -> None:
    # A 409 outside create is a state conflict, a 403 "protected" outside delete is plain permission.
    assert lookup(409, Operation.UPDATE, "Property x does not exist.").code == C.FAILED_PRECONDITION
    assert lookup(403, Operation.UPDATE, "protected").code == C.PERMISSION_DENIED
    assert lookup(400, Operation.CREATE, "Store for identifier x not found").reason == "BAD_REQUEST"


@pytest.mark.parametrize("status", [302, 405, 418, 501, 599])
def test_unlisted_statuses_are_internal_never_unknown(status: int) -> None:
    assert lookup(status, Operation.SHOW, "").code == C.INTERNAL


def test_status_carries_error_info_with_domain_and_metadata() -> None:
    error = from_outcome(404, Operation.SHOW, "No image found", {"image_id": "abc", "request_id": "req-1"})
    status = error.to_status()
    assert status.code == C.NOT_FOUND
    assert status.details == "No image found"
    (key, value), *_ = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    proto = status_pb2.Status.FromString(value)
    info = error_details_pb2.ErrorInfo()
    assert proto.details[0].Unpack(info)
    assert info.domain == ERROR_DOMAIN
    assert info.reason == "NOT_FOUND"
    assert dict(info.metadata) == {"image_id": "abc", "request_id": "req-1", "glance_status": "404"}


def test_empty_metadata_values_are_dropped() -> None:
    error = from_outcome(Failure.CONNECT_ERROR, Operation.SHOW, "x", {"image_id": "", "request_id": ""})
    assert error.metadata == {}


def test_gateway_error_str_names_code_and_reason() -> None:
    assert str(GatewayError(C.NOT_FOUND, "NOT_FOUND", "gone")) == "NOT_FOUND NOT_FOUND: gone"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("No image found with ID abc<br /><br />\n\n\n", "No image found with ID abc"),
        ("<html><body><h1>404 Not Found</h1>Gone<br /><br />", "404 Not Found Gone"),
        ("  plain  text ", "plain text"),
    ],
)
def test_glance_message_noise_is_stripped(raw: str, clean: str) -> None:
    assert clean_glance_message(raw) == clean


def test_a_long_message_and_long_details_are_cut_to_fit_in_trailers() -> None:
    error = GatewayError(C.INTERNAL, "GLANCE_INTERNAL_ERROR", "x" * 70_000, {"request_id": "r" * 1000})
    status = error.to_status()
    message = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert len(status.details) == MAX_STATUS_MESSAGE and status.details.endswith("…")
    assert len(message) < 4 * 1024
    short = GatewayError(C.NOT_FOUND, "NOT_FOUND", "no such image", {"image_id": "abc"}).to_status()
    assert short.details == "no such image"
