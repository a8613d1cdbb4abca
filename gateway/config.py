"""Settings of the gateway, from the command line and the environment.

Each setting lives in one place: its default on `Settings`, and its flag, environment variable and help in
`OPTIONS`; the parser and the README's table are made from those two.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MIB = 1024 * 1024
# Room for the protobuf framing around a data chunk.
MESSAGE_OVERHEAD = 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    glance_url: str = "http://127.0.0.1:9292"
    host: str = "127.0.0.1"
    port: int = 50051
    chunk_size: int = MIB
    max_message_size: int = 4 * MIB
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 100
    max_streams: int = 128
    stall_timeout: float = 20.0
    upload_window: int = MIB
    sweep_age: float = 6 * 3600.0
    sweep_interval: float = 600.0
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
        for name in ("connect_timeout", "read_timeout", "stall_timeout", "sweep_age"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        for name in ("max_connections", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")
        if self.sweep_interval < 0:
            raise ValueError("sweep interval must not be negative (0 sweeps only at start-up)")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def glance_base(self) -> str:
        """The Glance URL without a trailing slash: every upstream request is below it."""
        return self.glance_url.rstrip("/")


@dataclass(frozen=True)
class Option:
    """The command-line side of one Settings field: `--field-name`, its environment variable and help."""

    field: str
    help: str
    env: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option(
        "glance_url", "the one Glance endpoint this gateway talks to, e.g. http://glance:9292", "GLANCE_URL"
    ),
    Option("host", "address to listen on; 0.0.0.0 or [::] for all (in a container)", "GATEWAY_HOST"),
    Option("port", "gRPC port to listen on (0 picks a free one and logs it)", "GATEWAY_PORT"),
    Option("chunk_size", "largest data chunk sent in one GetImage message, in bytes"),
    Option(
        "max_message_size", "largest gRPC message sent or accepted, in bytes; bounds AddImage data chunks"
    ),
    Option("connect_timeout", "seconds to wait for a connection to Glance"),
    Option(
        "read_timeout",
        "seconds Glance may stay silent before the call fails with DEADLINE_EXCEEDED; "
        "a client deadline shortens it",
    ),
    Option(
        "max_connections",
        "most concurrent connections to Glance; further calls wait for a free one up to their deadline "
        "(at most --read-timeout)",
    ),
    Option(
        "max_streams",
        "most GetImage and AddImage streams served at once; more are refused at once with "
        "RESOURCE_EXHAUSTED (reason TOO_MANY_STREAMS), which bounds the memory of data in flight",
        "GATEWAY_MAX_STREAMS",
    ),
    Option(
        "stall_timeout",
        "seconds a GetImage client may stop reading, or an AddImage client stop sending, before the "
        "gateway ends the call and releases its Glance connection",
        "GATEWAY_STALL_TIMEOUT",
    ),
    Option(
        "upload_window",
        "HTTP/2 receive window of each gRPC stream, in bytes: what one upload can have buffered in the "
        "gateway. An upload over a path with round-trip time RTT reaches at most window/RTT; raise it for "
        "far-away clients",
    ),
    Option(
        "sweep_age",
        "seconds after which an upload record that a gateway created and never finished (its gateway "
        "died) is deleted by the sweep; must exceed the longest upload",
        "GATEWAY_SWEEP_AGE",
    ),
    Option(
        "sweep_interval",
        "seconds between sweeps for unfinished upload records (one also runs at start-up; 0: only then)",
        "GATEWAY_SWEEP_INTERVAL",
    ),
    Option(
        "tls_cert",
        "PEM certificate chain: serve gRPC over TLS (needs --tls-key). Without it the gateway serves "
        "plaintext, for loopback or behind a mesh sidecar that terminates TLS",
        "GATEWAY_TLS_CERT",
    ),
    Option("tls_key", "PEM private key of --tls-cert", "GATEWAY_TLS_KEY"),
    Option(
        "glance_ca_file",
        "PEM CA bundle to verify an https Glance with (default: the system's CA store)",
        "GLANCE_CA_FILE",
    ),
    Option("log_level", "log level; tokens are never logged", "GATEWAY_LOG_LEVEL", LOG_LEVELS),
)

_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def _converter(field_name: str) -> Callable[[str], Any]:
    """The type a Settings field takes from a string (its annotation, with `| None` dropped)."""
    annotation = str(_FIELDS[field_name].type)
    for name, convert in (("int", int), ("float", float)):
        if annotation.startswith(name):
            return convert
    return str


def build_parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="gRPC gateway for OpenStack Glance images (glance.gateway.v1.ImageService).",
    )
    for option in OPTIONS:
        convert = _converter(option.field)
        default = _FIELDS[option.field].default
        origin = ""
        if option.env:
            origin = f"env {option.env}, "
            if option.env in environ:
                default = convert(environ[option.env])
        parser.add_argument(
            option.flag,
            dest=option.field,
            type=convert,
            default=default,
            choices=option.choices,
            help=f"{option.help} ({origin}default %(default)s)",
        )
    return parser


def parse_settings(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        return Settings(**vars(args))
    except ValueError as exc:
        parser.error(str(exc))
