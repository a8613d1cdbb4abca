"""What one RPC did, for its access line, metrics and span: filled in by whichever code learns each part.

The interceptor sets a CallRecord for the duration of each call; RpcScope, the Glance client, download and
upload add what they learn through the `note_*` functions and `add_bytes`, which do nothing when no record
is set (unit tests that call those modules directly, or work outside any call such as the sweep).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(slots=True)
class CallRecord:
    method: str  # the full method path without the leading slash: "glance.gateway.v1.ImageService/GetImage"
    grpc_type: str  # unary, client_stream, server_stream or bidi_stream
    started: float  # time.perf_counter() when the call began
    code: str | None = None  # the gRPC status code name once the call has ended
    reason: str | None = None  # ErrorInfo reason of a failed call
    request_id: str | None = None  # what was sent to Glance as X-Openstack-Request-Id
    trace_id: str | None = None  # 32 hex digits, from the call's span or the caller's traceparent
    image_id: str | None = None  # the image the call was about, once known
    bytes_sent: int = 0  # image data bytes sent to the client (GetImage)
    bytes_received: int = 0  # image data bytes received from the client (AddImage)
    peer: str | None = None


_CURRENT: ContextVar[CallRecord | None] = ContextVar("gateway_call_record", default=None)


def current() -> CallRecord | None:
    return _CURRENT.get()


def bind(record: CallRecord | None) -> Token[CallRecord | None]:
    """Makes `record` the current call's; returns the token for `unbind`."""
    return _CURRENT.set(record)


def unbind(token: Token[CallRecord | None]) -> None:
    _CURRENT.reset(token)


def note_failure(code: str, reason: str) -> None:
    """The status a handler ends its call with: the access line keeps it even when the abort cannot reach the
    client any more (a stream already reset by a proxy), where grpc leaves the context without a code."""
    record = _CURRENT.get()
    if record is not None:
        record.code = code
        record.reason = reason


def note_request_id(request_id: str | None) -> None:
    record = _CURRENT.get()
    if record is not None:
        record.request_id = request_id


def note_image_id(image_id: str | None) -> None:
    """The first image id a call names is the one it is about (a clean-up afterwards names the same)."""
    record = _CURRENT.get()
    if record is not None and image_id and record.image_id is None:
        record.image_id = image_id


def add_bytes(*, sent: int = 0, received: int = 0) -> None:
    """Image data bytes moved, noted once per call (not per chunk)."""
    record = _CURRENT.get()
    if record is not None:
        record.bytes_sent += sent
        record.bytes_received += received


def trace_id() -> str | None:
    record = _CURRENT.get()
    return None if record is None else record.trace_id
