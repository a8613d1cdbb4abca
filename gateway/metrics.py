"""The gateway's Prometheus metrics: gRPC server metrics as go-grpc-prometheus names them, and its own.

Every metric works in prometheus-client's multiprocess mode too (`--workers N`, where PROMETHEUS_MULTIPROC_DIR
is set before this module is imported): only counters, histograms and gauges summed over live processes.
Hot paths count in local variables and touch a metric once per call or Glance request, never per message.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)

# No `*_created` series beside each counter and histogram: go-grpc-prometheus has none, and they double the
# number of series for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# go-grpc-prometheus's buckets (Prometheus' defaults), plus some for long image streams.
_RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# A Glance request lasts until its response is closed: for a download, until the data has been streamed.
_GLANCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

GRPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC_LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, regardless of success or failure.",
    (*_RPC_LABELS, "grpc_code"),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Response latency (seconds) of RPCs handled by the server, to the end of the last message.",
    _RPC_LABELS,
    buckets=_RPC_BUCKETS,
)
GRPC_MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total", "RPC stream messages received on the server.", _RPC_LABELS
)
GRPC_MSG_SENT = Counter("grpc_server_msg_sent_total", "RPC stream messages sent by the server.", _RPC_LABELS)

GLANCE_REQUEST_SECONDS = Histogram(
    "glance_gateway_glance_request_duration_seconds",
    "Duration of requests to Glance until their response was closed, by operation and HTTP status "
    "('error': no answer, the exchange failed; 'cancelled': the call was cancelled before an answer).",
    ("operation", "status"),
    buckets=_GLANCE_BUCKETS,
)
DOWNLOAD_BYTES = Counter(
    "glance_gateway_download_bytes_total", "Image data bytes sent to clients (GetImage)."
)
UPLOAD_BYTES = Counter(
    "glance_gateway_upload_bytes_total", "Image data bytes received from clients (AddImage)."
)
STREAMS_IN_FLIGHT = Gauge(
    "glance_gateway_streams_in_flight",
    "GetImage, AddImage and StageImageData streams being served (bounded by --max-streams).",
    multiprocess_mode="livesum",
)
CHECKSUM_FAILURES = Counter(
    "glance_gateway_checksum_failures_total",
    "Image data that did not match its digest (download: Glance's data; upload: the client's).",
    ("operation",),
)
UPLOAD_CLEANUPS = Counter(
    "glance_gateway_upload_cleanups_total",
    "Image records of failed uploads removed ('deleted') or left to the sweep ('given_up').",
    ("outcome",),
)
UPLOAD_CLEANUPS_PENDING = Gauge(
    "glance_gateway_upload_cleanups_pending",
    "Image records of failed uploads still being removed in the background.",
    multiprocess_mode="livesum",
)

# Series that exist from the start at 0, so dashboards and alerts see them before the first event.
for _operation in ("download", "upload"):
    CHECKSUM_FAILURES.labels(_operation)
for _outcome in ("deleted", "given_up"):
    UPLOAD_CLEANUPS.labels(_outcome)


class RpcMetrics:
    """The series of one RPC method, looked up once: `labels()` costs a lock and a dict lookup per use."""

    def __init__(self, grpc_type: str, service: str, method: str) -> None:
        self._labels = (grpc_type, service, method)
        self._started = GRPC_STARTED.labels(*self._labels)
        self._seconds = GRPC_HANDLING_SECONDS.labels(*self._labels)
        self._received = GRPC_MSG_RECEIVED.labels(*self._labels)
        self._sent = GRPC_MSG_SENT.labels(*self._labels)
        self._handled: dict[str, Counter] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: str, seconds: float, received: int, sent: int) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = GRPC_HANDLED.labels(*self._labels, code)
        handled.inc()
        self._seconds.observe(seconds)
        if received:
            self._received.inc(received)
        if sent:
            self._sent.inc(sent)


_glance_series: dict[tuple[str, str], Histogram] = {}


def observe_glance_request(operation: str, status: str, seconds: float) -> None:
    series = _glance_series.get((operation, status))
    if series is None:
        series = _glance_series[(operation, status)] = GLANCE_REQUEST_SECONDS.labels(operation, status)
    series.observe(seconds)


def multiprocess_registry() -> CollectorRegistry:
    """A registry of every worker's metrics (PROMETHEUS_MULTIPROC_DIR), for the parent's /metrics."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
