import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from gateway.call_context import CallContext
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.glance_client import GlanceClient
from gateway.glance_errors import error_message


def test_headers_forward_token_and_request_id() -> None:
    call = CallContext(token="tok", request_id="req-1")
    assert call.headers() == {
        "Accept": "application/json",
        "X-Auth-Token": "tok",
        "X-Openstack-Request-Id": "req-1",
    }


def test_headers_without_caller_identity_ask_for_json_only() -> None:
    assert CallContext().headers() == {"Accept": "application/json"}


def test_time_remaining_follows_the_deadline() -> None:
    assert CallContext().time_remaining() is None
    remaining = CallContext(deadline=time.monotonic() + 5).time_remaining()
    assert remaining is not None and 4 < remaining <= 5


def test_clean_up_context_keeps_identity_drops_deadline() -> None:
    call = CallContext(token="t", request_id="r", deadline=time.monotonic())
    clean_up = call.without_deadline()
    assert (clean_up.token, clean_up.request_id, clean_up.deadline) == ("t", "r", None)
    clean_up.glance_request_ids.append("req-x")
    assert call.glance_request_ids == ["req-x"]


def test_error_messages_from_json_html_and_empty_bodies() -> None:
    json_body = b'{"message": "No image found with ID x<br /><br />\\n\\n\\n", "code": "404 Not Found"}'
    assert error_message(json_body, 404) == "No image found with ID x"
    html = b"<html><head><title>409 Conflict</title></head><body>Image ID x already exists!<br /><br />"
    assert "Image ID x already exists!" in error_message(html, 409)
    assert error_message(b"", 503) == "Glance answered HTTP 503"


# -- waiting for one of the max_connections upstream connections --------------------------------------
# A raw asyncio server stands in for Glance: metadata at once, image data that starts and then waits, so an
# open download holds its connection for as long as the test keeps it open.

IMAGE_JSON = b'{"id": "x", "status": "active", "size": 1000}'


async def _glance_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/v2/images/missing"):
                body = b'{"message": "No image found"}'
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            elif path.endswith(b"/file"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
                await writer.drain()
                await reader.read()  # until the gateway closes the download
                break
            else:
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(IMAGE_JSON)
                writer.write(head + IMAGE_JSON)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def _with_glance(test: Callable[[GlanceClient], Awaitable[None]], **settings: Any) -> None:
    server = await asyncio.start_server(_glance_like, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    glance = GlanceClient(Settings(glance_url=url, max_connections=1, **settings))
    try:
        await test(glance)
    finally:
        await glance.aclose()
        server.close()


def _deadline(seconds: float) -> CallContext:
    return CallContext(deadline=time.monotonic() + seconds)


def test_a_deadline_passing_while_every_connection_is_busy_is_gateway_busy() -> None:
    async def test(glance: GlanceClient) -> None:
        async with glance.download("x", None, CallContext()):
            started = time.monotonic()
            with pytest.raises(GatewayError) as caught:
                await glance.show_image("x", _deadline(0.3))
            assert time.monotonic() - started < 2
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "GATEWAY_BUSY")
        assert "nothing was sent" in caught.value.message

    asyncio.run(_with_glance(test))


def test_without_a_nearer_deadline_the_wait_ends_after_the_read_timeout_as_unavailable() -> None:
    async def test(glance: GlanceClient) -> None:
        async with glance.download("x", None, CallContext()):
            with pytest.raises(GatewayError) as caught:
                await glance.show_image("x", _deadline(30))
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "GATEWAY_BUSY")

    asyncio.run(_with_glance(test, read_timeout=0.3))


def test_a_waiting_call_goes_on_when_a_connection_frees_up() -> None:
    async def test(glance: GlanceClient) -> None:
        async with glance.download("x", None, CallContext()):
            waiting = asyncio.create_task(glance.show_image("x", _deadline(5)))
            await asyncio.sleep(0.1)
            assert not waiting.done()
        assert (await waiting)["id"] == "x"

    asyncio.run(_with_glance(test))


def test_failed_and_cancelled_calls_give_their_connection_back() -> None:
    async def test(glance: GlanceClient) -> None:
        for _ in range(3):
            with pytest.raises(GatewayError):
                await glance.show_image("missing", CallContext())
            with pytest.raises(GatewayError):
                async with glance.download("missing", None, CallContext()):
                    pass
            holder = asyncio.create_task(glance.show_image("x", CallContext()))
            holder.cancel()
            with pytest.raises(asyncio.CancelledError):
                await holder
        # With max_connections=1, a leaked slot would make this wait and fail.
        assert (await glance.show_image("x", _deadline(1)))["id"] == "x"

    asyncio.run(_with_glance(test))
