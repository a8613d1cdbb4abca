"""deploy/nginx/glance-grpc-gateway.conf run for real: rendered for loopback and started as the current user.

The deploy file is an http{}-level file with production addresses and paths. `render_site` rewrites only
those (the replicas, the listen address, the certificate and the log paths); every directive that decides
behaviour (retries, timeouts, limits, keepalive) is used as shipped. Each rewrite must match the shipped file
exactly as often as expected, so a reshaped deploy file fails loudly instead of being tested half rewritten.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "deploy" / "nginx" / "glance-grpc-gateway.conf"
HOST = "127.0.0.1"

# The upstream's replica lines: `server ADDRESS:PORT PARAMETERS;`.
_REPLICA = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+[\w.\-]+:\d+(?P<params>[^;\n]*);[ \t]*$", re.M)
_LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen[ \t]+443[ \t]+ssl[ \t]+http2;", re.M)
_CERT = re.compile(r"^(?P<indent>[ \t]*)ssl_certificate[ \t]+\S+;", re.M)
_KEY = re.compile(r"^(?P<indent>[ \t]*)ssl_certificate_key[ \t]+\S+;", re.M)
_ACCESS_LOG = re.compile(r"^(?P<indent>[ \t]*)access_log[ \t]+\S+(?P<rest>[^;\n]*);", re.M)
_ERROR_LOG = re.compile(r"^(?P<indent>[ \t]*)error_log[ \t]+\S+(?P<rest>[^;\n]*);", re.M)

MAIN_CONF = """\
daemon off;
# In the foreground, with a master: `nginx -s reload` (how an operator takes a replica out of the upstream)
# needs one, and hands calls over from the old worker to the new one without losing any. SIGTERM to the
# master stops its workers.
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {site};
}}
"""


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("nginx is not installed (make nginx installs Debian's nginx-light)")
    return found


def _replace(pattern: re.Pattern[str], text: str, replacement: str, what: str, count: int = 1) -> str:
    """`pattern` replaced by `replacement` (a template with the match's groups), matching exactly `count`
    times."""
    new, found = pattern.subn(lambda m: replacement.format(**m.groupdict()), text)
    if found != count:
        raise ValueError(f"{SITE.name}: expected {count} {what}, found {found}")
    return new


def render_site(
    text: str,
    replicas: Sequence[str],
    port: int,
    cert: Path,
    key: Path,
    log_dir: Path,
    down: Collection[str] = (),
) -> str:
    """The deploy file for loopback: `replicas` ("host:port") instead of the shipped ones, with the shipped
    parameters of the first replica line (and `down` for those in `down`); listening on HOST:`port`; the
    given certificate; logs in `log_dir`."""
    if not replicas:
        raise ValueError("at least one replica")
    shipped = list(_REPLICA.finditer(text))
    if len(shipped) < 2:
        raise ValueError(f"{SITE.name}: expected at least two replica lines, found {len(shipped)}")
    first = shipped[0]
    if unknown := set(down) - set(replicas):
        raise ValueError(f"not replicas: {sorted(unknown)}")
    lines = "\n".join(
        f"{first['indent']}server {address}{first['params']}{' down' if address in down else ''};"
        for address in replicas
    )
    text = text[: first.start()] + lines + _REPLICA.sub("", text[first.end() :]).replace("\n\n\n", "\n\n")
    text = _replace(_LISTEN, text, "{indent}listen " + f"{HOST}:{port} ssl http2;", "TLS listen lines")
    text = _replace(_CERT, text, "{indent}ssl_certificate " + f"{cert};", "certificates")
    text = _replace(_KEY, text, "{indent}ssl_certificate_key " + f"{key};", "certificate keys")
    text = _replace(_ACCESS_LOG, text, "{indent}access_log " + f"{log_dir}/access.log" + "{rest};", "logs")
    return _replace(_ERROR_LOG, text, "{indent}error_log " + f"{log_dir}/error.log" + "{rest};", "error logs")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost (openssl), as (cert, key)."""
    cert, key = folder / "proxy-cert.pem", folder / "proxy-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class NginxProxy:
    """The deploy config in front of `replicas`, in `folder` (config, temp files, logs, pid)."""

    def __init__(self, folder: Path, replicas: Sequence[str], port: int, cert: Path, key: Path) -> None:
        self.folder = folder
        self.port = port
        self.nginx = find_nginx()
        for sub in ("tmp", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.site = folder / SITE.name
        self._render = functools.partial(
            render_site, SITE.read_text(), replicas, port, cert, key, folder / "logs"
        )
        self.site.write_text(self._render())
        self.main = folder / "nginx.conf"
        self.main.write_text(MAIN_CONF.format(dir=folder, site=self.site))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _command(self, *extra: str) -> list[str]:
        error_log = str(self.folder / "error.log")
        return [self.nginx, "-p", str(self.folder), "-c", str(self.main), "-e", error_log, *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """`nginx -t` on the rendered config (syntax, directives, files it names)."""
        return subprocess.run(self._command("-t"), capture_output=True, text=True, check=False, timeout=30)

    def start(self, timeout: float = 10.0) -> NginxProxy:
        self._proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited with code {self._proc.returncode}:\n{self.error_log()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"nginx did not listen on {self.address} within {timeout} s")
            time.sleep(0.05)

    def set_down(self, down: Collection[str]) -> None:
        """Marks the replicas in `down` (addresses) down and the others up, and reloads nginx: returns once
        a new worker with that config runs. The old worker sends GOAWAY to its clients (gRPC clients open a
        new connection to the new worker) and exits when the calls it has are done."""
        if self._proc is None:
            raise RuntimeError("nginx is not running")
        master = psutil.Process(self._proc.pid)
        old_workers = {child.pid for child in master.children()}
        self.site.write_text(self._render(down=down))
        reload = subprocess.run(self._command("-s", "reload"), capture_output=True, text=True, timeout=30)
        if reload.returncode != 0:
            raise RuntimeError(f"nginx -s reload failed:\n{reload.stderr}\n{self.error_log()}")
        deadline = time.monotonic() + 10
        while not {child.pid for child in master.children()} - old_workers:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nginx started no new worker within 10 s:\n{self.error_log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def error_log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.folder / "error.log", self.folder / "logs" / "error.log")
            if path.exists()
        )

    def access_log(self) -> list[str]:
        path = self.folder / "logs" / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def __enter__(self) -> NginxProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
