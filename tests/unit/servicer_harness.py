"""ImageService served in this process for the unit tests: the gRPC server gateway/server.py builds, on a
local port, in front of a Glance faked at the client's transport seam (GlanceClient(transport=...)), called
through a real channel and stub. Also what the tests share around it: a Glance that gives every request the
same answer, and a failed call's status with its ErrorInfo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.errors import ERROR_DOMAIN
from gateway.glance_client import GlanceClient
from gateway.health import HealthService
from gateway.server import main_server
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # the async stub's class exists only in the type stubs
    from generated.glance.gateway.v1.image_service_pb2_grpc import ImageServiceAsyncStub

    Stub: TypeAlias = ImageServiceAsyncStub  # what `serving` yields; for the tests' annotations

GLANCE = "http://glance.test"
GLANCE_REQUEST_ID = "req-11111111-2222-3333-4444-555555555555"
T = TypeVar("T")


@asynccontextmanager
async def serving(transport: httpx.AsyncBaseTransport, **settings: Any) -> AsyncIterator[Stub]:
    """A stub on a channel to ImageService, served as gateway/server.py serves it (its server, interceptors
    and options, on 127.0.0.1 and a free port) with the Glance client on `transport`. `settings` are
    Settings fields; glance_url defaults to GLANCE."""
    config = Settings(**{"glance_url": GLANCE, "port": 0, **settings})
    async with (
        GlanceClient(config, transport=transport) as client,
        Janitor(client) as janitor,
        main_server(config, client, janitor, HealthService(), None) as (_, port),
        grpc.aio.insecure_channel(f"{config.host}:{port}") as channel,
    ):
        yield pb_grpc.ImageServiceStub(channel)


def run(transport: httpx.AsyncBaseTransport, scenario: Callable[[Stub], Awaitable[T]], **settings: Any) -> T:
    """Runs `scenario` with a stub of the service `serving` serves, in an event loop of its own."""

    async def main() -> T:
        async with serving(transport, **settings) as stub:
            return await scenario(stub)

    return asyncio.run(main())


class Glance:
    """Answers every request with `status` and `body` (JSON when not bytes; none when None), with
    GLANCE_REQUEST_ID as its x-openstack-request-id, recording the requests."""

    def __init__(self, status: int, body: object = None) -> None:
        self.status = status
        self.body = body
        self.requests: list[httpx.Request] = []

    @classmethod
    def error(cls, status: int, message: str) -> Glance:
        """A failure the way Glance 33 sends it to a client that accepts JSON (HTML noise included)."""
        return cls(status, {"message": message + "<br /><br />\n\n\n", "code": f"{status} x", "title": "x"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"x-openstack-request-id": GLANCE_REQUEST_ID}
        if isinstance(self.body, bytes):
            return httpx.Response(self.status, content=self.body, headers=headers)
        if self.body is None:
            return httpx.Response(self.status, headers=headers)
        return httpx.Response(self.status, json=self.body, headers=headers)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


@dataclass
class Failed:
    """A failed call's status and the ErrorInfo every gateway failure carries."""

    code: grpc.StatusCode
    details: str
    reason: str
    metadata: dict[str, str]


async def failed_status(call: Any) -> Failed:
    """The status of a grpc.aio call that has failed, with its ErrorInfo."""
    status = await rpc_status.aio.from_call(call)
    assert status is not None, "every gateway failure carries a rich status"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == ERROR_DOMAIN
    return Failed(await call.code(), await call.details() or "", info.reason, dict(info.metadata))


async def failure(call: Any) -> Failed:
    """The status of a call that must fail (a stream's responses are read first), with its ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError):
        if hasattr(call, "read"):
            while await call.read() is not grpc.aio.EOF:
                pass
        else:
            await call
    return await failed_status(call)


@dataclass
class Outcome:
    """How one unary call ended."""

    response: Any  # None when the call failed
    failed: Failed | None  # None when it succeeded
    trailing: tuple[tuple[str, str | bytes], ...]  # the trailing metadata, as the client got it


Rpc = Callable[["Stub"], Any]  # stub -> the call of one unary RPC (a grpc.aio call, not yet awaited)


def call_rpc(glance: Glance, rpc: Rpc, **settings: Any) -> Outcome:
    """Serves the service in front of `glance` and makes the one call `rpc`, which may fail."""

    async def scenario(stub: Stub) -> Outcome:
        call = rpc(stub)
        try:
            response = await call
        except grpc.aio.AioRpcError:
            return Outcome(None, await failed_status(call), tuple(await call.trailing_metadata()))
        return Outcome(response, None, tuple(await call.trailing_metadata()))

    return run(glance.transport(), scenario, **settings)
