"""Real tests of the local Glance launcher: they start real uWSGI + Glance processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The launcher is a plain directory in the repo, not an installed package.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from localglance import GlanceServer  # noqa: E402
from localglance.ports import port_is_free  # noqa: E402
from localglance.procs import live_group_members  # noqa: E402

# Loopback only: never let an http_proxy from the environment intercept.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def create_image(url: str, name: str) -> str:
    body = json.dumps({"name": name, "disk_format": "raw", "container_format": "bare"}).encode()
    status, raw = request("POST", f"{url}/v2/images", body, {"Content-Type": "application/json"})
    assert status == 201, raw
    image_id: str = json.loads(raw)["id"]
    return image_id


def upload(url: str, image_id: str, data: bytes) -> None:
    headers = {"Content-Type": "application/octet-stream"}
    status, raw = request("PUT", f"{url}/v2/images/{image_id}/file", data, headers)
    assert status == 204, raw


def get_json(url: str) -> Any:
    status, raw = request("GET", url)
    assert status == 200, raw
    return json.loads(raw)


def assert_gone(server_pid: int, port: int) -> None:
    assert live_group_members(server_pid) == []
    assert port_is_free(port)


@pytest.fixture(scope="module")
def glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with GlanceServer(state_dir=tmp_path_factory.mktemp("glance")) as server:
        yield server


def test_versions_answers(glance: GlanceServer) -> None:
    status, raw = request("GET", f"{glance.url}/versions")
    assert status == 200
    assert any(v["status"] == "CURRENT" for v in json.loads(raw)["versions"])


def test_workers_and_binding(glance: GlanceServer) -> None:
    assert glance.url == f"http://127.0.0.1:{glance.port}"
    assert glance.pid is not None
    assert len(glance.worker_pids()) == 2
    assert glance.ready_workers() == 2
    assert "http-socket = 127.0.0.1:" in glance.config.uwsgi_ini.read_text()


def test_image_round_trip(glance: GlanceServer) -> None:
    data = os.urandom(3000)
    image_id = create_image(glance.url, "round-trip")
    upload(glance.url, image_id, data)
    status, got = request("GET", f"{glance.url}/v2/images/{image_id}/file")
    assert status == 200
    assert got == data
    image = get_json(f"{glance.url}/v2/images/{image_id}")
    assert image["status"] == "active"
    assert image["size"] == len(data)
    assert image["stores"] == "file"


def test_pause_stalls_and_resume_recovers(glance: GlanceServer) -> None:
    glance.pause()
    try:
        with pytest.raises(TimeoutError):
            OPENER.open(f"{glance.url}/versions", timeout=1)
    finally:
        glance.resume()
    status, _ = request("GET", f"{glance.url}/versions")
    assert status == 200


def test_stop_frees_everything(tmp_path: Path) -> None:
    server = GlanceServer(state_dir=tmp_path, processes=1)
    server.start()
    pid, port = server.pid, server.port
    assert pid is not None
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 8  # no 60 s worker-reload-mercy hang
    assert_gone(pid, port)
    assert server.pid is None
    server.stop()  # idempotent


def test_stop_while_paused(tmp_path: Path) -> None:
    server = GlanceServer(state_dir=tmp_path, processes=1).start()
    pid, port = server.pid, server.port
    assert pid is not None
    server.pause()
    server.stop()
    assert_gone(pid, port)


def test_failed_start_leaves_nothing(tmp_path: Path) -> None:
    server = GlanceServer(state_dir=tmp_path, processes=1)
    with pytest.raises(TimeoutError, match=r"uwsgi\.log"):
        server.start(timeout=0.2)  # workers are still importing glance
    assert server.pid is None
    assert not (tmp_path / "uwsgi.pid").exists()
    assert port_is_free(server.port)


def test_keep_data_across_restart(tmp_path: Path) -> None:
    data = b"persist me"
    with GlanceServer(state_dir=tmp_path, processes=1) as first:
        image_id = create_image(first.url, "kept")
        upload(first.url, image_id, data)
    with GlanceServer(state_dir=tmp_path, processes=1, fresh=False) as second:
        assert request("GET", f"{second.url}/v2/images/{image_id}/file") == (200, data)
    with GlanceServer(state_dir=tmp_path, processes=1, fresh=True) as third:
        status, _ = request("GET", f"{third.url}/v2/images/{image_id}")
        assert status == 404


def test_headers_auth_mode(tmp_path: Path) -> None:
    with GlanceServer(state_dir=tmp_path, processes=1, auth="headers") as server:
        status, _ = request("GET", f"{server.url}/v2/images")
        assert status == 401  # no X-Identity-Status: Confirmed
        identity = {"X-Identity-Status": "Confirmed", "X-Roles": "member", "X-Project-Id": "p1"}
        # Keystone would expand member to member+reader (implied roles); without it, list needs reader.
        status, _ = request("GET", f"{server.url}/v2/images", headers=identity)
        assert status == 403
        identity["X-Roles"] = "reader,member"
        status, raw = request("GET", f"{server.url}/v2/images", headers=identity)
        assert status == 200, raw


def test_start_refuses_busy_port(glance: GlanceServer, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="already in use"):
        GlanceServer(port=glance.port, state_dir=tmp_path).start()
    assert not (tmp_path / "uwsgi.pid").exists()


def test_cli_start_status_stop(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "localglance"]
    common = ["--state", str(tmp_path)]
    out = subprocess.run(
        [*cli, "start", "--port", "0", "--processes", "1", *common],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    pid_text, url = out.split()
    pid, port = int(pid_text), int(url.rsplit(":", 1)[1])
    try:
        assert request("GET", f"{url}/versions")[0] == 200
        status = subprocess.run([*cli, "status", *common], cwd=REPO, capture_output=True, text=True)
        assert status.returncode == 0 and status.stdout.split() == [pid_text, url]
    finally:
        subprocess.run([*cli, "stop", *common], cwd=REPO, check=True, timeout=60)
    assert_gone(pid, port)
    status = subprocess.run([*cli, "status", *common], cwd=REPO, capture_output=True, text=True)
    assert status.returncode == 1


# The shim in localglance/inside_glance: run in the Glance venv's own Python, as uWSGI's workers load it.
SQLITE_LOCK_PROBE = """
import sqlite3, sys, tempfile
sys.path.insert(0, sys.argv[1])
import localglance_sqlite_locks  # noqa: F401  (what uWSGI's `import =` does in each worker)
from oslo_db import exception
from oslo_db.sqlalchemy import engines
from glance.common.utils import is_db_lock_error
import sqlalchemy

path = tempfile.mktemp(suffix=".sqlite")
sqlite3.connect(path).execute("create table t (x int)")
engine = engines.create_engine(f"sqlite:///{path}")
holder = sqlite3.connect(path, timeout=0)
holder.execute("begin exclusive")
try:
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("insert into t values (1)"))
except exception.DBDeadlock as exc:
    # Glance's own SQLite retry (retry_on_db_lock) must still recognise it.
    print("DBDeadlock", is_db_lock_error(exc))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_glance_retries_sqlite_lock_conflicts_as_deadlocks(glance: GlanceServer) -> None:
    # Glance retries image writes on DBDeadlock; the shim makes SQLite's "database is locked" one.
    ini = glance.config.uwsgi_ini.read_text()
    assert "import = localglance_sqlite_locks" in ini
    inside = REPO / "localglance" / "inside_glance"
    python = glance.config.venv_dir / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", SQLITE_LOCK_PROBE, str(inside)], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "DBDeadlock True", result.stdout + result.stderr
    assert "localglance_sqlite_locks" not in glance.log_tail(200)  # no import error in the workers
