"""The gateway as a real process, run as a user runs it: `python -m gateway --port 0 --glance-url ...`."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
# The line the gateway logs once it listens; with --port 0 it names the port the OS chose.
LISTENING = re.compile(r"gateway listening on [^\s:]+:(\d+)")
KIB = 1024


def peak_rss_bytes(pid: int) -> int:
    """VmHWM from /proc/<pid>/status: the most resident memory the process has had, as the OS counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise RuntimeError(f"unexpected VmHWM unit {unit!r}")
            return int(value) * KIB
    raise RuntimeError(f"no VmHWM for pid {pid}")


def upstream_connections(pid: int, port: int) -> list[str]:
    """The process's ESTABLISHED TCP connections to `port`, as "local->remote" strings."""
    found = []
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port == port:
            found.append(f"{conn.laddr.ip}:{conn.laddr.port}->{conn.raddr.ip}:{conn.raddr.port}")
    return found


def die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when its parent dies, even by SIGKILL (Linux only)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class GatewayProcess:
    """`python -m gateway` on an OS-chosen port; its log lines are kept (a thread drains stderr).

    `isolated` is for the benchmark: GATEWAY_* and GLANCE_* variables of the environment are not passed on, so
    only the command line configures it, and it runs in its own session (a Ctrl-C reaches the caller, which
    then stops it) and dies with its parent. `env`: variables to set for it on top (e.g. OTEL_*).
    """

    def __init__(
        self,
        glance_url: str,
        *extra_args: str,
        log_level: str = "INFO",
        isolated: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.glance_url = glance_url
        self.args = [
            sys.executable, "-m", "gateway", "--port", "0", "--glance-url", glance_url,
            "--log-level", log_level, *extra_args,
        ]  # fmt: skip
        self.isolated = isolated
        self.extra_env = dict(env or {})
        self.log_lines: list[str] = []
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the gateway is not started")
        return self._proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.pid)

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.isolated:
            env = {k: v for k, v in env.items() if not k.startswith(("GATEWAY_", "GLANCE_"))}
        env.update(self.extra_env)
        self._proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=self.isolated,
            preexec_fn=die_with_parent if self.isolated else None,
        )
        self._reader = threading.Thread(target=self._drain, name=f"gateway-{self.pid}-stderr", daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"the gateway did not start listening: {self.args}\n" + self.log_text())
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.rstrip("\n")
            self.log_lines.append(line)
            match = LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # EOF: the process ended; start() must not wait any longer

    def log_text(self) -> str:
        return "\n".join(self.log_lines)

    def returncode(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
