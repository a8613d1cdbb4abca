"""Metrics (gateway/metrics.py): names and labels, multiprocess mode, and each place that counts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import cleanup, metrics
from gateway.admission import StreamLimiter
from gateway.call_context import CallContext
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.errors import Failure, GatewayError, Operation
from gateway.glance_client import GlanceClient
from gateway.integrity import DataCheck

REPO = Path(__file__).resolve().parents[2]
IMAGE = "6f1c3a52-0d1b-4a8e-9d4f-2b7e5c9a1f00"
OTHER = "9e2d4b61-1c2a-4b9f-8e5a-3c8f6d0b2e11"
KEPT = "3b5e7d90-4c6a-4f1e-8a2b-6d9c0e1f2a33"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_grpc_metrics_have_go_grpc_prometheus_names_labels_and_types() -> None:
    rpc = metrics.RpcMetrics("server_stream", "test.v1.Names", "Get")
    rpc.started()
    rpc.handled("NOT_FOUND", 0.01, received=1, sent=0)
    families = {family.name: family for family in text_string_to_metric_families(generate_latest().decode())}
    labels = {"grpc_type", "grpc_service", "grpc_method"}
    expected = {
        "grpc_server_started": ("counter", labels),
        "grpc_server_handled": ("counter", labels | {"grpc_code"}),
        "grpc_server_handling_seconds": ("histogram", labels),
        "grpc_server_msg_received": ("counter", labels),
        "grpc_server_msg_sent": ("counter", labels),
    }
    for name, (kind, label_names) in expected.items():
        family = families[name]
        assert family.type == kind, name
        ours = [s for s in family.samples if s.labels.get("grpc_service") == "test.v1.Names"]
        assert ours and all(set(s.labels) - {"le"} == label_names for s in ours), name
    handled = families["grpc_server_handled"].samples
    assert any(
        s.labels["grpc_code"] == "NOT_FOUND" and s.labels["grpc_type"] == "server_stream" for s in handled
    )
    # Like go-grpc-prometheus: no *_created series.
    assert not [name for name in families if name.endswith("_created")]
    assert "_created" not in generate_latest().decode()


def test_gauges_sum_over_live_processes() -> None:
    for gauge in (metrics.STREAMS_IN_FLIGHT, metrics.UPLOAD_CLEANUPS_PENDING):
        assert gauge._multiprocess_mode == "livesum"


def test_every_metric_works_in_multiprocess_mode(tmp_path: Path) -> None:
    """As under --workers: PROMETHEUS_MULTIPROC_DIR set before import, a worker counts, the parent reads
    every worker's files (a collector of the default registry would raise or be missing there)."""
    worker = textwrap.dedent(
        """
        from gateway import metrics
        rpc = metrics.RpcMetrics("unary", "s.v1.S", "M")
        rpc.started(); rpc.handled("OK", 0.2, 1, 1)
        metrics.GLANCE_REQUEST_SECONDS.labels("show", "200").observe(0.05)
        metrics.DOWNLOAD_BYTES.inc(10); metrics.UPLOAD_BYTES.inc(20)
        metrics.STREAMS_IN_FLIGHT.inc(); metrics.UPLOAD_CLEANUPS_PENDING.inc()
        metrics.CHECKSUM_FAILURES.labels("download").inc(); metrics.UPLOAD_CLEANUPS.labels("deleted").inc()
        """
    )
    parent = textwrap.dedent(
        """
        from prometheus_client import generate_latest
        from gateway import metrics
        print(generate_latest(metrics.multiprocess_registry()).decode())
        """
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for _ in range(2):  # two workers
        subprocess.run([sys.executable, "-c", worker], env=env, cwd=REPO, check=True)
    scraped = subprocess.run(
        [sys.executable, "-c", parent], env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    rpc = (("grpc_method", "M"), ("grpc_service", "s.v1.S"), ("grpc_type", "unary"))
    assert samples[("grpc_server_started_total", rpc)] == 2
    assert samples[("grpc_server_handled_total", tuple(sorted((*rpc, ("grpc_code", "OK")))))] == 2
    assert samples[("grpc_server_handling_seconds_count", rpc)] == 2
    assert (
        samples[
            (
                "glance_gateway_glance_request_duration_seconds_count",
                (("operation", "show"), ("status", "200")),
            )
        ]
        == 2
    )
    assert samples[("glance_gateway_download_bytes_total", ())] == 20
    assert samples[("glance_gateway_upload_bytes_total", ())] == 40
    assert samples[("glance_gateway_checksum_failures_total", (("operation", "download"),))] == 2
    assert samples[("glance_gateway_upload_cleanups_total", (("outcome", "deleted"),))] == 2
    # The workers have exited, but nothing marked them dead: livesum still counts their values here.
    assert samples[("glance_gateway_streams_in_flight", ())] == 2


def test_the_stream_limiter_keeps_the_in_flight_gauge() -> None:
    before = value("glance_gateway_streams_in_flight")

    async def run() -> None:
        limiter = StreamLimiter(2)
        async with limiter.admit():
            async with limiter.admit():
                assert value("glance_gateway_streams_in_flight") == before + 2
                with pytest.raises(GatewayError):
                    async with limiter.admit():
                        pass
                assert value("glance_gateway_streams_in_flight") == before + 2
            assert value("glance_gateway_streams_in_flight") == before + 1

    asyncio.run(run())
    assert value("glance_gateway_streams_in_flight") == before


def test_digest_mismatches_are_counted_where_they_are_found() -> None:
    download_before = value("glance_gateway_checksum_failures_total", operation="download")
    upload_before = value("glance_gateway_checksum_failures_total", operation="upload")

    async def run() -> None:
        data = b"image data"
        wrong = {"sha512": hashlib.sha512(b"other").hexdigest()}
        check = DataCheck(Operation.DOWNLOAD, len(data), wrong, size_failure=Failure.UPSTREAM_BROKEN)
        await check.update(data)
        with pytest.raises(GatewayError, match="does not match"):
            await check.finish()
        # An upload's finish message that disagrees with the digest given up front.
        check = DataCheck(Operation.UPLOAD, None, {"md5": hashlib.md5(data).hexdigest()})
        with pytest.raises(GatewayError, match="not the expected one"):
            check.expect("md5", hashlib.md5(b"other").hexdigest())
        # A wrong length is not a checksum failure.
        check = DataCheck(Operation.UPLOAD, 3)
        with pytest.raises(GatewayError):
            await check.update(data)
        # Matching data is none either.
        check = DataCheck(Operation.DOWNLOAD, len(data), {"sha512": hashlib.sha512(data).hexdigest()})
        await check.update(data)
        await check.finish()

    asyncio.run(run())
    assert value("glance_gateway_checksum_failures_total", operation="download") == download_before + 1
    assert value("glance_gateway_checksum_failures_total", operation="upload") == upload_before + 1


def _durations() -> dict[tuple[str, str], float]:
    name = "glance_gateway_glance_request_duration_seconds_count"
    return {
        (sample.labels["operation"], sample.labels["status"]): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_glance_requests_are_timed_by_operation_and_status() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("refused", request=request)
        if request.url.path.endswith(f"{IMAGE}/file"):
            return httpx.Response(200, stream=httpx.ByteStream(b"abc"))
        if request.url.path.endswith(IMAGE):
            return httpx.Response(200, json={"id": IMAGE})
        if request.url.path == "/v2/images":
            return httpx.Response(200, json={"images": []})
        return httpx.Response(404, json={"message": "no"})

    def client(url: str) -> GlanceClient:
        return GlanceClient(Settings(glance_url=url), transport=httpx.MockTransport(handle))

    before = _durations()

    async def run() -> None:
        call = CallContext()
        async with client("http://glance.test") as glance:
            await glance.show_image(IMAGE, call)
            await glance.list_images([], call)
            with pytest.raises(GatewayError):
                await glance.show_image(OTHER, call)
            async with glance.download(IMAGE, None, call) as download:
                assert [chunk async for chunk in download.chunks()] == [b"abc"]
        async with client("http://down.test") as glance:
            with pytest.raises(GatewayError):
                await glance.show_image(IMAGE, call)
            with pytest.raises(GatewayError):
                async with glance.download(IMAGE, None, call):
                    pass

    asyncio.run(run())
    after = _durations()
    changed = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
    assert changed == {
        ("show", "200"): 1,
        ("list", "200"): 1,
        ("show", "404"): 1,
        ("download", "200"): 1,
        ("show", "error"): 1,
        ("download", "error"): 1,
    }


def test_janitor_outcomes_and_pending_removals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleanup, "FIRST_DELAY", 0.001)
    images = {IMAGE: "queued", KEPT: "queued"}
    release = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        await release.wait()
        image_id = request.url.path.rsplit("/", 1)[-1]
        if image_id not in images:
            return httpx.Response(404, json={"message": "no"})
        if request.method == "DELETE":
            if image_id == KEPT:
                return httpx.Response(401, json={"message": "The token has expired."})  # not retried
            del images[image_id]
            return httpx.Response(204)
        return httpx.Response(200, json={"id": image_id, "status": images[image_id]})

    deleted_before = value("glance_gateway_upload_cleanups_total", outcome="deleted")
    given_up_before = value("glance_gateway_upload_cleanups_total", outcome="given_up")
    pending_before = value("glance_gateway_upload_cleanups_pending")

    async def run() -> None:
        settings = Settings(glance_url="http://glance.test")
        async with (
            GlanceClient(settings, transport=httpx.MockTransport(handle)) as glance,
            Janitor(glance) as janitor,
        ):
            removals = [janitor.discard(IMAGE, CallContext()), janitor.discard(KEPT, CallContext())]
            assert value("glance_gateway_upload_cleanups_pending") == pending_before + 2
            release.set()
            assert await asyncio.gather(*removals) == [True, False]
            await asyncio.sleep(0)  # the done callbacks
            assert value("glance_gateway_upload_cleanups_pending") == pending_before

    asyncio.run(run())
    assert value("glance_gateway_upload_cleanups_total", outcome="deleted") == deleted_before + 1
    assert value("glance_gateway_upload_cleanups_total", outcome="given_up") == given_up_before + 1
