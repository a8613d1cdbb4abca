"""The client's exceptions: one hierarchy, named as the classic Glance client named them.

Every failed call becomes a `ClientError` subclass chosen by its gRPC status code (`ERRORS`), carrying the
code, the gateway's ErrorInfo reason and Glance's request id.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "glance-grpc-gateway"
_DETAILS_KEY = "grpc-status-details-bin"
_REQUEST_ID_KEY = "x-openstack-request-id"


class ClientError(Exception):
    """A failed call: `.code` (grpc.StatusCode), `.reason` (ErrorInfo reason, "" if none), `.request_id`
    (Glance's request id, "" if unknown) and `.details` (the status message)."""

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str = "",
        request_id: str = "",
    ) -> None:
        super().__init__(details)
        self.details = details
        self.code = code
        self.reason = reason
        self.request_id = request_id

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.details}"


class BadRequest(ClientError):
    """INVALID_ARGUMENT: the request (metadata, store, size, ...) is invalid."""


class NotAuthorized(ClientError):
    """UNAUTHENTICATED: no token, or a token Keystone does not accept."""


class Forbidden(ClientError):
    """PERMISSION_DENIED: the caller may not do this."""


class NotFound(ClientError):
    """NOT_FOUND: no such image (or member, tag, ...), or one the caller cannot see."""


class Duplicate(ClientError):
    """ALREADY_EXISTS: e.g. an image id that is (or was) in use."""


class InvalidState(ClientError):
    """FAILED_PRECONDITION: the image's state forbids this (protected, deactivated, not shared...)."""


# The HTTP-era name for the same failure (Glance answers 409 Conflict for most of these).
Conflict = InvalidState


class LimitExceeded(ClientError):
    """RESOURCE_EXHAUSTED: a quota or the gateway's admission limit."""


class ServiceUnavailable(ClientError):
    """UNAVAILABLE: the gateway or Glance cannot be reached right now; retrying may succeed."""


class Timeout(ClientError):
    """DEADLINE_EXCEEDED: the call's deadline passed."""


class DataCorrupt(ClientError):
    """DATA_LOSS: image data does not match its hash or size (checked by the gateway or by the client)."""


class RangeNotSatisfiable(ClientError):
    """OUT_OF_RANGE: a download offset at or past the end of the data."""


class InternalError(ClientError):
    """INTERNAL, and every status code without a more specific class."""


_SPECIFIC: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.UNAUTHENTICATED: NotAuthorized,
    grpc.StatusCode.PERMISSION_DENIED: Forbidden,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Duplicate,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidState,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceeded,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.DATA_LOSS: DataCorrupt,
    grpc.StatusCode.OUT_OF_RANGE: RangeNotSatisfiable,
}

# The one code → class table; total over grpc.StatusCode so no failure escapes the hierarchy.
ERRORS: dict[grpc.StatusCode, type[ClientError]] = {
    code: _SPECIFIC.get(code, InternalError) for code in grpc.StatusCode
}


def _error_info(metadata: Iterable[tuple[str, str | bytes]]) -> error_details_pb2.ErrorInfo | None:
    for key, value in metadata:
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    return None


def from_rpc_error(err: grpc.RpcError) -> ClientError:
    """The ClientError for a failed call (sync grpc.Call or grpc.aio.AioRpcError alike)."""
    if not isinstance(err, grpc.Call | grpc.aio.AioRpcError):
        return InternalError(str(err) or repr(err))
    code: grpc.StatusCode = err.code()
    metadata = [(str(key), value) for key, value in (err.trailing_metadata() or ())]
    info = _error_info(metadata)
    reason = request_id = ""
    if info is not None and info.domain == ERROR_DOMAIN:
        reason = info.reason
        request_id = info.metadata.get("request_id", "")
    if not request_id:
        # Failures that never got an ErrorInfo request id may still carry Glance's id in the trailers.
        request_id = next((str(v) for k, v in metadata if k == _REQUEST_ID_KEY), "")
    cls = ERRORS.get(code, InternalError)
    return cls(err.details() or "", code=code, reason=reason, request_id=request_id)
