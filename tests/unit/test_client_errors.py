"""The client's exception table: every gRPC status code has a class, named as the classic client named it."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

import gateway.client as client
from gateway.client.errors import ERRORS, ClientError, InternalError, from_rpc_error


def test_every_status_code_maps_to_a_client_error() -> None:
    for code in grpc.StatusCode:
        assert issubclass(ERRORS[code], ClientError), code


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, client.BadRequest),
        (grpc.StatusCode.UNAUTHENTICATED, client.NotAuthorized),
        (grpc.StatusCode.PERMISSION_DENIED, client.Forbidden),
        (grpc.StatusCode.NOT_FOUND, client.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, client.Duplicate),
        (grpc.StatusCode.FAILED_PRECONDITION, client.InvalidState),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, client.LimitExceeded),
        (grpc.StatusCode.UNAVAILABLE, client.ServiceUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, client.Timeout),
        (grpc.StatusCode.DATA_LOSS, client.DataCorrupt),
        (grpc.StatusCode.OUT_OF_RANGE, client.RangeNotSatisfiable),
        (grpc.StatusCode.INTERNAL, client.InternalError),
        (grpc.StatusCode.UNKNOWN, client.InternalError),
        (grpc.StatusCode.UNIMPLEMENTED, client.InternalError),
    ],
)
def test_code_to_class(code: grpc.StatusCode, cls: type[ClientError]) -> None:
    assert ERRORS[code] is cls


def test_conflict_is_invalid_state() -> None:
    assert client.Conflict is client.InvalidState


class FakeCallError(grpc.RpcError, grpc.Call):
    """A failed call as grpc raises it, without gateway details (no ErrorInfo)."""

    def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._trailers = code, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "went wrong"

    def trailing_metadata(self) -> Any:
        return self._trailers

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_error_without_error_info_takes_the_request_id_from_the_trailers() -> None:
    error = from_rpc_error(FakeCallError(grpc.StatusCode.ABORTED, (("x-openstack-request-id", "req-7"),)))
    assert type(error) is InternalError
    assert (error.code, error.reason, error.request_id, error.details) == (
        grpc.StatusCode.ABORTED,
        "",
        "req-7",
        "went wrong",
    )
    assert str(error) == "ABORTED: went wrong"
