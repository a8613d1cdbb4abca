"""Helpers for the integration tests: the gateway as a subprocess, Glance over plain HTTP, error details.

Fixtures that use these live in tests/conftest.py; test modules import the helpers from here.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from harness import glance_rest
from harness.data import pseudo_random_chunks as pseudo_random_chunks
from harness.glance_rest import OPENER as OPENER
from harness.glance_rest import glance_image as glance_image
from harness.glance_rest import http as http
from harness.process import GatewayProcess as GatewayProcess
from harness.process import peak_rss_bytes as peak_rss_bytes
from harness.process import upstream_connections as upstream_connections

KIB = 1024
MIB = 1024 * KIB
ERROR_DOMAIN = "glance-grpc-gateway"
# gRPC honours http_proxy too; the gateway is on loopback.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]

JsonObject = dict[str, Any]
# gRPC call metadata: (key, value) pairs, e.g. Identities.metadata(project, role).
Metadata = tuple[tuple[str, str], ...]


# -- small things ------------------------------------------------------------


def unique_name(prefix: str = "it") -> str:
    """A name no other test (or earlier run) uses, so listings by name see only this test's images."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_id() -> str:
    """A fresh image id: Glance never lets a deleted image's id be used again."""
    return str(uuid.uuid4())


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def sha512_hex(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def wait_until(predicate: Callable[[], bool], timeout: float, message: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(interval)


# -- gRPC --------------------------------------------------------------------


def open_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def add_requests(spec: pb.ImageSpec, chunks: Iterable[bytes] = ()) -> Iterator[pb.AddImageRequest]:
    """An AddImage stream: the spec, then the data chunks."""
    yield pb.AddImageRequest(spec=spec)
    for chunk in chunks:
        yield pb.AddImageRequest(data=chunk)


def download(
    stub: pb_grpc.ImageServiceStub,
    request: pb.GetImageRequest,
    timeout: float = 60.0,
    metadata: Metadata = (),
) -> tuple[pb.DownloadHeader, bytes]:
    """A whole GetImage call (with `metadata`, e.g. a token): its header and the data that followed (for
    small images only)."""
    responses = iter(stub.GetImage(request, timeout=timeout, metadata=metadata))
    first = next(responses)
    assert first.WhichOneof("content") == "header", "the first GetImage message must be the header"
    data = bytearray()
    for message in responses:
        assert message.WhichOneof("content") == "data", "only the first GetImage message is a header"
        data += message.data
    return first.header, bytes(data)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The google.rpc.ErrorInfo detail of a failed call (every gateway error carries one)."""
    assert isinstance(err, grpc.Call), f"not a call error: {err!r}"
    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status (grpc-status-details-bin) on {err.code()}: {err.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo among the details of {err.code()}: {err.details()}")


def expect_error(
    call: Callable[[], object],
    code: grpc.StatusCode,
    reason: str,
    glance_status: int | None,
    image_id: str | None = None,
) -> str:
    """Runs `call`, which must fail so (see assert_error); the status message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert_error(caught.value, code, reason, glance_status=glance_status, image_id=image_id)
    assert isinstance(caught.value, grpc.Call)
    return caught.value.details() or ""


def assert_error(
    err: grpc.RpcError,
    code: grpc.StatusCode,
    reason: str,
    *,
    glance_status: int | None = None,
    image_id: str | None = None,
) -> error_details_pb2.ErrorInfo:
    """Checks the status code and ErrorInfo; `glance_status` for failures Glance itself reported."""
    assert isinstance(err, grpc.Call)
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
    info = error_info(err)
    assert info.domain == ERROR_DOMAIN
    assert info.reason == reason, f"expected reason {reason}, got {info.reason}: {err.details()}"
    if glance_status is not None:
        assert info.metadata["glance_status"] == str(glance_status)
        # Glance gives every /v2 response an id req-<uuid4>; the gateway passes it on.
        assert re.fullmatch(r"req-[0-9a-f-]{36}", info.metadata["request_id"]), dict(info.metadata)
    if image_id is not None:
        assert info.metadata["image_id"] == image_id
    # Messages are cleaned of Glance's HTML noise and never carry a traceback.
    details = err.details() or ""
    assert "<br" not in details and "Traceback" not in details, details
    return info


# -- Glance over plain HTTP (to check what the gateway did, and to clean up) --


def glance_list(glance_url: str, **params: str) -> list[JsonObject]:
    query = urllib.parse.urlencode({"limit": "1000", **params})
    status, raw = http("GET", f"{glance_url}/v2/images?{query}")
    assert status == 200, raw
    images: list[JsonObject] = json.loads(raw)["images"]
    return images


def force_delete(glance_url: str, image_id: str, timeout: float = 10.0) -> None:
    """Deletes an image straight in Glance, unprotecting it first if needed; a missing image is fine."""
    if not glance_rest.force_delete(glance_url, image_id, timeout):
        raise AssertionError(f"could not delete image {image_id} in Glance")


# -- images made through the gateway, always cleaned up ----------------------


class ImageTracker:
    """`new_image(...)`: adds an image through the gateway and deletes it (straight in Glance) at teardown.

    Every image gets a fresh uuid4 id chosen here, so even an AddImage that fails half way is cleaned up.
    """

    def __init__(self, stub: pb_grpc.ImageServiceStub, glance_url: str) -> None:
        self.stub = stub
        self.glance_url = glance_url
        self.ids: list[str] = []

    def __call__(
        self,
        name: str | None = None,
        data: bytes | None = None,
        *,
        chunk_size: int = 64 * KIB,
        **fields: Any,
    ) -> pb.Image:
        spec = pb.ImageSpec(name=name or unique_name(), **fields)
        if not spec.id:
            spec.id = new_id()
        if data is not None and not spec.type and not spec.disk_format:
            spec.type = pb.IMAGE_TYPE_RAW
        self.track(spec.id)
        chunks = [] if data is None else chunks_of(data, chunk_size)
        response: pb.AddImageResponse = self.stub.AddImage(add_requests(spec, chunks), timeout=60)
        assert response.image.id == spec.id
        return response.image

    def track(self, image_id: str) -> None:
        self.ids.append(image_id)

    def cleanup(self) -> None:
        for image_id in self.ids:
            force_delete(self.glance_url, image_id)
        self.ids.clear()


# -- the gateway as a real process -------------------------------------------


# The start_gateway fixture: start_gateway(glance_url, *extra_args, log_level="INFO") -> GatewayProcess.
StartGateway = Callable[..., GatewayProcess]


def start_refused(glance_url: str, *extra_args: str) -> GatewayProcess:
    """Starts a gateway that must fail to start; returns it, ended (stopped even when it did start, so a
    failing test leaves no process behind), for its exit code and log."""
    process = GatewayProcess(glance_url, *extra_args)
    try:
        process.start()
    except RuntimeError:
        return process
    finally:
        process.stop()
    raise AssertionError(f"the gateway started: {process.args}")


# -- a fake Glance, only for outcomes a real Glance cannot be made to produce --


class LoopbackHttpServer:
    """`with Server() as server:` a ThreadingHTTPServer on 127.0.0.1 (`port`, else a free one) serving
    `handler` on a thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str, port: int = 0) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class FakeGlance(LoopbackHttpServer):
    """A tiny HTTP server that serves images' metadata and (possibly broken) data streams, like Glance.

    A real Glance cannot be made to corrupt data or cut a download short on demand, which is why the tests
    of those outcomes (DATA_LOSS, a broken upstream mid-stream) use this instead. It also records every
    request (path and headers), to show what the gateway sent, or that it never fetched something.

    `add(data, mode, hash_algo)` registers an image. `mode`: "intact" serves the true data; "corrupt"
    flips one byte; "short" sends half of the announced Content-Length then closes; "reset" sends half
    then resets the connection (RST); "unframed" sends half with no Content-Length (the close ends the
    body, so it looks complete at the HTTP level). `hash_algo`: "sha512" publishes os_hash_algo and
    os_hash_value; "md5" only the legacy checksum.
    """

    def __init__(self) -> None:
        self.images: dict[str, tuple[bytes, str, str]] = {}
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []  # of each request, names lower-cased
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                fake.headers.append({key.lower(): value for key, value in self.headers.items()})
                parts = self.path.split("/")  # "", "v2", "images", id[, "file"]
                image_id = parts[3] if len(parts) > 3 and parts[1:3] == ["v2", "images"] else ""
                if image_id in fake.images and len(parts) == 4:
                    self._json(fake.image_json(image_id))
                elif image_id in fake.images and len(parts) == 5 and parts[4] == "file":
                    fake.serve_file(self, image_id)
                else:
                    self._json({"message": "No image found", "code": "404 Not Found"}, status=404)

            def _json(self, body: JsonObject, status: int = 200) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("x-openstack-request-id", f"req-{uuid.uuid4()}")
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler, "fake-glance")

    def headers_for(self, path: str, since: int = 0) -> list[dict[str, str]]:
        """The headers of the requests for `path`, from the `since`-th request on (the gateway's start-up
        sweep lists images at its own moment)."""
        pairs = zip(self.requests[since:], self.headers[since:], strict=True)
        return [headers for requested, headers in pairs if requested == path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, data: bytes, mode: str = "intact", hash_algo: str = "sha512") -> str:
        assert mode in ("intact", "corrupt", "short", "reset", "unframed")
        image_id = new_id()
        self.images[image_id] = (data, mode, hash_algo)
        return image_id

    def image_json(self, image_id: str) -> JsonObject:
        data, _, hash_algo = self.images[image_id]
        sha512 = hashlib.sha512(data).hexdigest() if hash_algo == "sha512" else None
        return {
            "id": image_id, "name": "fake", "status": "active", "visibility": "private",
            "size": len(data), "virtual_size": len(data), "disk_format": "raw",
            "container_format": "bare", "checksum": hashlib.md5(data).hexdigest(),
            "os_hash_algo": "sha512" if sha512 else None, "os_hash_value": sha512, "protected": False,
            "min_ram": 0, "min_disk": 0, "owner": None, "os_hidden": False, "tags": [], "stores": "file",
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
            "self": f"/v2/images/{image_id}", "file": f"/v2/images/{image_id}/file",
            "schema": "/v2/schemas/image",
        }  # fmt: skip

    def serve_file(self, handler: BaseHTTPRequestHandler, image_id: str) -> None:
        data, mode, _ = self.images[image_id]
        body = data
        if mode == "corrupt":
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        if mode != "unframed":
            handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        if mode in ("intact", "corrupt"):
            handler.wfile.write(body)
            return
        handler.wfile.write(body[: len(body) // 2])
        if mode == "reset":
            # SO_LINGER 0 turns close() into a TCP RST: a connection reset mid-body.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
