"""Start, wait for, and stop one real Glance 33.0.0 under uWSGI."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import http.client
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from . import uwsgi
from .config import GlanceConfig, KeystoneAuth, read_port, write_configs
from .db import prepare_db
from .keystone_config import GLANCE_PROJECT, GLANCE_USER
from .log import info
from .paths import DEFAULT_STATE_DIR, DEFAULT_VENV_DIR
from .ports import HOST, free_port, port_is_free, wait_port_free
from .procs import children_of, recorded_leader, signal_group, stop_recorded_leader, terminate_group
from .venv import ensure_venv

if TYPE_CHECKING:
    from .keystone import KeystoneServer

# uWSGI logs this once per worker when the worker has imported glance (lazy-apps).
READY_LINE = "WSGI app 0 (mountpoint='') ready"
LOG_TAIL_LINES = 40

# urllib honours http_proxy; loopback checks must never go through a proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class GlanceServer:
    """A real Glance API on 127.0.0.1, run by uWSGI in its own process group.

    auth "keystone" validates real tokens against `keystone` (a started KeystoneServer). In every mode,
    web-download imports may fetch from http://127.0.0.1:<web_port>/ (a free port picked here unless given).
    """

    def __init__(
        self,
        port: int | None = None,
        state_dir: Path | None = None,
        venv_dir: Path | None = None,
        fresh: bool = True,
        processes: int = 2,
        auth: str = "noauth",
        socket_timeout: int = 10,
        format_check: bool = True,
        keystone: KeystoneServer | None = None,
        web_port: int | None = None,
        token_cache_time: int = 300,
    ) -> None:
        self.port: int = port if port else free_port()
        self.web_port: int = web_port if web_port else free_port()
        self.state_dir: Path = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self.venv_dir: Path = Path(venv_dir or DEFAULT_VENV_DIR).resolve()
        self.fresh = fresh
        if (auth == "keystone") != (keystone is not None):
            raise ValueError('pass keystone= exactly for auth="keystone"')
        self.keystone = keystone
        self._token_cache_time = token_cache_time
        self.config = self._make_config(processes, auth, socket_timeout, format_check)
        self._proc: subprocess.Popen[bytes] | None = None

    def _make_config(
        self, processes: int, auth: str, socket_timeout: int, format_check: bool
    ) -> GlanceConfig:
        return GlanceConfig(
            state_dir=self.state_dir,
            venv_dir=self.venv_dir,
            port=self.port,
            processes=processes,
            auth=auth,
            socket_timeout=socket_timeout,
            format_check=format_check,
            web_port=self.web_port,
            keystone=self._keystone_auth() if auth == "keystone" else None,
        )

    def _keystone_auth(self) -> KeystoneAuth:
        assert self.keystone is not None
        return KeystoneAuth(
            url=self.keystone.url,
            username=GLANCE_USER,
            # Only known once Keystone runs; start() rewrites the config with it.
            password=self.keystone.glance_password if self.keystone.is_running() else "",
            project=GLANCE_PROJECT,
            token_cache_time=self._token_cache_time,
        )

    def __repr__(self) -> str:
        return f"GlanceServer(url={self.url!r}, pid={self.pid}, state_dir={str(self.state_dir)!r})"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The uWSGI master's pid (also the process group id), or None when not started."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def worker_pids(self) -> list[int]:
        return children_of(self._proc.pid) if self._proc is not None else []

    # -- start ---------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> GlanceServer:
        """Install if needed, configure, migrate the DB, launch uWSGI and wait until every worker serves."""
        if self._proc is not None:
            raise RuntimeError(f"already started: {self!r}")
        started = time.monotonic()
        ensure_venv(self.venv_dir)
        self._check_nothing_in_the_way()
        if self.keystone is not None:
            if not self.keystone.is_running():
                raise RuntimeError(f"start the Keystone first: {self.keystone!r}")
            self.config = dataclasses.replace(self.config, keystone=self._keystone_auth())
        if self.fresh:
            shutil.rmtree(self.config.data_dir, ignore_errors=True)
        write_configs(self.config)
        prepare_db(self.config)
        try:
            self._launch()
            self._wait_ready(timeout)
            if self.keystone is not None:
                self.keystone.set_image_url(self.url)
        except BaseException:
            # Never leave a half-started group behind (includes Ctrl-C during start);
            # a cleanup problem must not hide the original error.
            with contextlib.suppress(Exception):
                self.stop()
            raise
        atexit.register(self._stop_at_exit)
        info(f"glance ready at {self.url} (pid {self.pid}) in {time.monotonic() - started:.1f} s")
        return self

    def _check_nothing_in_the_way(self) -> None:
        other = recorded_master(self.state_dir)
        if other is not None:
            raise RuntimeError(
                f"a Glance from {self.state_dir} is already running (pid {other}); "
                f"stop it first: python -m localglance stop --state {self.state_dir}"
            )
        if not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} on {HOST} is already in use")

    def _launch(self) -> None:
        cfg = self.config
        cfg.pidfile.unlink(missing_ok=True)
        self._proc = uwsgi.launch(self.venv_dir, cfg.uwsgi_ini, cfg.uwsgi_log, self.state_dir)

    def _wait_ready(self, timeout: float) -> None:
        # /versions alone is not enough: a SIGTERM while a worker still imports
        # glance makes uWSGI hang 60 s, so also wait for every worker's ready line.
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"uWSGI exited with code {code} during start\n{self.log_tail()}")
            if self.ready_workers() >= self.config.processes and self._versions_ok():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Glance on {self.url} not ready after {timeout:.0f} s "
                    f"({self.ready_workers()}/{self.config.processes} workers ready)\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def ready_workers(self) -> int:
        try:
            text = self.config.uwsgi_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(READY_LINE)

    def _versions_ok(self) -> bool:
        try:
            with _NO_PROXY_OPENER.open(f"{self.url}/versions", timeout=2) as resp:
                return int(resp.status) == 200
        except (OSError, http.client.HTTPException):
            return False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.config.uwsgi_log, lines)

    # -- stop, pause ---------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL after `timeout`, then wait for the port. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        # A worker still importing glance ignores SIGTERM until uWSGI's 60 s reload
        # mercy; with nothing served yet there is nothing to be graceful about.
        if self.ready_workers() < self.config.processes:
            timeout = 0.0
        try:
            terminate_group(proc.pid, timeout)
            proc.wait(timeout=5)  # reap the master, which is our child
        finally:
            self._proc = None
            atexit.unregister(self._stop_at_exit)
        self.config.pidfile.unlink(missing_ok=True)
        if not wait_port_free(self.port, 5.0):
            raise RuntimeError(f"port {self.port} still in use after Glance stopped")

    def detach(self) -> None:
        """Let the server outlive this Python process (used by `python -m localglance start`)."""
        atexit.unregister(self._stop_at_exit)
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP every process: connections are accepted by the kernel but never answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            raise RuntimeError("not started")
        signal_group(self._proc.pid, sig)

    def _stop_at_exit(self) -> None:
        self.stop()

    def __enter__(self) -> GlanceServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


# -- an instance recorded in a state dir (for the CLI, in another process) ---


def recorded_master(state_dir: Path) -> int | None:
    """The live uWSGI master started from this state dir, per its pidfile."""
    return recorded_leader(state_dir / "uwsgi.pid", state_dir / "etc" / "glance-uwsgi.ini")


def stop_recorded(state_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop the instance recorded in `state_dir`; return its pid, or None if none was running."""
    state_dir = state_dir.resolve()
    ini = state_dir / "etc" / "glance-uwsgi.ini"
    port = read_port(ini)
    pid = stop_recorded_leader(state_dir / "uwsgi.pid", ini, timeout)
    if pid is not None and port is not None and not wait_port_free(port, 5.0):
        raise RuntimeError(f"port {port} still in use after Glance stopped")
    return pid
