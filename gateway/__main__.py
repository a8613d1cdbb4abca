"""`python -m gateway --port 50051 --glance-url http://127.0.0.1:9292`"""

from __future__ import annotations

import logging

import uvloop

from gateway.config import parse_settings
from gateway.malloc_arenas import cap_arenas
from gateway.server import serve


def main() -> None:
    cap_arenas()  # before any thread starts (importing gRPC starts none; measured)
    settings = parse_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request line at INFO; keep that at DEBUG level only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    # uvloop: less CPU per call and per streamed byte than asyncio's default loop (bench/NOTES.md).
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
