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
    # Image members: Glance 33's answers, as measured (ID stands for the image id).
    (
        403,
        Operation.CREATE_MEMBER,
        "Not allowed to create members for image ID.",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
    ),
    (
        403,
        Operation.LIST_MEMBERS,
        "Not allowed to list members for image ID: Only shared images have members.",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
    ),
    (
        403,
        Operation.UPDATE_MEMBER,
        "Not allowed to update members for image ID.",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
    ),
    (
        403,
        Operation.DELETE_MEMBER,
        "Not allowed to delete members for image ID.",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_SHARED",
    ),
    (
        403,
        Operation.UPDATE_MEMBER,
        "You are not authorized to complete modify_member action.",
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    ),
    (
        409,
        Operation.CREATE_MEMBER,
        "Member beta is duplicated for image ID",
        C.ALREADY_EXISTS,
        "MEMBER_ALREADY_EXISTS",
    ),
    (
        413,
        Operation.CREATE_MEMBER,
        "Image member limit exceeded for image ID: The limit has been exceeded on the number of allowed "
        "image members for this image. Attempted: 129, Maximum: 128:",
        C.RESOURCE_EXHAUSTED,
        "LIMIT_EXCEEDED",
    ),
    (
        404,
        Operation.SHOW_MEMBER,
        "beta not found in the member list of the image ID.",
        C.NOT_FOUND,
        "NOT_FOUND",
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


# -- stores and lifecycle: Glance 33's messages (glance/api/v2/images.py delete_from_store; glance/domain
# Image.deactivate/reactivate). Extending CASES covers them in both tests above: pytest reads the list when it
# collects them, after the whole module has run.
CASES += [
    (
        403,
        Operation.DEACTIVATE,
        "Not allowed to deactivate image in status 'queued'",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_ACTIVE",
    ),
    (
        403,
        Operation.REACTIVATE,
        "Not allowed to reactivate image in status 'saving'",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_DEACTIVATED",
    ),
    (
        403,
        Operation.DELETE_FROM_STORE,
        "Cannot delete image data from the only store containing it. Consider deleting the image instead.",
        C.FAILED_PRECONDITION,
        "ONLY_STORE",
    ),
    (
        404,
        Operation.DELETE_FROM_STORE,
        "Image 0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f is not stored in store file2.",
        C.NOT_FOUND,
        "IMAGE_NOT_IN_STORE",
    ),
    (
        409,
        Operation.DELETE_FROM_STORE,
        "The selected store nosuch is not available on this node.",
        C.INVALID_ARGUMENT,
        "UNKNOWN_STORE",
    ),
    (
        409,
        Operation.DELETE_FROM_STORE,
        "It's not allowed to remove image data from store if image status is not 'active'",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_ACTIVE",
    ),
]


def test_store_and_lifecycle_rows_keep_to_their_operations() -> None:
    # The policy refusals of the same calls stay PERMISSION_DENIED, and a missing image stays NOT_FOUND.
    assert lookup(
        403, Operation.DEACTIVATE, "You are not authorized to complete deactivate action."
    ).reason == ("PERMISSION_DENIED")
    assert lookup(403, Operation.DELETE_FROM_STORE, "...complete delete_image_location action.").reason == (
        "PERMISSION_DENIED"
    )
    assert lookup(404, Operation.DELETE_FROM_STORE, "Failed to find image x").reason == "NOT_FOUND"
    # The same words for another operation are not these rows.
    assert lookup(403, Operation.REACTIVATE, "Not allowed to deactivate image in status 'x'").reason == (
        "PERMISSION_DENIED"
    )
    assert lookup(409, Operation.IMPORT, "The selected store x is not available on this node.").reason == (
        "IMAGE_STATE_CONFLICT"
    )
    assert lookup(403, Operation.DELETE, "the only store containing it").reason == "PERMISSION_DENIED"


def test_member_rows_need_both_their_operation_and_glances_words() -> None:
    # "Not allowed to ..." is Glance's "not shared" only for its own member call; a policy refusal of the same
    # call stays PERMISSION_DENIED, and a 409 elsewhere is no duplicate member.
    assert (
        lookup(403, Operation.DELETE, "Not allowed to delete members for image x.").reason
        == "PERMISSION_DENIED"
    )
    assert lookup(
        403, Operation.CREATE_MEMBER, "You are not authorized to complete add_member action."
    ).code == (C.PERMISSION_DENIED)
    assert lookup(403, Operation.UPDATE_MEMBER, "Not allowed to delete members for image x.").code == (
        C.PERMISSION_DENIED
    )
    assert lookup(409, Operation.UPDATE_MEMBER, "Conflict").reason == "IMAGE_STATE_CONFLICT"
    # Glance turns "not shared" into a 404 for one member itself; that stays NOT_FOUND.
    assert lookup(404, Operation.SHOW_MEMBER, "Only shared images have members.").code == C.NOT_FOUND


# -- staging and import: Glance 33's messages (glance/api/v2/images.py import_image, image_data.py stage).
CASES += [
    (
        400,
        Operation.IMPORT,
        "URI for web-download does not pass filtering: http://127.0.0.1:9/x",
        C.INVALID_ARGUMENT,
        "URI_NOT_ALLOWED",
    ),
    (
        400,
        Operation.IMPORT,
        "Image is already present at store 'file2'",
        C.ALREADY_EXISTS,
        "ALREADY_IN_STORE",
    ),
    (
        400,
        Operation.IMPORT,
        "Unknown import method name 'web-download'.",
        C.UNIMPLEMENTED,
        "IMPORT_METHOD_NOT_ENABLED",
    ),
    (
        404,
        Operation.STAGE,
        "'glance-direct' method is not available at this site.",
        C.UNIMPLEMENTED,
        "IMPORT_METHOD_NOT_ENABLED",
    ),
    (
        409,
        Operation.IMPORT,
        "Image needs to be staged before 'glance-direct' method can be used",
        C.FAILED_PRECONDITION,
        "NOT_STAGED",
    ),
    (409, Operation.IMPORT, "Store for identifier nosuch not found", C.INVALID_ARGUMENT, "UNKNOWN_STORE"),
    (
        409,
        Operation.IMPORT,
        "Image needs to be in 'queued' state to use 'web-download' method",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_QUEUED",
    ),
    (
        409,
        Operation.IMPORT,
        "Only images with status active can be targeted for copying",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_ACTIVE",
    ),
    (
        409,
        Operation.IMPORT,
        "Image with status active cannot be target for import",
        C.FAILED_PRECONDITION,
        "IMAGE_ALREADY_ACTIVE",
    ),
    (
        409,
        Operation.IMPORT,
        "'container_format' needs to be set before import",
        C.FAILED_PRECONDITION,
        "FORMAT_NOT_SET",
    ),
    (409, Operation.IMPORT, "Image has active task", C.FAILED_PRECONDITION, "IMPORT_IN_PROGRESS"),
    (
        409,
        Operation.IMPORT,
        "New operation on image 'x' is not permitted as prior operation is still in progress",
        C.FAILED_PRECONDITION,
        "IMPORT_IN_PROGRESS",
    ),
    (409, Operation.STAGE, "The image x has data on staging", C.FAILED_PRECONDITION, "ALREADY_STAGED"),
    (
        409,
        Operation.STAGE,
        "Image status transition from importing to uploading is not allowed",
        C.FAILED_PRECONDITION,
        "IMAGE_NOT_QUEUED",
    ),
    # copy-image is an admin's (policy copy_image): the general refusal.
    (
        403,
        Operation.IMPORT,
        "You are not authorized to complete copy_image action.",
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    ),
]


def test_stage_and_import_rows_keep_to_their_operations() -> None:
    # The same words from another call are that call's: an upload's 409 stays a state conflict, a 400 about
    # a store outside import stays a bad request, a stage's 404 for a missing image stays NOT_FOUND.
    assert lookup(409, Operation.UPLOAD, "Image status transition from active to saving").reason == (
        "IMAGE_STATE_CONFLICT"
    )
    assert lookup(400, Operation.UPLOAD, "Image is already present at store 'file2'").reason == "BAD_REQUEST"
    assert lookup(404, Operation.STAGE, "No image found with ID x").reason == "NOT_FOUND"
    assert lookup(404, Operation.IMPORT, "'glance-direct' method is not available at this site.").reason == (
        "NOT_FOUND"
    )
    # An import's unknown store is INVALID_ARGUMENT only under the import's own 409.
    assert lookup(400, Operation.IMPORT, "Store for identifier nosuch not found").reason == "BAD_REQUEST"
    assert lookup(409, Operation.IMPORT, "Some other conflict").reason == "IMAGE_STATE_CONFLICT"
