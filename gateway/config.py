"""Settings of the gateway, from the command line and the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MIB = 1024 * 1024
# Room for the protobuf framing around a data chunk.
MESSAGE_OVERHEAD = 1024


@dataclass(frozen=True)
class Settings:
    glance_url: str
    host: str = "127.0.0.1"
    port: int = 50051
    chunk_size: int = MIB
    max_message_size: int = 4 * MIB
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 100
    upload_window: int = MIB
    log_level: str = "INFO"
    tls_cert: str | None = None
    tls_key: str | None = None
    glance_ca_file: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        parts = urlsplit(self.glance_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"glance URL must be http(s)://host[:port][/path], got {self.glance_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("glance URL must not carry a query, fragment or credentials")
        if self.chunk_size <= 0:
            raise ValueError("chunk size must be positive")
        if not 64 * 1024 <= self.upload_window <= 256 * MIB:
            raise ValueError("upload window must be between 64 KiB and 256 MiB")
        if self.chunk_size + MESSAGE_OVERHEAD > self.max_message_size:
            raise ValueError("chunk size must stay below the max message size (minus 1 KiB of framing)")
        for name in ("connect_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")

    @property
    def glance_base(self) -> str:
        """The Glance URL without a trailing slash: every upstream request is below it."""
        return self.glance_url.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="gRPC gateway for OpenStack Glance images (glance.gateway.v1.ImageService).",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
        help="address to listen on; 0.0.0.0 or [::] for all (env GATEWAY_HOST, default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GATEWAY_PORT", "50051")),
        help="gRPC port to listen on (env GATEWAY_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--glance-url",
        default=os.environ.get("GLANCE_URL", "http://127.0.0.1:9292"),
        help="the one Glance endpoint this gateway talks to, e.g. http://glance:9292 "
        "(env GLANCE_URL, default %(default)s)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=MIB,
        help="largest data chunk sent in one GetImage message, in bytes (default %(default)s)",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=4 * MIB,
        help="largest gRPC message sent or accepted, in bytes; bounds AddImage data chunks "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for a connection to Glance (default %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=60.0,
        help="seconds Glance may stay silent before the call fails with DEADLINE_EXCEEDED; "
        "a client deadline shortens it (default %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=100,
        help="most concurrent connections to Glance (default %(default)s)",
    )
    parser.add_argument(
        "--upload-window",
        type=int,
        default=MIB,
        help="HTTP/2 receive window of each gRPC stream, in bytes: what one upload can have buffered in the "
        "gateway. An upload over a path with round-trip time RTT reaches at most window/RTT; raise it for "
        "far-away clients (default %(default)s)",
    )
    parser.add_argument(
        "--tls-cert",
        default=os.environ.get("GATEWAY_TLS_CERT"),
        help="PEM certificate chain: serve gRPC over TLS (env GATEWAY_TLS_CERT; needs --tls-key). Without it "
        "the gateway serves plaintext, for loopback or behind a mesh sidecar that terminates TLS",
    )
    parser.add_argument(
        "--tls-key",
        default=os.environ.get("GATEWAY_TLS_KEY"),
        help="PEM private key of --tls-cert (env GATEWAY_TLS_KEY)",
    )
    parser.add_argument(
        "--glance-ca-file",
        default=os.environ.get("GLANCE_CA_FILE"),
        help="PEM CA bundle to verify an https Glance with (env GLANCE_CA_FILE; default: the certifi bundle)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (env GATEWAY_LOG_LEVEL, default %(default)s); tokens are never logged",
    )
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return Settings(
            glance_url=args.glance_url,
            host=args.host,
            port=args.port,
            chunk_size=args.chunk_size,
            max_message_size=args.max_message_size,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            max_connections=args.max_connections,
            upload_window=args.upload_window,
            log_level=args.log_level,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            glance_ca_file=args.glance_ca_file,
        )
    except ValueError as exc:
        parser.error(str(exc))
