"""What Glance's and Keystone's launchers share: one uWSGI master in its own process group on 127.0.0.1,
launched, awaited, stopped or left running (and found again, and stopped, from another process)."""

from __future__ import annotations

import atexit
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from .config import read_port
from .env import clean_env
from .ports import HOST, port_is_free, wait_port_free
from .procs import recorded_leader, stop_recorded_leader, terminate_group

# uWSGI logs this once per worker when the worker has imported its app (lazy-apps).
READY_LINE = "WSGI app 0 (mountpoint='') ready"


class UwsgiFiles(Protocol):
    """The files of a uWSGI instance in its state dir (GlanceConfig, KeystoneConfig)."""

    @property
    def uwsgi_ini(self) -> Path: ...

    @property
    def pidfile(self) -> Path: ...

    @property
    def uwsgi_log(self) -> Path: ...


def launch(venv_dir: Path, uwsgi_ini: Path, uwsgi_log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """uWSGI from `venv_dir` with `uwsgi_ini`, its output in `uwsgi_log` (truncated: ready lines are
    counted for this run only)."""
    with open(uwsgi_log, "wb") as log:
        return subprocess.Popen(
            [str(venv_dir / "bin" / "uwsgi"), "--ini", str(uwsgi_ini)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=clean_env(venv_dir),
            # Own session and process group: killpg reaches every worker, and a Ctrl-C in the caller's
            # terminal does not hit uWSGI directly.
            start_new_session=True,
        )


def ready_lines(uwsgi_log: Path) -> int:
    """How many workers have imported their app in this run."""
    try:
        return uwsgi_log.read_text(errors="replace").count(READY_LINE)
    except FileNotFoundError:
        return 0


def tail(path: Path, lines: int) -> str | None:
    """The last `lines` lines of a log under a heading, or None when it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


class UwsgiServer:
    """A server run by uWSGI. Subclasses set `name`, `port`, `state_dir`, `venv_dir` and `config`, start it
    with `_launch` and `_wait_ready`, and say what ready means (`_serving`, `_imported`)."""

    name: str
    port: int
    state_dir: Path
    venv_dir: Path
    config: UwsgiFiles

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The uWSGI master's pid (also the process group id), or None when not started."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- what subclasses say ---------------------------------------------------

    def _serving(self) -> bool:
        """Every worker is up and the app answers."""
        raise NotImplementedError

    def _imported(self) -> bool:
        """Every worker has imported the app (until then a worker ignores SIGTERM: uWSGI's 60 s mercy)."""
        raise NotImplementedError

    def _progress(self) -> str:
        """How far a start got, for a timeout's message."""
        return ""

    def _stop_hint(self) -> str:
        """How to stop another process's instance, for the message when one is in the way."""
        return ""

    def _forget(self) -> None:
        """Drops what belongs to the running instance, when it stops."""

    def log_tail(self, lines: int = 40) -> str:
        raise NotImplementedError

    # -- start -----------------------------------------------------------------

    def _check_nothing_in_the_way(self) -> None:
        other = recorded_leader(self.config.pidfile, self.config.uwsgi_ini)
        if other is not None:
            raise RuntimeError(
                f"a {self.name} from {self.state_dir} is already running (pid {other}){self._stop_hint()}"
            )
        if not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} on {HOST} is already in use")

    def _launch(self) -> None:
        self.config.pidfile.unlink(missing_ok=True)
        self._proc = launch(self.venv_dir, self.config.uwsgi_ini, self.config.uwsgi_log, self.state_dir)
        atexit.register(self._stop_at_exit)

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.name}'s uWSGI exited with code {code} during start\n{self.log_tail()}"
                )
            if self._serving():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} on {self.url} not ready after {timeout:.0f} s{self._progress()}\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    # -- stop ------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL after `timeout`, then wait for the port. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if not self._imported():
            timeout = 0.0  # with nothing served yet there is nothing to be graceful about
        try:
            terminate_group(proc.pid, timeout)
            proc.wait(timeout=5)  # reap the master, which is our child
        finally:
            self._proc = None
            self._forget()
            atexit.unregister(self._stop_at_exit)
        self.config.pidfile.unlink(missing_ok=True)
        if not wait_port_free(self.port, 5.0):
            raise RuntimeError(f"port {self.port} still in use after {self.name} stopped")

    def detach(self) -> None:
        """Let the server outlive this Python process (used by `python -m localglance start`)."""
        atexit.unregister(self._stop_at_exit)
        self._proc = None

    def _stop_at_exit(self) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_recorded(name: str, state_dir: Path, uwsgi_ini_name: str, timeout: float) -> int | None:
    """Stops the instance recorded in `state_dir` (its pidfile, and `etc/<uwsgi_ini_name>` on its command
    line); returns its pid, or None if none was running."""
    state_dir = state_dir.resolve()
    ini = state_dir / "etc" / uwsgi_ini_name
    port = read_port(ini)
    pid = stop_recorded_leader(state_dir / "uwsgi.pid", ini, timeout)
    if pid is not None and port is not None and not wait_port_free(port, 5.0):
        raise RuntimeError(f"port {port} still in use after {name} stopped")
    return pid
