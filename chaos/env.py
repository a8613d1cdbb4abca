"""The suite's world: one real Glance (3 uWSGI workers, started here), gateways as real processes, probes.

Each scenario gets its own gateway process (with the flags it needs) and checks that Glance answers before it
starts; a scenario that kills Glance restarts it on the same port with the same state dir.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psutil
from google.rpc import error_details_pb2, status_pb2

from harness.data import pseudo_random_chunks
from harness.process import REPO, GatewayProcess, peak_rss_bytes
from harness.process import upstream_connections as upstream_connections
from localglance import GlanceServer

MIB = 1024 * 1024
# uWSGI's socket-timeout: localglance's default is 10 s; 30 s here so that an upstream connection released
# within the gateway's stall timeout (3 s) is the gateway's doing, not Glance giving up on a silent peer.
GLANCE_SOCKET_TIMEOUT = 30
GLANCE_WORKERS = 3
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", 16 * MIB),
    ("grpc.max_send_message_length", 16 * MIB),
    ("grpc.enable_http_proxy", 0),  # loopback: never through a proxy from the environment
]
# uWSGI's request log line: "... GET /v2/images/<id> => generated 12 bytes in 3 msecs (HTTP/1.1 200) ..."
UWSGI_REQUEST = re.compile(
    r"\] (GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) => generated .*?\(HTTP/1\.[01] (\d{3})\)"
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNKNOWN_FLAG = re.compile(r"unrecognized arguments: (.*)")

Log = Callable[[str], None]


def request_shape(path: str) -> str:
    """/v2/images/<uuid>/file?x=1 -> /v2/images/{id}/file: requests of one kind counted together."""
    return UUID.sub("{id}", path.split("?", 1)[0])


def log_stderr(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


class FeatureMissing(Exception):
    """The gateway refused a flag a scenario needs: the feature is not in this build yet."""


# -- gRPC channels -------------------------------------------------------------------------


def aio_channel(address: str, own_connection: bool = False) -> grpc.aio.Channel:
    """An asyncio channel; `own_connection` gives it a TCP connection of its own (not shared with others)."""
    options = list(CHANNEL_OPTIONS)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(address, options=options)


def code_name(err: BaseException) -> str:
    """A failed call's status code as a name ("UNAVAILABLE"); "UNKNOWN" for anything that is not a call."""
    if isinstance(err, grpc.aio.AioRpcError):
        return str(err.code().name)
    if isinstance(err, grpc.RpcError) and isinstance(err, grpc.Call):
        return str(err.code().name)
    return "UNKNOWN"


def error_reason(err: BaseException) -> str:
    """The ErrorInfo reason of a failed call, with Glance's HTTP status when Glance reported it:
    "GLANCE_INTERNAL_ERROR (Glance 500)"; "" when the call carried no ErrorInfo."""
    if not isinstance(err, grpc.aio.AioRpcError | grpc.Call):
        return ""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                glance = info.metadata.get("glance_status")
                return str(info.reason) + (f" (Glance {glance})" if glance else "")
    return ""


# -- probes of a process -------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MIB


def vmhwm_mib(pid: int) -> float:
    return peak_rss_bytes(pid) / MIB


@dataclass(frozen=True)
class Sample:
    at: float
    rss_mib: float
    fds: int
    upstream: int


class Sampler:
    """Samples a process's RSS, open fds and upstream connections every `interval` seconds in a thread."""

    def __init__(self, pid: int, glance_port: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.glance_port = glance_port
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval)

    def take(self) -> Sample | None:
        try:
            sample = Sample(
                at=time.monotonic() - self._started,
                rss_mib=rss_mib(self.pid),
                fds=fd_count(self.pid),
                upstream=len(upstream_connections(self.pid, self.glance_port)),
            )
        except (psutil.Error, OSError):
            return None  # the process is gone (a scenario may kill it)
        self.samples.append(sample)
        return sample

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.take()

    def rss(self) -> tuple[float, ...]:
        return tuple(s.rss_mib for s in self.samples)

    def fds(self) -> tuple[float, ...]:
        return tuple(float(s.fds) for s in self.samples)

    def upstream(self) -> tuple[float, ...]:
        return tuple(float(s.upstream) for s in self.samples)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until the predicate held, or None if it never did within `timeout`."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(interval)


# -- images seeded straight into Glance ------------------------------------------------------


@dataclass(frozen=True)
class SeededImage:
    id: str
    name: str
    size: int
    seed: int
    sha512: str


def seed_image(glance_url: str, name: str, size: int, seed: int) -> SeededImage:
    """Creates an image with `size` pseudo-random bytes straight in Glance (POST, then a streamed PUT)."""
    sha = hashlib.sha512()
    for chunk in pseudo_random_chunks(seed, size):
        sha.update(chunk)
    with httpx.Client(base_url=glance_url, trust_env=False, timeout=300) as client:
        created = client.post(
            "/v2/images", json={"name": name, "disk_format": "raw", "container_format": "bare"}
        )
        created.raise_for_status()
        image_id = str(created.json()["id"])
        uploaded = client.put(
            f"/v2/images/{image_id}/file",
            content=pseudo_random_chunks(seed, size),
            headers={"Content-Type": "application/octet-stream"},
        )
        uploaded.raise_for_status()
        status = client.get(f"/v2/images/{image_id}").json()["status"]
        if status != "active":
            raise RuntimeError(f"seeded image {image_id} is {status}, not active")
    return SeededImage(image_id, name, size, seed, sha.hexdigest())


