"""The two upstreams every figure runs against: a real local Glance and a fast static nginx.

Both serve the Images API v2 paths the gateway uses, so the same gateway binary and the same direct
clients run against each. One small interface: `url`; `seed(size, seed)` puts an image of random bytes
there and returns its id and digests; `prepare_upload(...)` readies the upstream for an upload;
`discard(id)` removes what an upload made; `stop()` ends everything (also on errors).
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.data import Digests, Hashing, UploadData
from harness.data import pseudo_random_chunks
from harness.process import die_with_parent
from localglance import GlanceServer
from localglance.ports import free_port

JsonObject = dict[str, Any]
HOST = "127.0.0.1"
# nginx answers every create with this image; direct and gateway uploads then PUT its file.
UPLOAD_TARGET_ID = "0b0e5c1a-7e57-4a9e-9d00-00000000b0b0"
CREATED_AT = "2025-01-01T00:00:00Z"


@dataclass(frozen=True)
class SeededImage:
    id: str
    size: int
    sha512: str


def http_client(base_url: str, timeout: float = 300.0) -> httpx.Client:
    """A plain httpx client for loopback (never a proxy from the environment)."""
    return httpx.Client(base_url=base_url, trust_env=False, timeout=timeout)


class Upstream(abc.ABC):
    name: str

    @property
    @abc.abstractmethod
    def url(self) -> str: ...

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None:
        """Stops what start() started and removes its files; safe to call twice, or after a failed start."""

    @abc.abstractmethod
    def seed(self, size: int, seed: int) -> SeededImage: ...

    def prepare_upload(self, data: UploadData) -> None:  # noqa: B027 (most upstreams need nothing)
        """Called (untimed) before each upload of these bytes, direct or through the gateway."""

    @abc.abstractmethod
    def uploaded_size(self, image_id: str) -> int:
        """How many bytes the upstream stored for an uploaded image (checks each upload)."""

    @abc.abstractmethod
    def discard(self, image_id: str) -> None:
        """Removes an uploaded image (Glance) or its data (nginx), to keep the disk from filling."""

    def __enter__(self) -> Upstream:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- a real Glance -------------------------------------------------------------


class GlanceUpstream(Upstream):
    name = "glance"

    def __init__(self, processes: int = 3) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-glance-"))
        self._server = GlanceServer(state_dir=self._dir, processes=processes)
        self._http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        self._server.start()
        self._http = http_client(self.url)

    def stop(self) -> None:
        try:
            if self._http is not None:
                self._http.close()
                self._http = None
            self._server.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            raise RuntimeError("Glance is not started")
        return self._http

    def seed(self, size: int, seed: int) -> SeededImage:
        """POST an image record, then PUT random data streamed from a generator; checks Glance's sha512."""
        created = self.http.post(
            "/v2/images",
            json={"name": f"bench-seed-{size}", "disk_format": "raw", "container_format": "bare"},
        )
        created.raise_for_status()
        image_id = str(created.json()["id"])
        hashing = Hashing(pseudo_random_chunks(seed, size))
        response = self.http.put(
            f"/v2/images/{image_id}/file",
            content=iter(hashing),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        response.raise_for_status()
        record = self.http.get(f"/v2/images/{image_id}").raise_for_status().json()
        digests = hashing.digests()
        if record.get("status") != "active" or record.get("os_hash_value") != digests.sha512:
            raise RuntimeError(f"Glance did not store the seeded image as sent: {record}")
        return SeededImage(image_id, size, digests.sha512)

    def uploaded_size(self, image_id: str) -> int:
        record = self.http.get(f"/v2/images/{image_id}").raise_for_status().json()
        return int(record["size"])

    def discard(self, image_id: str, timeout: float = 30.0) -> None:
        # Glance may answer 500 ("database is locked") while a worker still finishes the same image.
        deadline = time.monotonic() + timeout
        while True:
            status = self.http.delete(f"/v2/images/{image_id}").status_code
            if status in (204, 404):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"could not delete image {image_id} from Glance: HTTP {status}")
            time.sleep(0.2)


# -- a fast static upstream: nginx ---------------------------------------------------


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("nginx is not installed (make nginx installs Debian's nginx-light)")
    return found


