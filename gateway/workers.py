"""`--workers N`: N server processes sharing the gRPC port (SO_REUSEPORT), supervised by this process.

The pattern of grpc/grpc's examples/python/multiprocessing: the parent forks before any gRPC object exists
(gRPC core does not survive a fork), and each child runs its own server on its own event loop; the kernel
spreads new connections (not calls) over the children. The parent checks the ports, forks, passes SIGTERM,
SIGINT and SIGHUP on to every child, serves the children's metrics summed on --metrics-port, and exits once
they all have. It restarts nothing: a child that exits unasked makes the parent stop the others and exit
non-zero, so the supervisor above it (Kubernetes, systemd) restarts the whole gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn

from gateway.config import Settings

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPPING = (signal.SIGTERM, signal.SIGINT)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
PR_SET_PDEATHSIG = 1

# Runs one gateway server in the calling process until it has drained (gateway.__main__.serve_here).
ServeOne = Callable[[Settings], None]


def run_workers(settings: Settings, serve_one: ServeOne) -> int:
    """Runs `settings.workers` children until they have all exited; returns the gateway's exit code."""
    for port in (settings.port, settings.health_port, settings.metrics_port):
        if port:
            ensure_port_free(settings.host, port)
    with metrics_directory(settings.metrics_port is not None):
        return Supervisor(settings, serve_one).run()


def ensure_port_free(host: str, port: int) -> None:
    """Exits with a clear message when something listens on host:port already. The children bind with
    SO_REUSEPORT, which would let them join another gateway on the port; this plain bind does not."""
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        raise SystemExit(1) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # TIME_WAIT leftovers of an earlier run do not count as in use; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s (another gateway?)", host, port, exc.strerror)
                raise SystemExit(1) from None


@contextlib.contextmanager
def metrics_directory(enabled: bool) -> Iterator[str | None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers' metrics files while inside, removed on the way out.

    It must be set before anything imports prometheus_client, which picks its multiprocess value class at
    import; gateway.__main__ imports the server (and with it prometheus_client) only in the children.
    """
    if not enabled:
        yield None
        return
    path = tempfile.mkdtemp(prefix="glance-gateway-metrics-")
    previous = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = path
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = previous


def shell_exit_code(exit_code: int) -> int:
    """os.waitstatus_to_exitcode's value as a shell reports it: killed by signal N is 128 + N."""
    return 128 - exit_code if exit_code < 0 else exit_code


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies, even by SIGKILL (Linux), so a worker drains and exits
    instead of serving on unsupervised."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(self, settings: Settings, serve_one: ServeOne) -> None:
        self._settings = settings
        self._serve_one = serve_one
        self._children: dict[int, int] = {}  # pid -> worker number
        self._stopping = False

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in FORWARDED}
        try:
            self._start_children()
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(self._metrics_endpoint())
                except OSError as exc:
                    log.error("cannot serve metrics: %s; stopping the workers", exc)
                    self._stop_children()
                    self._wait()
                    return 1
                return self._wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start_children(self) -> None:
        settings = self._settings
        worker_settings = dataclasses.replace(settings, metrics_port=None)  # the parent serves /metrics
        parent = os.getpid()
        for number in range(1, settings.workers + 1):
            if self._stopping:
                break
            # Signals wait while a child still runs the parent's handlers; it resets them before unblocking.
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
            try:
                pid = os.fork()
                if pid == 0:
                    self._child(worker_settings, number, parent)
                self._children[pid] = number
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        log.info(
            "gateway parent (pid %d): %d workers share %s:%d",
            parent,
            len(self._children),
            settings.host,
            settings.port,
        )

    def _child(self, settings: Settings, number: int, parent: int) -> NoReturn:
        code = 1
        try:
            for signum in STOPPING:
                signal.signal(signum, signal.SIG_DFL)
            # Until the server's loop handles it: the certificates are read at start-up anyway.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            die_with_parent(parent)
            log.info("worker %d of %d: pid %d", number, settings.workers, os.getpid())
            self._serve_one(settings)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            log.exception("worker %d failed", number)
        finally:
            # Never back into the parent's code (its finally blocks would remove the metrics directory).
            logging.shutdown()
            os._exit(code)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum in STOPPING and not self._stopping:
            self._stopping = True
            log.info("%s: draining %d workers", signal.Signals(signum).name, len(self._children))
        self._send(signum)

    def _stop_children(self) -> None:
        self._stopping = True
        self._send(signal.SIGTERM)

    def _send(self, signum: int) -> None:
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _wait(self) -> int:
        """Reaps the children; the exit code is the first failing child's (0 when all drained cleanly)."""
        code = 0
        while self._children:
            pid, status = os.wait()
            number = self._children.pop(pid, None)
            if number is None:
                continue
            self._forget_metrics(pid)
            exit_code = shell_exit_code(os.waitstatus_to_exitcode(status))
            if not self._stopping:
                log.error(
                    "worker %d (pid %d) exited unasked with code %d: stopping the others (nothing restarts "
                    "workers; the gateway exits non-zero for its supervisor to restart it)",
                    number,
                    pid,
                    exit_code,
                )
                self._stop_children()
                code = code or exit_code or 1
            elif exit_code:
                log.error("worker %d (pid %d) exited with code %d", number, pid, exit_code)
                code = code or exit_code
        log.info("all workers exited; exit code %d", code)
        return code

    @contextlib.contextmanager
    def _metrics_endpoint(self) -> Iterator[None]:
        """The children's metrics, summed, on --metrics-port (a thread of this process, once they run)."""
        port = self._settings.metrics_port
        if port is None:
            yield
            return
        from prometheus_client import start_http_server

        from gateway.metrics import multiprocess_registry

        host = self._settings.host.strip("[]")
        server, thread = start_http_server(port, addr=host, registry=multiprocess_registry())
        log.info("metrics of all workers at http://%s:%d/metrics", self._settings.host, server.server_port)
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def _forget_metrics(self, pid: int) -> None:
        if self._settings.metrics_port is None:
            return
        from prometheus_client import multiprocess

        # Live gauges (streams in flight) of a dead process must not count any more.
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
