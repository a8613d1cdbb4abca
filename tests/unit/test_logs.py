"""Logging (gateway/logs.py): the text and JSON formats, the access line, and configure_logging."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator

import pytest

from gateway import logs
from gateway.call_record import CallRecord
from gateway.config import Settings

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record(message: str, *args: object, name: str = "gateway.test", **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def access_record(**fields: object) -> CallRecord:
    base: dict[str, object] = {
        "method": "glance.gateway.v1.ImageService/GetImage", "grpc_type": "server_stream", "started": 0.0,
        "code": "NOT_FOUND", "reason": "NOT_FOUND", "request_id": "req-x", "trace_id": "ab" * 16,
        "image_id": "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f", "bytes_sent": 0, "bytes_received": 0,
        "peer": "ipv4:127.0.0.1:5000",
    }  # fmt: skip
    base.update(fields)
    return CallRecord(**base)  # type: ignore[arg-type]


def test_json_lines_have_time_level_logger_message_and_extra_fields() -> None:
    line = logs.JsonFormatter().format(record("hello %s", "world", image_id="i-1", count=3))
    entry = json.loads(line)
    assert ISO_UTC.fullmatch(entry.pop("time"))
    assert entry == {
        "level": "INFO", "logger": "gateway.test", "message": "hello world", "image_id": "i-1", "count": 3,
    }  # fmt: skip


def test_a_traceback_stays_on_its_json_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        failed = logging.LogRecord("gateway.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = logs.JsonFormatter().format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert (
        entry["level"] == "ERROR" and "Traceback" in entry["exception"] and "bad\nthing" in entry["exception"]
    )


def test_text_lines_keep_the_classic_format_and_add_extra_fields() -> None:
    formatter = logs.TextFormatter(logs.TEXT_FORMAT)
    line = formatter.format(record("hello", image_id="i-1", empty="", nothing=None))
    assert re.fullmatch(r"\S+ \S+ INFO gateway.test: hello image_id=i-1", line), line
    assert formatter.format(record("plain")).endswith("INFO gateway.test: plain")


def test_the_access_line_in_both_formats(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=logs.ACCESS_LOGGER)
    logs.access_line(access_record(bytes_sent=1024), 0.0123)
    (line,) = caplog.records
    assert line.name == "gateway.access" and line.levelno == logging.INFO

    text = logs.TextFormatter(logs.TEXT_FORMAT).format(line)
    assert text.split(" ", 2)[2] == (
        "INFO gateway.access: glance.gateway.v1.ImageService/GetImage NOT_FOUND in 12.3 ms reason=NOT_FOUND "
        "peer=ipv4:127.0.0.1:5000 request_id=req-x trace_id=" + "ab" * 16 + " "
        "image_id=0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f bytes_sent=1024"
    )

    entry = json.loads(logs.JsonFormatter().format(line))
    del entry["time"]
    assert entry == {
        "level": "INFO", "logger": "gateway.access",
        "message": "glance.gateway.v1.ImageService/GetImage NOT_FOUND in 12.3 ms",
        "method": "glance.gateway.v1.ImageService/GetImage", "grpc_type": "server_stream",
        "code": "NOT_FOUND", "reason": "NOT_FOUND", "duration_ms": 12.3, "peer": "ipv4:127.0.0.1:5000",
        "request_id": "req-x",
        "trace_id": "ab" * 16, "image_id": "0f2c1d5e-8a9b-4c3d-9e8f-7a6b5c4d3e2f", "bytes_sent": 1024,
        "bytes_received": 0,
    }  # fmt: skip


def test_no_access_line_below_its_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=logs.ACCESS_LOGGER)
    logs.access_line(access_record(), 0.001)
    assert not caplog.records


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    flags = (logging._srcfile, logging.logThreads, logging.logMultiprocessing)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)
    logging._srcfile, logging.logThreads, logging.logMultiprocessing = flags


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_configure_logging(
    log_format: str, level: str, root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.configure_logging(Settings(log_format=log_format, log_level=level))
    root = logging.getLogger()
    assert root.level == getattr(logging, level)
    (handler,) = root.handlers
    assert isinstance(handler.formatter, logs.JsonFormatter if log_format == "json" else logs.TextFormatter)
    # httpx's per-request INFO lines only at DEBUG.
    assert logging.getLogger("httpx").level == (logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("gateway.test").info("one line")
    (written,) = stderr.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(written)["message"] == "one line"
    else:
        assert written.endswith("INFO gateway.test: one line")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_with_workers_every_line_names_its_process(
    log_format: str, root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.configure_logging(Settings(log_format=log_format, workers=2, port=50051))
    logging.getLogger("gateway.test").info("one line")
    (written,) = stderr.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(written)["pid"] == os.getpid()
    else:
        assert f"INFO [{os.getpid()}] gateway.test: one line" in written
