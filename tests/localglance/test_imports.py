"""Glance's interoperable image import on the local Glance: web-download from a loopback HTTP server,
glance-direct (stage, then import) and copy-image, over plain REST.

web-download only reaches 127.0.0.1 on the port GlanceServer.web_port names (plus 80 and 443):
`[import_filtering_opts]` in localglance/config.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from localglance import GlanceServer, Identities  # noqa: E402
from localglance.config import AUTH_MODES, GlanceConfig, KeystoneAuth, render_api_conf  # noqa: E402
from localglance.ports import free_port  # noqa: E402

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
IMPORT_TIMEOUT = 60.0


def request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=30) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Glance:
    """Plain REST calls to one Glance, with a token when it runs in keystone mode."""

    def __init__(self, server: GlanceServer, token: str | None = None) -> None:
        self.url = server.url
        self.auth = {"X-Auth-Token": token} if token else {}
        self.created: list[str] = []

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        status, raw = request(method, f"{self.url}{path}", data, {"Content-Type": content_type, **self.auth})
        return status, (json.loads(raw) if raw and raw.startswith(b"{") else raw)

    def create(self) -> str:
        body = {"name": "import-test", "disk_format": "raw", "container_format": "bare"}
        status, image = self.call("POST", "/v2/images", body)
        assert status == 201, image
        self.created.append(image["id"])
        return str(image["id"])

    def start_import(self, image_id: str, method: dict[str, str], **extra: Any) -> tuple[int, Any]:
        status, answer = self.call("POST", f"/v2/images/{image_id}/import", {"method": method, **extra})
        return int(status), answer

    def wait(self, image_id: str, done: str = "active", store: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + IMPORT_TIMEOUT
        while True:
            status, image = self.call("GET", f"/v2/images/{image_id}")
            assert status == 200, image
            # A failed import leaves the image queued and names the stores it failed for.
            assert not image.get("os_glance_failed_import"), image
            stores = (image.get("stores") or "").split(",")
            # The import's lock goes last, a little after the image turns active; another import
            # before then is 409 "Image has active task".
            locked = "os_glance_import_task" in image
            if image["status"] == done and (store is None or store in stores) and not locked:
                return dict(image)
            assert time.monotonic() < deadline, f"import not done after {IMPORT_TIMEOUT} s: {image}"
            time.sleep(0.1)

    def tasks(self, image_id: str) -> list[dict[str, Any]]:
        status, answer = self.call("GET", f"/v2/images/{image_id}/tasks")
        assert status == 200, answer
        tasks: list[dict[str, Any]] = answer["tasks"]
        return tasks

    def data(self, image_id: str) -> bytes:
        status, raw = request("GET", f"{self.url}/v2/images/{image_id}/file", headers=self.auth)
        assert status == 200
        return raw

    def cleanup(self) -> None:
        for image_id in self.created:
            status, raw = self.call("DELETE", f"/v2/images/{image_id}")
            assert status in (204, 404), raw


class WebServer:
    """Serves `files` on 127.0.0.1:port on a thread for web-download to fetch; records the paths asked for."""

    def __init__(self, port: int, files: dict[str, bytes]) -> None:
        self.requested: list[str] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                web.requested.append(self.path)
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def noauth(glance: GlanceServer) -> Iterator[Glance]:
    client = Glance(glance)
    yield client
    client.cleanup()


@pytest.fixture
def web(glance: GlanceServer) -> Iterator[tuple[WebServer, bytes]]:
    data = os.urandom(150_000)
    server = WebServer(glance.web_port, {"/img.raw": data})
    yield server, data
    server.close()


def assert_is(image: dict[str, Any], data: bytes) -> None:
    assert image["size"] == len(data)
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()


def test_web_download_from_the_loopback_web_port(
    glance: GlanceServer, noauth: Glance, web: tuple[WebServer, bytes]
) -> None:
    server, data = web
    image_id = noauth.create()
    uri = f"http://127.0.0.1:{glance.web_port}/img.raw"
    status, answer = noauth.start_import(image_id, {"name": "web-download", "uri": uri})
    assert status == 202, answer
    image = noauth.wait(image_id)
    assert_is(image, data)
    assert noauth.data(image_id) == data
    assert server.requested == ["/img.raw"]


def test_web_download_refuses_other_ports_and_host_names(glance: GlanceServer, noauth: Glance) -> None:
    image_id = noauth.create()
    for uri in (f"http://127.0.0.1:{free_port()}/img.raw", f"http://localhost:{glance.web_port}/img.raw"):
        status, answer = noauth.start_import(image_id, {"name": "web-download", "uri": uri})
        assert status == 400, answer
        assert b"does not pass filtering" in answer


def test_glance_direct_then_copy_image(noauth: Glance) -> None:
    data = os.urandom(70_000)
    image_id = noauth.create()
    status, answer = noauth.start_import(image_id, {"name": "glance-direct"})
    assert status == 409, answer  # nothing staged yet
    status, answer = noauth.call("PUT", f"/v2/images/{image_id}/stage", data, "application/octet-stream")
    assert status == 204, answer
    status, answer = noauth.start_import(image_id, {"name": "glance-direct"})
    assert status == 202, answer
    image = noauth.wait(image_id)
    assert_is(image, data)
    assert image["stores"] == "file"
    assert [task["status"] for task in noauth.tasks(image_id)] == ["success"]
    # copy-image needs an admin: everyone is one in noauth mode.
    status, answer = noauth.start_import(image_id, {"name": "copy-image"}, stores=["file2"])
    assert status == 202, answer
    image = noauth.wait(image_id, store="file2")
    assert sorted(image["stores"].split(",")) == ["file", "file2"]
    assert noauth.data(image_id) == data


def test_web_download_with_a_keystone_token(keystone_glance: GlanceServer, identities: Identities) -> None:
    data = os.urandom(20_000)
    member = Glance(keystone_glance, identities.token("alpha", "member"))
    server = WebServer(keystone_glance.web_port, {"/member.raw": data})
    try:
        image_id = member.create()
        uri = f"http://127.0.0.1:{keystone_glance.web_port}/member.raw"
        status, answer = member.start_import(image_id, {"name": "web-download", "uri": uri})
        assert status == 202, answer
        image = member.wait(image_id)
        assert_is(image, data)
        assert image["owner"] == identities.project_id("alpha")
    finally:
        server.close()
        member.cleanup()


@pytest.mark.parametrize("auth", AUTH_MODES)
def test_import_filtering_in_every_auth_mode(auth: str, tmp_path: Path) -> None:
    keystone = (
        KeystoneAuth("http://127.0.0.1:5000", "glance", "pw", "service") if auth == "keystone" else None
    )
    cfg = GlanceConfig(tmp_path, tmp_path, port=9292, auth=auth, web_port=8123, keystone=keystone)
    conf = render_api_conf(cfg)
    # The brackets are needed: without them the option does not parse and everything is refused.
    assert "\n[import_filtering_opts]\nallowed_hosts = [127.0.0.1]\nallowed_ports = [80,443,8123]\n" in conf
    assert ("[keystone_authtoken]" in conf) == (auth == "keystone")
