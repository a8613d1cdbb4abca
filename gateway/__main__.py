"""`python -m gateway --port 50051 --glance-url http://127.0.0.1:9292`"""

from __future__ import annotations

import signal
import sys

from gateway.command_line import parse_settings
from gateway.config import Settings
from gateway.logs import configure_logging
from gateway.malloc_arenas import cap_arenas


def main() -> None:
    # SIGHUP reloads certificates once the server runs; until then its default action would kill the process,
    # and there is nothing to reload yet (the files are read at start-up).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = parse_settings()
    configure_logging(settings)
    if settings.workers > 1:
        from gateway.workers import run_workers

        sys.exit(run_workers(settings, serve_here))
    serve_here(settings)


def serve_here(settings: Settings) -> None:
    """Runs one server in this process (with --workers, in each worker) until it has drained."""
    # Imported here, not above: with --workers the parent forks before gRPC, uvloop or prometheus_client are
    # imported (gateway/workers.py).
    import uvloop

    from gateway.server import serve

    cap_arenas()  # before any thread starts (importing gRPC starts none; measured)
    # uvloop: less CPU per call and per streamed byte than asyncio's default loop (bench/NOTES.md).
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
