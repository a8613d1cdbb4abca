"""How the gateway logs: readable text or one JSON object per line, and one access line per RPC.

Tokens are never logged: no log call here or elsewhere in the gateway is given a token or the invocation
metadata that holds one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from gateway.call_record import CallRecord
from gateway.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With --workers, every line names the process that wrote it (the workers share one stderr).
WORKERS_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
ACCESS_LOGGER = "gateway.access"

# What every LogRecord has; anything else on a record came in through `extra=` and is a field of its own.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# The access line's message already says these; the text format does not repeat them as key=value.
_ACCESS_IN_MESSAGE = frozenset({"method", "code", "duration_ms", "grpc_type"})

_access = logging.getLogger(ACCESS_LOGGER)


def configure_logging(settings: Settings) -> None:
    """The root logger at --log-level, writing --log-format lines to stderr."""
    handler = logging.StreamHandler()
    several = settings.workers > 1
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(with_pid=several))
    else:
        handler.setFormatter(TextFormatter(WORKERS_TEXT_FORMAT if several else TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # Neither format shows the caller's file and line or the thread, so logging need not find them for every
    # record: a third of the cost of an access line (the "Optimization" section of Python's logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    # httpx logs every request line at INFO; keep that at DEBUG level only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class TextFormatter(logging.Formatter):
    """The classic one-line format, followed by any extra fields as ` key=value` (empty ones left out)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        hidden = _ACCESS_IN_MESSAGE if record.name == ACCESS_LOGGER else frozenset()
        pairs = [
            f"{key}={value}"
            for key, value in _extra_fields(record).items()
            if key not in hidden and value not in (None, "", 0)
        ]
        return f"{line} {' '.join(pairs)}" if pairs else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, then any extra fields.

    A traceback goes in `exception` as one string, so it stays on its line (JSON escapes the newlines).
    `with_pid` adds the writing process's `pid` (with --workers, several processes share one stderr).
    """

    def __init__(self, with_pid: bool = False) -> None:
        super().__init__()
        self._with_pid = with_pid

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._with_pid:
            entry["pid"] = record.process
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def access_line(record: CallRecord, seconds: float) -> None:
    """The one INFO line of a finished RPC."""
    if not _access.isEnabledFor(logging.INFO):
        return
    duration_ms = round(seconds * 1000, 1)
    fields = {
        "method": record.method,
        "grpc_type": record.grpc_type,
        "code": record.code,
        "reason": record.reason,
        "duration_ms": duration_ms,
        "peer": record.peer,
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "image_id": record.image_id,
        "bytes_sent": record.bytes_sent,
        "bytes_received": record.bytes_received,
    }
    _access.info("%s %s in %.1f ms", record.method, record.code, duration_ms, extra=fields)
