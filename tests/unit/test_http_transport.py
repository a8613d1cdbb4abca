"""aiohttp's failures become httpx's: the table covers every aiohttp exception, and real failures map."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import grpc
import httpx
import pytest

from gateway.errors import GatewayError, Operation
from gateway.glance_errors import transport_errors
from gateway.http_transport import FOREIGN_ERRORS, AiohttpTransport, httpx_error_for


def _aiohttp_client_errors() -> set[type[BaseException]]:
    """Every aiohttp.ClientError class: those aiohttp exports, and their subclasses wherever they live."""
    found: set[type[BaseException]] = set()
    todo = [
        value
        for name in aiohttp.__all__
        if inspect.isclass(value := getattr(aiohttp, name)) and issubclass(value, aiohttp.ClientError)
    ]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


CLIENT_ERRORS = sorted(_aiohttp_client_errors(), key=lambda cls: cls.__qualname__)


def test_the_walk_finds_aiohttp_exceptions() -> None:
    names = {cls.__name__ for cls in CLIENT_ERRORS}
    assert {"ClientError", "ClientConnectorError", "ConnectionTimeoutError", "ClientPayloadError"} <= names
    assert len(CLIENT_ERRORS) >= 25


@pytest.mark.parametrize("foreign", CLIENT_ERRORS, ids=lambda cls: cls.__name__)
def test_every_aiohttp_client_error_maps_to_an_httpx_transport_error(foreign: type[BaseException]) -> None:
    exc = foreign.__new__(foreign)  # the table looks at the class only; constructors differ per class
    ours = httpx_error_for(exc)
    assert ours is not None and issubclass(ours, httpx.TransportError), foreign


def test_no_row_is_shadowed_by_an_earlier_more_general_one() -> None:
    for index, (later, _) in enumerate(FOREIGN_ERRORS):
        for earlier, _ in FOREIGN_ERRORS[:index]:
            assert not issubclass(later, earlier), f"{later.__name__} comes after its base {earlier.__name__}"


@pytest.mark.parametrize(
    ("foreign", "ours"),
    [
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
        (aiohttp.ClientConnectorCertificateError, httpx.ConnectError),
        (aiohttp.ClientConnectorDNSError, httpx.ConnectError),
        (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
        (aiohttp.ClientConnectionResetError, httpx.WriteError),
        (aiohttp.ClientOSError, httpx.ReadError),
        (ConnectionResetError, httpx.ReadError),
    ],
)
def test_specific_classes_win_over_their_bases(foreign: type[BaseException], ours: type[Exception]) -> None:
    assert httpx_error_for(foreign.__new__(foreign)) is ours


MAPPED = sorted({ours for _, ours in FOREIGN_ERRORS}, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("ours", MAPPED, ids=lambda cls: cls.__name__)
def test_every_mapped_error_has_a_status_that_is_not_internal(ours: type[httpx.TransportError]) -> None:
    with pytest.raises(GatewayError) as caught, transport_errors(Operation.SHOW, None):
        raise ours("failed")
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_anything_else_is_not_the_tables_business() -> None:
    assert httpx_error_for(ValueError("a bug")) is None


# -- real failures through the transport, against a raw asyncio server --------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def _read_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def _request(url: str, read: float = 0.3) -> httpx.Request:
    timeout = httpx.Timeout(read, connect=0.3)
    return httpx.Request("GET", url + "/v2/images/x/file", extensions={"timeout": timeout.as_dict()})


async def _fetch(url: str) -> bytes:
    transport = AiohttpTransport(verify=False, max_connections=4, read_size=64 * 1024)
    try:
        response = await transport.handle_async_request(_request(url))
        try:
            return await response.aread()
        finally:
            await response.aclose()
    finally:
        await transport.aclose()


def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await asyncio.sleep(5)

    async def scenario() -> None:
        async with raw_server(silent) as url:
            with pytest.raises(httpx.ReadTimeout):
                await _fetch(url)

    asyncio.run(scenario())


def test_a_body_cut_short_is_a_remote_protocol_error() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with raw_server(short) as url:
            with pytest.raises(httpx.RemoteProtocolError):
                await _fetch(url)

    asyncio.run(scenario())


def test_a_closed_port_is_a_connect_error() -> None:
    async def scenario() -> None:
        async def answer_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        async with raw_server(answer_nothing) as url:
            pass  # closed again: nothing listens there now
        with pytest.raises(httpx.ConnectError):
            await _fetch(url)

    asyncio.run(scenario())