# -- the environment -------------------------------------------------------------------------


class Env:
    """One Glance for the whole suite; gateways per scenario, each stopped when the scenario ends."""

    def __init__(self, state_dir: Path, log: Log = log_stderr) -> None:
        self.state_dir = state_dir
        self.log = log
        self.glance = GlanceServer(
            state_dir=state_dir, processes=GLANCE_WORKERS, socket_timeout=GLANCE_SOCKET_TIMEOUT
        )
        self.gateway_flags = known_gateway_flags()
        self._gateways: list[GatewayProcess] = []

    @property
    def glance_url(self) -> str:
        return self.glance.url

    @property
    def glance_port(self) -> int:
        return self.glance.port

    def start(self) -> None:
        self.glance.start()

    def close(self) -> None:
        self.stop_gateways()
        self.glance.stop()

    # -- Glance ----------------------------------------------------------------------------

    def glance_answers(self) -> bool:
        try:
            with httpx.Client(trust_env=False, timeout=5) as client:
                return client.get(f"{self.glance_url}/v2/images?limit=1").status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_glance(self) -> None:
        """A known state for the next scenario: Glance running and answering (restarted if not)."""
        if self.glance.is_running() and self.glance_answers():
            return
        self.log("glance is not answering: restarting it on the same port and state dir")
        self.restart_glance()

    def kill_glance(self) -> None:
        """SIGKILL every uWSGI process (master and workers) at once, then reap the master."""
        pid = self.glance.pid
        if pid is None:
            raise RuntimeError("glance is not started")
        os.killpg(pid, signal.SIGKILL)
        self.glance.stop(timeout=0)

    def restart_glance(self) -> float:
        """Starts Glance again on the same port with the same state dir and data; returns the seconds."""
        started = time.monotonic()
        self.glance.stop(timeout=0)
        self.glance = GlanceServer(
            port=self.glance.port,
            state_dir=self.state_dir,
            processes=GLANCE_WORKERS,
            socket_timeout=GLANCE_SOCKET_TIMEOUT,
            fresh=False,
        )
        self.glance.start()
        return time.monotonic() - started

    # -- gateways --------------------------------------------------------------------------

    def has_flags(self, *flags: str) -> bool:
        return all(flag in self.gateway_flags for flag in flags)

    def gateway(self, *extra_args: str, log_level: str = "INFO") -> GatewayProcess:
        """Starts `python -m gateway` with these flags; FeatureMissing if it does not know one of them."""
        process = GatewayProcess(self.glance_url, *extra_args, log_level=log_level, isolated=True)
        try:
            process.start()
        except RuntimeError as exc:
            unknown = UNKNOWN_FLAG.search(str(exc))
            if unknown:
                raise FeatureMissing(f"the gateway does not know {unknown.group(1).strip()}") from exc
            raise
        self._gateways.append(process)
        return process

    def glance_log_count(self, text: str) -> int:
        """How many lines of Glance's API log (kept across restarts) contain `text`."""
        try:
            with open(self.glance.config.api_log, errors="replace") as log:
                return sum(text in line for line in log)
        except FileNotFoundError:
            return 0

    def glance_responses(self) -> Counter[str]:
        """Glance's answers so far, from uWSGI's request log (since the last start): "PUT /file 500" -> n."""
        found: Counter[str] = Counter()
        try:
            with open(self.glance.config.uwsgi_log, errors="replace") as log:
                for line in log:
                    match = UWSGI_REQUEST.search(line)
                    if match:
                        method, path, status = match.groups()
                        found[f"{method} {request_shape(path)} {status}"] += 1
        except FileNotFoundError:
            pass
        return found

    def gateway_problems(self, limit: int = 12) -> list[str]:
        """WARNING/ERROR lines and tracebacks the scenario's gateways logged (the last `limit`)."""
        found: list[str] = []
        for process in self._gateways:
            lines = process.log_lines
            for index, line in enumerate(lines):
                if " WARNING " in line or " ERROR " in line:
                    found.append(line[:300])
                elif line.startswith("Traceback"):
                    # The traceback's last line is the exception itself.
                    end = index + 1
                    while end < len(lines) and not lines[end][:2].isdigit():
                        end += 1
                    found.append(f"Traceback ... {lines[end - 1][:300]}")
        return found[-limit:]

    def stop_gateways(self) -> None:
        while self._gateways:
            self._gateways.pop().stop()


def known_gateway_flags() -> frozenset[str]:
    """The long options `python -m gateway --help` lists."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]+)", done.stdout))


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
