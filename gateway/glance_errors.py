"""Glance's failures as GatewayErrors: error responses (status and message) and broken exchanges."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from gateway.call_context import REQUEST_ID_HEADER, CallContext
from gateway.errors import Failure, GatewayError, Operation, clean_glance_message, from_outcome

log = logging.getLogger(__name__)

# Error bodies are short; never read more than this of one.
MAX_ERROR_BODY = 64 * 1024


def remember_request_id(response: httpx.Response, call: CallContext) -> None:
    request_id = response.headers.get(REQUEST_ID_HEADER)
    if request_id:
        call.glance_request_ids.append(request_id)


async def error_from_response(
    response: httpx.Response, operation: Operation, image_id: str | None, call: CallContext
) -> GatewayError:
    raw = b""
    async for part in response.aiter_bytes():
        raw += part
        if len(raw) >= MAX_ERROR_BODY:
            break
    message = error_message(raw[:MAX_ERROR_BODY], response.status_code)
    metadata = {"image_id": image_id or "", "request_id": response.headers.get(REQUEST_ID_HEADER, "")}
    # DEBUG: the call's access line gives its outcome once, at INFO; one line per failed call is enough.
    log.debug("glance %s answered %s: %s", operation.value, response.status_code, message)
    return from_outcome(response.status_code, operation, message, metadata)


def error_message(raw: bytes, status: int) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        # Glance's JSON errors: {"message": ..., "code": "404 Not Found", "title": ...}
        text = str(body.get("message") or body.get("title") or "")
    message = clean_glance_message(text)
    return message or f"Glance answered HTTP {status}"


@contextmanager
def transport_errors(operation: Operation, image_id: str | None) -> Iterator[None]:
    """Network-level failures talking to Glance, through the same table as HTTP statuses."""
    metadata = {"image_id": image_id or ""}
    try:
        yield
    except httpx.TimeoutException as exc:
        raise from_outcome(
            Failure.UPSTREAM_TIMEOUT,
            operation,
            f"Glance did not answer in time ({type(exc).__name__})",
            metadata,
        ) from None
    except httpx.ConnectError:
        raise from_outcome(Failure.CONNECT_ERROR, operation, "cannot connect to Glance", metadata) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.NetworkError) as exc:
        raise from_outcome(
            Failure.UPSTREAM_BROKEN,
            operation,
            f"the connection to Glance broke ({type(exc).__name__})",
            metadata,
        ) from None
