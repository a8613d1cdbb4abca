"""httpx's API on aiohttp's HTTP/1.1 engine.

The gateway speaks httpx everywhere; this transport only swaps the engine underneath. Measured on the same
machine and upstream (bench/NOTES.md): aiohttp reads a response body about four times faster than httpcore,
and holds up under many concurrent calls where httpcore's pool falls behind.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one aiohttp session (made on first use, inside the running loop)."""

    def __init__(self, *, verify: ssl.SSLContext | bool, max_connections: int, read_size: int) -> None:
        self._ssl: ssl.SSLContext | bool = verify
        self._max_connections = max_connections
        self._read_size = read_size
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Only ever the configured Glance: no proxies or netrc from the environment.
                trust_env=False,
                auto_decompress=False,
                read_bufsize=self._read_size,
                # httpx has already set every header the request needs.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "transfer-encoding"]
        body: bytes | _StreamedBody | None
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            # A streamed body (an upload); aiohttp frames it by Content-Length, or chunked without one.
            stream = request.stream
            body = _StreamedBody(stream) if isinstance(stream, httpx.AsyncByteStream) else None
        try:
            with _as_httpx_errors():
                response = await self._client().request(
                    request.method,
                    str(request.url),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        # Waiting for a free pooled connection is bounded too, as in httpx's own pool.
                        connect=timeout.get("pool"),
                        sock_connect=timeout.get("connect"),
                        sock_read=timeout.get("read"),
                    ),
                )
        except httpx.TransportError:
            # aiohttp reports a failing body source as a broken connection; the caller needs the real cause
            # (a client's upload that failed its size or digest check).
            if isinstance(body, _StreamedBody) and body.error is not None:
                raise body.error from None
            raise
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseBody(response, self._read_size),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _StreamedBody:
    """An upload's body as aiohttp consumes it, remembering why its source failed, if it did."""

    def __init__(self, source: httpx.AsyncByteStream) -> None:
        self._source = source
        self.error: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._source:
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, read_size: int) -> None:
        self._response = response
        self._read_size = read_size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            while chunk := await self._response.content.read(self._read_size):
                yield chunk

    async def aclose(self) -> None:
        # A body read to the end returns its connection to the pool; one abandoned midway (a client's cancel)
        # closes it, so Glance stops sending at once.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


# aiohttp's exceptions as the httpx ones the Glance client maps to gRPC statuses, as httpx maps httpcore's
# (httpx/_transports/default.py). The first row whose class the exception is an instance of wins, so a class
# comes before its bases; tests/unit/test_http_transport.py checks that every aiohttp.ClientError maps.
FOREIGN_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # Timeouts: ConnectionTimeoutError is the `connect` bound (getting a pooled connection, or connecting),
    # SocketTimeoutError the `sock_read` bound (Glance silent).
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    # Never reached Glance: DNS, refused, TLS handshake and certificate, proxy, a URL it cannot use.
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerFingerprintMismatch, httpx.ConnectError),
    (aiohttp.InvalidURL, httpx.ConnectError),
    (aiohttp.NonHttpUrlClientError, httpx.ConnectError),
    # Glance's side broke the exchange.
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.RedirectClientError, httpx.RemoteProtocolError),
    # Sending the request body failed.
    (aiohttp.UploadAbortedError, httpx.WriteError),
    (aiohttp.ClientConnectionResetError, httpx.WriteError),
    # Anything else on the connection, including plain OSErrors from the socket.
    (aiohttp.ClientError, httpx.ReadError),
    (OSError, httpx.ReadError),
)


def httpx_error_for(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx exception class standing for an aiohttp (or socket) failure, or None for anything else."""
    for foreign, ours in FOREIGN_ERRORS:
        if isinstance(exc, foreign):
            return ours
    return None


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """aiohttp's failures as the httpx exceptions the Glance client maps to gRPC statuses."""
    try:
        yield
    except (aiohttp.ClientError, OSError) as exc:
        ours = httpx_error_for(exc)
        assert ours is not None  # the table ends with both of these classes
        raise ours(str(exc)) from exc
