"""How the gateway listens: the connection settings as gRPC core server options (in one place), and binding.

Semantics checked against gRPC core (1.85) and on the wire (tests/integration/test_connections.py):
- durations are whole milliseconds in a C int, and INT_MAX means "infinite" (ChannelArgs::
  GetDurationFromIntMillis), which is also core's default for connection idle, age and age grace; so the
  gateway's "0 = never / no limit" becomes INT_MAX;
- a client ping is "too soon" when it comes less than grpc.http2.min_ping_interval_without_data_ms
  (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; gRPC ignores unknown names silently, and the
  macro's name is not its value) after the previous one with no data sent in between, or at all on a
  connection without calls unless grpc.keepalive_permit_without_calls is 1; more than
  grpc.http2.max_ping_strikes such pings get GOAWAY ENHANCE_YOUR_CALM "too_many_pings";
- an unanswered server keepalive ping closes the connection after grpc.http2.ping_timeout_ms (measured:
  grpc.keepalive_timeout_ms alone did not close it before the 60 s ping timeout), so --keepalive-timeout
  sets both;
- grpc.so_reuseport defaults to 1 on Linux, which lets a second server bind a port already in use and
  silently take half its connections.
"""

from __future__ import annotations

import logging

import grpc

from gateway.config import Settings

log = logging.getLogger(__name__)

INT_MAX = 2**31 - 1
# gRPC core's default: a client that pings too soon three times in a row is sent away.
MAX_PING_STRIKES = 2

ServerOptions = list[tuple[str, int]]


def milliseconds(seconds: float, *, zero_means_never: bool = False) -> int:
    """A duration as gRPC core reads it: whole milliseconds, INT_MAX for "never" (and anything longer)."""
    if zero_means_never and seconds == 0:
        return INT_MAX
    return min(round(seconds * 1000), INT_MAX)


def reuse_port(settings: Settings) -> ServerOptions:
    """SO_REUSEPORT only where workers share the port on purpose: a single gateway must fail to start on a
    port that another process already holds, not share its connections."""
    return [("grpc.so_reuseport", 1 if settings.workers > 1 else 0)]


def server_options(settings: Settings) -> ServerOptions:
    """Every option of the main gRPC server."""
    return [
        ("grpc.max_send_message_length", settings.max_message_size),
        ("grpc.max_receive_message_length", settings.max_message_size),
        # A fixed receive window instead of gRPC's adaptive (BDP-probed) one: the adaptive window grew
        # while a long upload ran into a slower Glance, and the gateway's memory with it (bench/NOTES.md).
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", settings.upload_window),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.keepalive_time_ms", milliseconds(settings.keepalive_time)),
        ("grpc.keepalive_timeout_ms", milliseconds(settings.keepalive_timeout)),
        ("grpc.http2.ping_timeout_ms", milliseconds(settings.keepalive_timeout)),
        ("grpc.keepalive_permit_without_calls", int(settings.keepalive_permit_without_calls)),
        ("grpc.http2.min_ping_interval_without_data_ms", milliseconds(settings.min_ping_interval)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.max_connection_idle_ms", milliseconds(settings.max_connection_idle, zero_means_never=True)),
        ("grpc.max_connection_age_ms", milliseconds(settings.max_connection_age, zero_means_never=True)),
        (
            "grpc.max_connection_age_grace_ms",
            milliseconds(settings.max_connection_age_grace, zero_means_never=True),
        ),
        *reuse_port(settings),
    ]


def bind(server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None) -> int:
    """Adds a listening port (TLS with credentials); the bound port, or exits with a clear message."""
    address = f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # gRPC raises "Failed to bind to address" (older versions returned 0)
        bound = 0
    if not bound:
        log.error(
            "cannot listen on %s: the address is in use (another gateway?) or not available here", address
        )
        raise SystemExit(1)
    return bound
