"""What the gateway observes of each request it sends Glance: the duration metric and the CLIENT span."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

import httpx
from opentelemetry.trace import Span, Status, StatusCode

from gateway import metrics, tracing
from gateway.call_context import REQUEST_ID_HEADER
from gateway.errors import GatewayError, Operation

# Each operation's path with the image id left out: span names (and url.template) stay a handful.
_URL_TEMPLATES = {
    Operation.LIST: "/v2/images",
    Operation.SHOW: "/v2/images/{image_id}",
    Operation.CREATE: "/v2/images",
    Operation.UPLOAD: "/v2/images/{image_id}/file",
    Operation.DOWNLOAD: "/v2/images/{image_id}/file",
    Operation.UPDATE: "/v2/images/{image_id}",
    Operation.DELETE: "/v2/images/{image_id}",
    Operation.STORES: "/v2/info/stores",
    Operation.ADD_TAG: "/v2/images/{image_id}/tags/{tag}",
    Operation.REMOVE_TAG: "/v2/images/{image_id}/tags/{tag}",
    Operation.CREATE_MEMBER: "/v2/images/{image_id}/members",
    Operation.LIST_MEMBERS: "/v2/images/{image_id}/members",
    Operation.SHOW_MEMBER: "/v2/images/{image_id}/members/{member_id}",
    Operation.UPDATE_MEMBER: "/v2/images/{image_id}/members/{member_id}",
    Operation.DELETE_MEMBER: "/v2/images/{image_id}/members/{member_id}",
    Operation.DELETE_FROM_STORE: "/v2/stores/{store_id}/{image_id}",
    Operation.STAGE: "/v2/images/{image_id}/stage",
    Operation.IMPORT: "/v2/images/{image_id}/import",
    Operation.DEACTIVATE: "/v2/images/{image_id}/actions/deactivate",
    Operation.REACTIVATE: "/v2/images/{image_id}/actions/reactivate",
    Operation.USAGE: "/v2/info/usage",
}


class GlanceExchange:
    """`with GlanceExchange(request, operation) as exchange:` around one request to Glance, from sending it to
    closing its response: the duration metric, and a CLIENT span (when tracing is on) whose traceparent goes
    out with the request. The one place where both are made, for every request the gateway sends Glance."""

    __slots__ = ("_operation", "_span", "_started", "status")

    def __init__(self, request: httpx.Request, operation: Operation) -> None:
        self._operation = operation
        self.status: int | None = None
        self._span: Span | None = None
        if tracing.ENABLED:
            template = _URL_TEMPLATES[operation]
            url = request.url
            # Never headers: they carry the caller's token.
            self._span = tracing.client_span(
                f"{request.method} {template}",
                {
                    "http.request.method": request.method,
                    "url.full": str(url),
                    "url.template": template,
                    "server.address": url.host,
                    "server.port": url.port or (443 if url.scheme == "https" else 80),
                    "glance_gateway.operation": operation.value,
                },
            )
            tracing.inject(self._span, request.headers)
        self._started = time.perf_counter()

    def __enter__(self) -> GlanceExchange:
        return self

    def answered(self, response: httpx.Response) -> None:
        self.status = response.status_code
        if self._span is not None:
            self._span.set_attribute("http.response.status_code", response.status_code)
            request_id = response.headers.get(REQUEST_ID_HEADER)
            if request_id:
                self._span.set_attribute(f"http.response.header.{REQUEST_ID_HEADER}", (request_id,))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.status is not None:
            label = str(self.status)
        else:
            label = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        seconds = time.perf_counter() - self._started
        metrics.observe_glance_request(self._operation.value, label, seconds)
        span = self._span
        if span is None:
            return
        if self.status is not None and self.status >= 400:
            span.set_attribute("error.type", label)
            span.set_status(Status(StatusCode.ERROR))
        elif exc is not None and not isinstance(exc, asyncio.CancelledError):
            span.set_attribute(
                "error.type", exc.reason if isinstance(exc, GatewayError) else type(exc).__name__
            )
            span.set_status(Status(StatusCode.ERROR))
        span.end()