def image_record(image_id: str, name: str, status: str, digests: Digests | None) -> JsonObject:
    """An image record shaped like Glance's."""
    return {
        "id": image_id, "name": name, "status": status, "visibility": "shared",
        "size": digests.size if digests else None, "virtual_size": None,
        "disk_format": "raw", "container_format": "bare",
        "checksum": digests.md5 if digests else None,
        "os_hash_algo": "sha512" if digests else None, "os_hash_value": digests.sha512 if digests else None,
        "protected": False, "os_hidden": False, "tags": [], "min_ram": 0, "min_disk": 0,
        "owner": "bench", "stores": "file" if digests else None,
        "created_at": CREATED_AT, "updated_at": CREATED_AT,
        "self": f"/v2/images/{image_id}", "file": f"/v2/images/{image_id}/file",
        "schema": "/v2/schemas/image",
    }  # fmt: skip


NGINX_CONF = """\
daemon off;
# One process: it serves every request, and stopping it stops everything.
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_max_body_size 0;
    client_body_timeout 600s;
    send_timeout 600s;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    types {{ }}
    server {{
        listen {host}:{port};
        # POST /v2/images: every create gets the same upload-target record.
        location = /v2/images {{
            default_type application/json;
            return 201 '{created}';
        }}
        # GET /v2/images/<id>: the record the harness wrote when it seeded.
        location ~ "^/v2/images/([0-9a-f-]{{36}})$" {{
            default_type application/json;
            alias {dir}/www/meta/$1.json;
        }}
        # GET (with Range) and PUT /v2/images/<id>/file.
        location ~ "^/v2/images/([0-9a-f-]{{36}})/file$" {{
            default_type application/octet-stream;
            alias {dir}/www/data/$1;
            dav_methods PUT;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


class NginxUpstream(Upstream):
    name = "nginx"

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self._port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    def _meta(self, image_id: str) -> Path:
        return self._dir / "www" / "meta" / f"{image_id}.json"

    def _data(self, image_id: str) -> Path:
        return self._dir / "www" / "data" / image_id

    def start(self, timeout: float = 10.0) -> None:
        for sub in ("www/meta", "www/data", "tmp"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        created = json.dumps(image_record(UPLOAD_TARGET_ID, "bench-upload", "queued", None))
        assert "'" not in created
        conf = self._dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self._dir, host=HOST, port=self._port, created=created))
        error_log = self._dir / "error.log"
        self._proc = subprocess.Popen(
            [find_nginx(), "-p", str(self._dir), "-c", str(conf), "-e", str(error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the bench, which then stops nginx itself
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                log = error_log.read_text(errors="replace") if error_log.exists() else ""
                raise RuntimeError(f"nginx exited with code {self._proc.returncode}:\n{log}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self._port), timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nginx did not listen on {self.url} within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            proc, self._proc = self._proc, None
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def seed(self, size: int, seed: int) -> SeededImage:
        image_id = str(uuid.uuid4())
        hashing = Hashing(pseudo_random_chunks(seed, size))
        with open(self._data(image_id), "wb") as out:
            for chunk in hashing:
                out.write(chunk)
        digests = hashing.digests()
        self._write_meta(image_record(image_id, f"bench-seed-{size}", "active", digests))
        return SeededImage(image_id, size, digests.sha512)

    def prepare_upload(self, data: UploadData) -> None:
        # The gateway reads the record back after its PUT: it must describe what was sent, as Glance's would.
        self._write_meta(image_record(UPLOAD_TARGET_ID, "bench-upload", "active", data.digests()))
        self._data(UPLOAD_TARGET_ID).unlink(missing_ok=True)

    def uploaded_size(self, image_id: str) -> int:
        return self._data(image_id).stat().st_size

    def discard(self, image_id: str) -> None:
        self._data(image_id).unlink(missing_ok=True)

    def _write_meta(self, record: JsonObject) -> None:
        path = self._meta(str(record["id"]))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)


UPSTREAMS: dict[str, type[Upstream]] = {"glance": GlanceUpstream, "nginx": NginxUpstream}
