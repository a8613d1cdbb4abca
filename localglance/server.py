"""Start, wait for, and stop one real Glance 33.0.0 under uWSGI."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Self

from .config import GlanceConfig, KeystoneAuth, write_configs
from .db import prepare_db
from .keystone_config import GLANCE_PROJECT, GLANCE_USER
from .log import info
from .paths import DEFAULT_STATE_DIR, DEFAULT_VENV_DIR
from .ports import free_port
from .procs import children_of, recorded_leader, signal_group
from .uwsgi import UwsgiServer, ready_lines, tail
from .uwsgi import stop_recorded as stop_recorded_uwsgi
from .venv import ensure_venv

if TYPE_CHECKING:
    from .keystone import KeystoneServer

LOG_TAIL_LINES = 40

# urllib honours http_proxy; loopback checks must never go through a proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class GlanceServer(UwsgiServer):
    """A real Glance API on 127.0.0.1, run by uWSGI in its own process group.

    auth "keystone" validates real tokens against `keystone` (a started KeystoneServer). In every mode,
    web-download imports may fetch from http://127.0.0.1:<web_port>/ (a free port picked here unless given).
    """

    name = "Glance"

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
        super().__init__()
        self.port: int = port if port else free_port()
        self.web_port: int = web_port if web_port else free_port()
        self.state_dir: Path = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self.venv_dir: Path = Path(venv_dir or DEFAULT_VENV_DIR).resolve()
        self.fresh = fresh
        if (auth == "keystone") != (keystone is not None):
            raise ValueError('pass keystone= exactly for auth="keystone"')
        self.keystone = keystone
        self._token_cache_time = token_cache_time
        self.config: GlanceConfig = self._make_config(processes, auth, socket_timeout, format_check)

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

    def worker_pids(self) -> list[int]:
        return children_of(self._proc.pid) if self._proc is not None else []

    # -- start ---------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
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
        info(f"glance ready at {self.url} (pid {self.pid}) in {time.monotonic() - started:.1f} s")
        return self

    # /versions alone is not enough: a SIGTERM while a worker still imports glance makes uWSGI hang 60 s,
    # so a start also waits for every worker's ready line.
    def _serving(self) -> bool:
        return self._imported() and self._versions_ok()

    def _imported(self) -> bool:
        return self.ready_workers() >= self.config.processes

    def _progress(self) -> str:
        return f" ({self.ready_workers()}/{self.config.processes} workers ready)"

    def _stop_hint(self) -> str:
        return f"; stop it first: python -m localglance stop --state {self.state_dir}"

    def ready_workers(self) -> int:
        return ready_lines(self.config.uwsgi_log)

    def _versions_ok(self) -> bool:
        try:
            with _NO_PROXY_OPENER.open(f"{self.url}/versions", timeout=2) as resp:
                return int(resp.status) == 200
        except (OSError, http.client.HTTPException):
            return False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.config.uwsgi_log, lines) or f"({self.config.uwsgi_log} does not exist)"

    # -- pause -----------------------------------------------------------------

    def pause(self) -> None:
        """SIGSTOP every process: connections are accepted by the kernel but never answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            raise RuntimeError("not started")
        signal_group(self._proc.pid, sig)


# -- an instance recorded in a state dir (for the CLI, in another process) ---


def recorded_master(state_dir: Path) -> int | None:
    """The live uWSGI master started from this state dir, per its pidfile."""
    return recorded_leader(state_dir / "uwsgi.pid", state_dir / "etc" / "glance-uwsgi.ini")


def stop_recorded(state_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop the instance recorded in `state_dir`; return its pid, or None if none was running."""
    return stop_recorded_uwsgi("Glance", state_dir, "glance-uwsgi.ini", timeout)
