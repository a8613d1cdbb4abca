"""The gateway under test, run exactly as a user runs it: `python -m gateway --port ... --glance-url ...`."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bench.upstreams import die_with_parent

REPO = Path(__file__).resolve().parents[1]
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


class Gateway:
    """One gateway process in front of one upstream; `with Gateway(url) as gw:` starts and always stops it.

    Only the command line configures it: GATEWAY_* and GLANCE_* variables of the bench's environment are
    not passed on, so nothing but the gateway's own defaults is measured.
    """

    def __init__(self, upstream_url: str) -> None:
        self.args = [sys.executable, "-m", "gateway", "--port", "0", "--glance-url", upstream_url]
        self.port = 0
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("gateway not started")
        return self._proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.pid)

    def start(self, timeout: float = 30.0) -> Gateway:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "GLANCE_"))}
        self._proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # a Ctrl-C reaches the bench, which then stops the gateway itself
            preexec_fn=die_with_parent,
        )
        self._reader = threading.Thread(target=self._drain, name="gateway-stderr", daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError("the gateway did not start listening:\n" + "\n".join(self.log))
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.rstrip("\n")
            self.log.append(line)
            match = LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # EOF: the process ended

    def stop(self) -> None:
        proc, self._proc = self._proc, None
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

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
