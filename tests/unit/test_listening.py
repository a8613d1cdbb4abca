import asyncio

import grpc
import pytest

from gateway.config import Settings
from gateway.listening import INT_MAX, bind, milliseconds, server_options

GLANCE = "http://127.0.0.1:9"


def test_defaults_become_these_grpc_options() -> None:
    options = dict(server_options(Settings(glance_url=GLANCE)))
    assert options == {
        "grpc.max_send_message_length": 4 * 1024 * 1024,
        "grpc.max_receive_message_length": 4 * 1024 * 1024,
        "grpc.http2.bdp_probe": 0,
        "grpc.http2.lookahead_bytes": 1024 * 1024,
        "grpc.max_concurrent_streams": 256,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
        "grpc.http2.ping_timeout_ms": 20_000,
        "grpc.keepalive_permit_without_calls": 1,
        # gRPC's name for GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS (a wrong name is ignored).
        "grpc.http2.min_ping_interval_without_data_ms": 10_000,
        "grpc.http2.max_ping_strikes": 2,
        "grpc.max_connection_idle_ms": 300_000,
        "grpc.max_connection_age_ms": 1_800_000,
        "grpc.max_connection_age_grace_ms": 3_600_000,
        "grpc.so_reuseport": 0,
    }
    assert len(server_options(Settings(glance_url=GLANCE))) == len(options), "an option given twice"


def test_zero_means_never_which_grpc_spells_int_max() -> None:
    settings = Settings(
        glance_url=GLANCE, max_connection_idle=0, max_connection_age=0, max_connection_age_grace=0
    )
    options = dict(server_options(settings))
    for name in (
        "grpc.max_connection_idle_ms",
        "grpc.max_connection_age_ms",
        "grpc.max_connection_age_grace_ms",
    ):
        assert options[name] == INT_MAX == 2**31 - 1
    # A minimum ping interval of 0 is no minimum at all, not "never".
    assert (
        dict(server_options(Settings(glance_url=GLANCE, min_ping_interval=0)))[
            "grpc.http2.min_ping_interval_without_data_ms"
        ]
        == 0
    )


def test_durations_are_rounded_milliseconds_capped_at_int_max() -> None:
    assert milliseconds(0.5) == 500
    assert milliseconds(1.0004) == 1000
    assert milliseconds(10.0**9) == INT_MAX
    assert milliseconds(0) == 0
    assert milliseconds(0, zero_means_never=True) == INT_MAX
    options = dict(server_options(Settings(glance_url=GLANCE, keepalive_time=0.25, keepalive_timeout=3)))
    assert options["grpc.keepalive_time_ms"] == 250
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 3000
    assert (
        dict(server_options(Settings(glance_url=GLANCE, keepalive_permit_without_calls=False)))[
            "grpc.keepalive_permit_without_calls"
        ]
        == 0
    )


def test_only_workers_share_their_port() -> None:
    assert dict(server_options(Settings(glance_url=GLANCE)))["grpc.so_reuseport"] == 0
    workers = Settings(glance_url=GLANCE, workers=2, port=50051)
    assert dict(server_options(workers))["grpc.so_reuseport"] == 1


async def _bind_twice() -> None:
    options = server_options(Settings(glance_url=GLANCE))
    first, second = grpc.aio.server(options=options), grpc.aio.server(options=options)
    try:
        port = bind(first, "127.0.0.1", 0, None)
        await first.start()
        bind(second, "127.0.0.1", port, None)
    finally:
        await first.stop(None)
        await second.stop(None)


def test_a_port_in_use_is_a_clean_exit(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        asyncio.run(_bind_twice())
    assert exited.value.code == 1
    assert "cannot listen on 127.0.0.1:" in caplog.text
