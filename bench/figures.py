"""Every figure on one upstream: runs interleaved with their baselines, gathered into Figures."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import glanceclient  # type: ignore[import-untyped]
import psutil

from bench import measure
from bench.data import UploadData
from bench.model import Figure, Target
from bench.stats import Series, paired, percentile, throughput_mb_s
from bench.upstreams import SeededImage, Upstream, http_client
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from harness.process import LISTENING, GatewayProcess
from localglance.ports import free_port

MIB = 1024 * 1024
# Targets from the issue. "Flat": the peak at the big size may exceed the peak at the small size by this much.
DOWNLOAD_RATIO = 0.9
UPLOAD_RATIO = 0.95
GLANCECLIENT_RATIO = 1.0
RSS_PEAK_MIB = 100.0
RSS_GROWTH_MIB = 16.0
ADDED_P50_MS = 0.5
ADDED_P99_MS = 2.0
CONCURRENCY_RATIO = 1.0
# --workers: the figures compare this many server processes with one, on the same upstream in the same run.
WORKERS = 2
# More workers must at least not cost throughput. On this 2-core machine the client and the upstream run
# beside the workers, so twice the throughput is out of reach by construction.
WORKERS_RATIO = 1.0

Log = Callable[[str], None]
T = TypeVar("T")


def log_stderr(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    runs: int
    size: int  # bytes of the image for the throughput figures
    rss_small: int
    rss_big: int
    calls: int  # sequential GetImageMeta calls per run
    concurrency: int
    calls_per_caller: int
    # The --workers figures: separate client connections (SO_REUSEPORT balances connections, not calls),
    # concurrent metadata callers on each, and concurrent downloads (one connection each).
    channels: int = 8
    callers_per_channel: int = 4
    streams: int = 4

    @property
    def image_sizes(self) -> list[int]:
        return sorted({self.size, self.rss_small, self.rss_big})


def size_label(size: int) -> str:
    if size >= 1024 * MIB and size % (1024 * MIB) == 0:
        return f"{size // (1024 * MIB)} GiB"
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size} bytes"


def interleaved(
    runs: int, gateway: Callable[[], float], baseline: Callable[[], float]
) -> list[tuple[float, float]]:
    """Per run, one gateway and one baseline measurement; which goes first alternates, so neither always
    gets the warmer (or the busier) machine."""
    results = []
    for run in range(runs):
        if run % 2 == 0:
            g = gateway()
            b = baseline()
        else:
            b = baseline()
            g = gateway()
        results.append((g, b))
    return results


def upload_data(plan: Plan, seed: int = 7) -> dict[int, UploadData]:
    """The bytes of every upload, shared by both upstreams. The RSS sizes repeat a 64 MiB buffer."""
    data = {plan.size: UploadData(plan.size, seed)}
    for size in (plan.rss_small, plan.rss_big):
        data.setdefault(size, UploadData(size, seed + 1, max_buffer=64 * MIB))
    return data


class UpstreamBench:
    """The figures for one upstream, each against its baseline measured in the same run."""

    def __init__(self, upstream: Upstream, plan: Plan, uploads: dict[int, UploadData], log: Log) -> None:
        self.upstream = upstream
        self.plan = plan
        self.uploads = uploads
        self.log = log
        self.images: dict[int, SeededImage] = {}

    def run(self) -> list[Figure]:
        for number, size in enumerate(self.plan.image_sizes):
            self.log(f"{self.upstream.name}: seeding a {size_label(size)} random image")
            self.images[size] = self.upstream.seed(size, seed=1000 + number)
        figures: list[Figure] = []
        # One gateway for the throughput, latency and concurrency figures; fresh ones for the RSS figures.
        with (
            GatewayProcess(self.upstream.url, isolated=True) as gateway,
            measure.open_channel(gateway.address) as channel,
            http_client(self.upstream.url) as client,
        ):
            stub = pb_grpc.ImageServiceStub(channel)
            figures.append(self._timed("download", lambda: self.download(stub, client)))
            figures.append(self._timed("unverified download", lambda: self.download(stub, client, False)))
            figures.append(self._timed("upload", lambda: self.upload(stub, client)))
            figures.append(self._timed("glanceclient", lambda: self.glanceclient(stub)))
            figures.extend(self._timed("latency", lambda: self.latency(stub, client)))
            figures.append(self._timed("concurrency", lambda: self.concurrency(gateway.address)))
        figures.extend(self._timed("workers", self.workers))
        figures.extend(self._timed("RSS", self.rss))
        return figures

    def _timed(self, what: str, measure_it: Callable[[], T]) -> T:
        started = time.monotonic()
        result = measure_it()
        self.log(f"{self.upstream.name}: {what} figure done in {time.monotonic() - started:.1f} s")
        return result

    def _figure(self, key: str, title: str, unit: str, pairs: list[tuple[float, float]], **kw: Any) -> Figure:
        gateway = Series.of([g for g, _ in pairs])
        baseline = Series.of([b for _, b in pairs])
        kind = kw.pop("result_kind", "ratio")
        result = paired(gateway, baseline, "ratio" if kind == "ratio" else "difference")
        return Figure(
            key=key,
            title=title,
            upstream=self.upstream.name,
            unit=unit,
            gateway=gateway,
            baseline=baseline,
            result=result,
            result_kind=kind,
            **kw,
        )

    def download(self, stub: pb_grpc.ImageServiceStub, client: Any, verify: bool = True) -> Figure:
        """GetImage as users get it (SHA-512 verified), or with skip_verification: like for like with a
        direct download, which verifies nothing."""
        image = self.images[self.plan.size]
        pairs = interleaved(
            self.plan.runs,
            lambda: throughput_mb_s(image.size, measure.gateway_download(stub, image, verify)),
            lambda: throughput_mb_s(image.size, measure.direct_download(client, image)),
        )
        label = "GetImage" if verify else "GetImage skip_verification"
        self._log_pairs(label, pairs, "MB/s")
        return self._figure(
            "download" if verify else "download_unverified",
            f"{label} MB/s, {size_label(image.size)} random image",
            "MB/s",
            pairs,
            gateway_label=label,
            baseline_label="direct httpx streaming GET",
            result_unit="",
            target=Target(">=", DOWNLOAD_RATIO),
        )

    def upload(self, stub: pb_grpc.ImageServiceStub, client: Any) -> Figure:
        data = self.uploads[self.plan.size]
        pairs = interleaved(
            self.plan.runs,
            lambda: throughput_mb_s(data.size, measure.gateway_upload(stub, self.upstream, data)),
            lambda: throughput_mb_s(data.size, measure.direct_upload(client, self.upstream, data)),
        )
        self._log_pairs("AddImage", pairs, "MB/s")
        return self._figure(
            "upload",
            f"AddImage MB/s, {size_label(data.size)}",
            "MB/s",
            pairs,
            gateway_label="AddImage",
            baseline_label="direct httpx POST + PUT",
            result_unit="",
            target=Target(">=", UPLOAD_RATIO),
        )

    def glanceclient(self, stub: pb_grpc.ImageServiceStub) -> Figure:
        image = self.images[self.plan.size]
        client = glanceclient.Client("2", endpoint=self.upstream.url, token="bench")
        client.http_client.session.trust_env = False  # loopback: never through a proxy from the environment
        pairs = interleaved(
            self.plan.runs,
            lambda: throughput_mb_s(image.size, measure.gateway_download(stub, image)),
            lambda: throughput_mb_s(image.size, measure.glanceclient_download(client, image)),
        )
        self._log_pairs("GetImage vs glanceclient", pairs, "MB/s")
        return self._figure(
            "glanceclient",
            f"GetImage MB/s vs python-glanceclient, {size_label(image.size)}",
            "MB/s",
            pairs,
            gateway_label="GetImage",
            baseline_label="glanceclient images.data()",
            result_unit="",
            target=Target(">=", GLANCECLIENT_RATIO),
        )

    def latency(self, stub: pb_grpc.ImageServiceStub, client: Any) -> list[Figure]:
        image_id = self.images[self.plan.size].id
        calls = self.plan.calls
        warmup = max(10, calls // 10)
        measure.direct_meta_latencies(client, image_id, warmup)
        measure.gateway_meta_latencies(stub, image_id, warmup)
        runs: list[tuple[list[float], list[float]]] = []
        for run in range(self.plan.runs):
            if run % 2 == 0:
                g = measure.gateway_meta_latencies(stub, image_id, calls)
                d = measure.direct_meta_latencies(client, image_id, calls)
            else:
                d = measure.direct_meta_latencies(client, image_id, calls)
                g = measure.gateway_meta_latencies(stub, image_id, calls)
            runs.append((g, d))
        figures = []
        for name, fraction, target in (("p50", 0.5, ADDED_P50_MS), ("p99", 0.99, ADDED_P99_MS)):
            pairs = [(percentile(g, fraction) * 1e3, percentile(d, fraction) * 1e3) for g, d in runs]
            self._log_pairs(f"GetImageMeta {name}", pairs, "ms")
            figures.append(
                self._figure(
                    f"latency_{name}",
                    f"GetImageMeta {name} added latency, {calls:,} sequential calls",
                    "ms",
                    pairs,
                    gateway_label=f"GetImageMeta {name}",
                    baseline_label=f"direct httpx GET {name}",
                    result_kind="difference",
                    result_unit="ms",
                    target=Target("<=", target),
                )
            )
        return figures

    def concurrency(self, address: str) -> Figure:
        image_id = self.images[self.plan.size].id
        callers, each = self.plan.concurrency, self.plan.calls_per_caller
        total = callers * each
        pairs = interleaved(
            self.plan.runs,
            lambda: total / measure.gateway_concurrent(address, image_id, callers, each),
            lambda: total / measure.direct_concurrent(self.upstream.url, image_id, callers, each),
        )
        self._log_pairs(f"{callers} concurrent GetImageMeta callers", pairs, "calls/s")
        return self._figure(
            "concurrency",
            f"{callers} concurrent GetImageMeta callers ({each} calls each): calls/s",
            "calls/s",
            pairs,
            gateway_label="grpc.aio GetImageMeta",
            baseline_label="aiohttp GET",
            result_unit="",
            target=Target(">=", CONCURRENCY_RATIO),
        )

    @contextlib.contextmanager
    def _gateway_with_workers(self, workers: int) -> Iterator[GatewayProcess]:
        """A gateway with `workers` server processes on a fixed port, once every one of them listens."""
        with GatewayProcess(
            self.upstream.url, "--workers", str(workers), "--port", str(free_port()), isolated=True
        ) as gateway:
            deadline = time.monotonic() + 30
            while sum(1 for line in list(gateway.log_lines) if LISTENING.search(line)) < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not every worker listens:\n{gateway.log_text()}")
                time.sleep(0.05)
            yield gateway

    def _connections_per_worker(self, gateway: GatewayProcess, workers: int) -> Callable[[], None]:
        """Logs how the kernel spread the client connections over the workers (SO_REUSEPORT hashes each
        connection to one; an uneven spread caps what a second worker can add)."""

        def log() -> None:
            parent = psutil.Process(gateway.pid)
            processes = parent.children() if workers > 1 else [parent]
            counts = [
                sum(1 for c in process.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == gateway.port)
                for process in processes
            ]  # fmt: skip
            self.log(f"{self.upstream.name}: --workers {workers}: client connections per worker {counts}")

        return log

    def workers(self) -> list[Figure]:
        """`--workers 2` against `--workers 1`, run by run: metadata calls/s from several client connections,
        and the aggregate MB/s of concurrent verified downloads, each on its own connection."""
        plan = self.plan
        image = self.images[plan.size]
        callers = plan.channels * plan.callers_per_channel
        calls = callers * plan.calls_per_caller
        with self._gateway_with_workers(1) as one, self._gateway_with_workers(WORKERS) as many:

            def meta(gateway: GatewayProcess, workers: int) -> float:
                seconds = measure.gateway_channels_concurrent(
                    gateway.address, image.id, plan.channels, plan.callers_per_channel,
                    plan.calls_per_caller, self._connections_per_worker(gateway, workers),
                )  # fmt: skip
                return calls / seconds

            def download(gateway: GatewayProcess, workers: int) -> float:
                connected = self._connections_per_worker(gateway, workers)
                seconds = measure.gateway_parallel_downloads(gateway.address, image, plan.streams, connected)
                return throughput_mb_s(plan.streams * image.size, seconds)

            meta_pairs = interleaved(plan.runs, lambda: meta(many, WORKERS), lambda: meta(one, 1))
            self._log_pairs(f"GetImageMeta calls/s, --workers {WORKERS} vs 1", meta_pairs, "calls/s")
            download_pairs = interleaved(plan.runs, lambda: download(many, WORKERS), lambda: download(one, 1))
            self._log_pairs(
                f"{plan.streams} GetImage streams MB/s, --workers {WORKERS} vs 1", download_pairs, "MB/s"
            )
        shared = dict(
            gateway_label=f"--workers {WORKERS}",
            baseline_label="--workers 1",
            result_unit="",
            target=Target(">=", WORKERS_RATIO),
        )
        return [
            self._figure(
                "workers_meta",
                f"GetImageMeta calls/s, {plan.channels} connections x {plan.callers_per_channel} callers: "
                f"--workers {WORKERS} vs 1",
                "calls/s",
                meta_pairs,
                **shared,
            ),
            self._figure(
                "workers_download",
                f"{plan.streams} concurrent GetImage streams (verified, one connection each), "
                f"{size_label(image.size)} each: aggregate MB/s, --workers {WORKERS} vs 1",
                "MB/s",
                download_pairs,
                **shared,
            ),
        ]

    def rss(self) -> list[Figure]:
        """A fresh gateway per run and size: SIZE down, then SIZE up; then its VmHWM from the OS."""
        small, big = self.plan.rss_small, self.plan.rss_big
        peaks: dict[int, list[float]] = {small: [], big: []}
        for run in range(self.plan.runs):
            for size in (small, big) if run % 2 == 0 else (big, small):
                with (
                    GatewayProcess(self.upstream.url, isolated=True) as gateway,
                    measure.open_channel(gateway.address) as channel,
                ):
                    stub = pb_grpc.ImageServiceStub(channel)
                    down = measure.gateway_download(stub, self.images[size])
                    up = measure.gateway_upload(stub, self.upstream, self.uploads[size])
                    peak = gateway.peak_rss_bytes() / MIB
                peaks[size].append(peak)
                self.log(
                    f"{self.upstream.name} RSS run {run + 1}: {size_label(size)} down "
                    f"{throughput_mb_s(size, down):.0f} MB/s, up {throughput_mb_s(size, up):.0f} MB/s, "
                    f"peak RSS {peak:.1f} MiB"
                )
        big_peaks, small_peaks = Series.of(peaks[big]), Series.of(peaks[small])
        title = f"gateway peak RSS (VmHWM), {size_label(big)} down then {size_label(big)} up"
        return [
            Figure(
                key="rss_peak",
                title=title,
                upstream=self.upstream.name,
                unit="MiB",
                gateway=big_peaks,
                gateway_label=f"peak RSS at {size_label(big)}",
                baseline=None,
                baseline_label="",
                result=big_peaks,
                result_kind="absolute",
                result_unit="MiB",
                target=Target("<=", RSS_PEAK_MIB),
            ),
            Figure(
                key="rss_flat",
                title=f"gateway peak RSS growth, {size_label(small)} → {size_label(big)}",
                upstream=self.upstream.name,
                unit="MiB",
                gateway=big_peaks,
                gateway_label=f"peak RSS at {size_label(big)}",
                baseline=small_peaks,
                baseline_label=f"peak RSS at {size_label(small)}",
                result=paired(big_peaks, small_peaks, "difference"),
                result_kind="difference",
                result_unit="MiB",
                target=Target("<=", RSS_GROWTH_MIB),
            ),
        ]

    def _log_pairs(self, what: str, pairs: list[tuple[float, float]], unit: str) -> None:
        for run, (g, b) in enumerate(pairs, 1):
            self.log(
                f"{self.upstream.name} {what} run {run}: gateway {g:.2f} {unit}, baseline {b:.2f} {unit}"
            )
