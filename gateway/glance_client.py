"""The one client for Glance's Images API v2: every upstream request goes through here."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import httpx

from gateway import call_record
from gateway.call_context import CallContext
from gateway.config import Settings
from gateway.errors import Failure, Operation, from_outcome
from gateway.glance_errors import error_from_response, remember_request_id, transport_errors
from gateway.glance_exchange import GlanceExchange
from gateway.glance_slots import ConnectionSlots
from gateway.http_transport import AiohttpTransport
from gateway.integrity import Chunk

log = logging.getLogger(__name__)

JSON_PATCH = "application/openstack-images-v2.1-json-patch"
USER_AGENT = "glance-grpc-gateway"

JsonObject = dict[str, Any]


@dataclass
class Download:
    """An open image data response; the body is read through `chunks`."""

    response: httpx.Response
    image_id: str

    @property
    def has_data(self) -> bool:
        # Glance answers 204 for an image without data (queued or saving).
        return self.response.status_code != 204

    async def chunks(self) -> AsyncIterator[bytes]:
        with transport_errors(Operation.DOWNLOAD, self.image_id):
            # The transport already reads chunk_size pieces; asking httpx to re-chunk would copy each one.
            async for chunk in self.response.aiter_raw():
                yield chunk


class GlanceClient:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        if transport is None:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=settings.glance_ca_file)
                if settings.glance_ca_file
                else True
            )
            transport = AiohttpTransport(
                verify=verify, max_connections=settings.max_connections, read_size=settings.chunk_size
            )
        # Requests go straight to the transport: httpx's client layer (cookie jar, auth and redirect flows,
        # URL merging) holds nothing the gateway wants (no redirects; no cookie may pass from one caller to
        # the next) and cost a third of the CPU of a metadata call (bench/NOTES.md).
        self._transport = transport
        self._base = settings.glance_base
        self._slots = ConnectionSlots(settings.max_connections, settings.read_timeout)

    @property
    def base(self) -> str:
        """The configured Glance URL (no trailing slash): every request goes below it."""
        return self._base

    async def __aenter__(self) -> GlanceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def list_images(self, params: list[tuple[str, str]], call: CallContext) -> JsonObject:
        return await self.request_json("GET", "/v2/images", Operation.LIST, call, params=params)

    async def show_image(self, image_id: str, call: CallContext) -> JsonObject:
        return await self.request_json(
            "GET", f"/v2/images/{image_id}", Operation.SHOW, call, image_id=image_id
        )

    async def create_image(self, body: JsonObject, call: CallContext) -> JsonObject:
        return await self.request_json("POST", "/v2/images", Operation.CREATE, call, json_body=body)

    async def update_image(self, image_id: str, patch: list[JsonObject], call: CallContext) -> JsonObject:
        return await self.request_json(
            "PATCH",
            f"/v2/images/{image_id}",
            Operation.UPDATE,
            call,
            image_id=image_id,
            content=json.dumps(patch).encode(),
            content_type=JSON_PATCH,
        )

    async def delete_image(self, image_id: str, call: CallContext) -> None:
        await self.send("DELETE", f"/v2/images/{image_id}", Operation.DELETE, call, image_id=image_id)

    async def add_tag(self, image_id: str, tag: str, call: CallContext) -> None:
        path = f"/v2/images/{image_id}/tags/{quote(tag, safe='')}"
        await self.send("PUT", path, Operation.ADD_TAG, call, image_id=image_id)

    async def remove_tag(self, image_id: str, tag: str, call: CallContext) -> None:
        path = f"/v2/images/{image_id}/tags/{quote(tag, safe='')}"
        await self.send("DELETE", path, Operation.REMOVE_TAG, call, image_id=image_id)

    async def stores(self, call: CallContext) -> list[JsonObject] | None:
        """Glance's stores as it describes them, or None when it has no multi-store support (404: one store,
        which has no id)."""
        response = await self.send("GET", "/v2/info/stores", Operation.STORES, call, accept_statuses=(404,))
        if response.status_code == 404:
            return None
        stores = _json_object(response, Operation.STORES).get("stores") or []
        return [store for store in stores if isinstance(store, dict)]

    async def reachable(self, within: float) -> bool | None:
        """Whether Glance answers at all, for the health service: any status below 500 to an unauthenticated
        GET /versions within `within` seconds. None when every connection is busy with calls: it cannot
        tell, and waiting for a connection would report an overloaded gateway as a dead Glance."""
        if self._slots.all_busy():
            return None
        await self._slots.acquire()
        request = httpx.Request(
            "GET",
            self._base + "/versions",
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            extensions={"timeout": httpx.Timeout(within).as_dict()},
        )
        try:
            async with asyncio.timeout(within):
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()  # a small body; read, the connection can serve the next probe
                finally:
                    await response.aclose()
        except (httpx.TransportError, TimeoutError):
            return False
        finally:
            self._slots.release()
        return response.status_code < 500

    async def upload(
        self,
        image_id: str,
        data: AsyncIterator[Chunk],
        size: int | None,
        store: str | None,
        call: CallContext,
        operation: Operation = Operation.UPLOAD,
    ) -> None:
        """PUTs image data: the image's own (UPLOAD, /file) or its staging area's (STAGE, /stage)."""
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            # A known length lets Glance reject a short body instead of storing it.
            headers["Content-Length"] = str(size)
            headers["x-openstack-image-size"] = str(size)
        if store:
            headers["X-Image-Meta-Store"] = store
        target = {Operation.UPLOAD: "file", Operation.STAGE: "stage"}[operation]
        request = self._request("PUT", f"/v2/images/{image_id}/{target}", call, headers=headers, content=data)
        await self._exchange(request, operation, call, image_id)

    @asynccontextmanager
    async def download(
        self, image_id: str, byte_range: tuple[int, int | None] | None, call: CallContext
    ) -> AsyncIterator[Download]:
        headers = {}
        if byte_range is not None:
            first, last = byte_range
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        call_record.note_image_id(image_id)
        request = self._request("GET", f"/v2/images/{image_id}/file", call, headers=headers)
        await self._take_slot(request, Operation.DOWNLOAD, call)
        try:
            with GlanceExchange(request, Operation.DOWNLOAD) as exchange:
                with transport_errors(Operation.DOWNLOAD, image_id):
                    response = await self._transport.handle_async_request(request)
                exchange.answered(response)
                try:
                    remember_request_id(response, call)
                    if response.status_code >= 400:
                        raise await error_from_response(response, Operation.DOWNLOAD, image_id, call)
                    yield Download(response, image_id)
                finally:
                    # Closing at once releases the upstream connection when the client cancels mid-stream.
                    await response.aclose()
        finally:
            self._slots.release()

    def _request(
        self,
        method: str,
        path: str,
        call: CallContext,
        *,
        headers: dict[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        content: bytes | AsyncIterator[Chunk] | None = None,
    ) -> httpx.Request:
        merged = call.headers()
        merged["User-Agent"] = USER_AGENT
        merged.update(headers or {})
        query: list[tuple[str, str | int | float | bool | None]] | None = list(params) if params else None
        return httpx.Request(
            method,
            self._base + path,
            headers=merged,
            params=query,
            # Upload chunks may be memoryviews (wire.parse_upload_message); httpx passes them through as they
            # are and aiohttp writes any buffer, though httpx's hints say bytes.
            content=cast("bytes | AsyncIterator[bytes] | None", content),
            extensions={"timeout": self._timeout(call).as_dict()},
        )

    async def _take_slot(self, request: httpx.Request, operation: Operation, call: CallContext) -> None:
        """Takes a connection slot (the caller releases it). A wait uses part of the deadline, so after one
        the request's timeouts are set again."""
        if await self._slots.take(operation, call):
            request.extensions["timeout"] = self._timeout(call).as_dict()

    def _timeout(self, call: CallContext) -> httpx.Timeout:
        read = self._settings.read_timeout
        connect = self._settings.connect_timeout
        time_remaining = call.time_remaining()
        if time_remaining is not None:
            remaining = max(time_remaining, 0.001)
            read, connect = min(read, remaining), min(connect, remaining)
        return httpx.Timeout(read, connect=connect)

    async def send(
        self,
        method: str,
        path: str,
        operation: Operation,
        call: CallContext,
        *,
        image_id: str | None = None,
        params: list[tuple[str, str]] | None = None,
        json_body: JsonObject | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        accept_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One request below the Glance URL with a small body (`json_body`, or `content` of `content_type`):
        the response, read and closed; a status of 400 or more (other than `accept_statuses`) raises its
        GatewayError. Path segments that come from callers must be validated or percent-encoded first."""
        headers: dict[str, str] = {}
        if json_body is not None:
            content = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        request = self._request(method, path, call, headers=headers, params=params, content=content)
        return await self._exchange(request, operation, call, image_id, accept_statuses)

    async def request_json(
        self,
        method: str,
        path: str,
        operation: Operation,
        call: CallContext,
        *,
        image_id: str | None = None,
        params: list[tuple[str, str]] | None = None,
        json_body: JsonObject | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> JsonObject:
        """One request as `send` whose answer is a JSON object: the object."""
        response = await self.send(
            method,
            path,
            operation,
            call,
            image_id=image_id,
            params=params,
            json_body=json_body,
            content=content,
            content_type=content_type,
        )
        return _json_object(response, operation)

    async def _exchange(
        self,
        request: httpx.Request,
        operation: Operation,
        call: CallContext,
        image_id: str | None,
        accept_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send a request with a bounded total time, read the whole (small) body, map failures."""
        call_record.note_image_id(image_id)
        await self._take_slot(request, operation, call)
        try:
            budget = call.time_remaining()
            with GlanceExchange(request, operation) as exchange, transport_errors(operation, image_id):
                try:
                    async with asyncio.timeout(budget):
                        response = await self._transport.handle_async_request(request)
                        exchange.answered(response)
                        try:
                            await response.aread()
                        finally:
                            await response.aclose()
                except TimeoutError:
                    raise from_outcome(
                        Failure.CLIENT_DEADLINE,
                        operation,
                        "the call's deadline passed while Glance was working",
                    ) from None
        finally:
            self._slots.release()
        remember_request_id(response, call)
        if response.status_code >= 400 and response.status_code not in accept_statuses:
            raise await error_from_response(response, operation, image_id, call)
        return response


def _json_object(response: httpx.Response, operation: Operation) -> JsonObject:
    try:
        body = response.json()
    except ValueError:
        raise from_outcome(500, operation, "Glance answered with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise from_outcome(500, operation, "Glance answered with JSON that is not an object")
    return body
