"""`python -m gateway --port 50051 --glance-url http://127.0.0.1:9292`"""

from __future__ import annotations

import ctypes
import logging

import uvloop

from gateway.config import parse_settings
from gateway.server import serve

# glibc's mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def main() -> None:
    settings = parse_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request line at INFO; keep that at DEBUG level only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    keep_large_buffers_in_the_heap()
    # uvloop: less CPU per call and per streamed byte than asyncio's default loop (bench/NOTES.md).
    uvloop.run(serve(settings))


def keep_large_buffers_in_the_heap() -> None:
    """Stops glibc from mmap()ing and unmapping every 1 MiB chunk buffer: each fresh mapping costs page faults
    and zeroing. The same as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ in the environment, without a
    wrapper script; measured in bench/NOTES.md."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)


if __name__ == "__main__":
    main()
