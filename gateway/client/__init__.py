"""A Python client for glance-grpc-gateway with the classic Glance client's API.

    from gateway.client import Client

    with Client("localhost", 50051, token=token) as c:
        for image in c.get_images():
            meta, chunks = c.get_image(image["uri"])

It needs only grpcio, protobuf and the generated stubs: importing it loads none of the server's modules.
"""

from .aio import AsyncClient
from .errors import (
    ERRORS,
    BadRequest,
    ClientError,
    Conflict,
    DataCorrupt,
    Duplicate,
    Forbidden,
    InternalError,
    InvalidState,
    LimitExceeded,
    NotAuthorized,
    NotFound,
    RangeNotSatisfiable,
    ServiceUnavailable,
    Timeout,
)
from .sync import Client

__all__ = [
    "ERRORS",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "DataCorrupt",
    "Duplicate",
    "Forbidden",
    "InternalError",
    "InvalidState",
    "LimitExceeded",
    "NotAuthorized",
    "NotFound",
    "RangeNotSatisfiable",
    "ServiceUnavailable",
    "Timeout",
]
