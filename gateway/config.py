"""Settings of the gateway: each lives in one place, its default and checks on `Settings`, and its flag,
environment variable and help in `OPTIONS`; the command line (gateway/command_line.py) and the README's table
are made from those two.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

MIB = 1024 * 1024
# Room for the protobuf framing around a data chunk.
MESSAGE_OVERHEAD = 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


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
    sweep_token_file: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    glance_ca_file: str | None = None
    metrics_port: int | None = None
    health_port: int | None = None
    health_probe_interval: float = 5.0
    # Connection policy (grpc/proposal A8, A9): defaults for a Kubernetes Service without a sidecar (README).
    keepalive_time: float = 60.0
    keepalive_timeout: float = 20.0
    keepalive_permit_without_calls: bool = True
    min_ping_interval: float = 10.0
    max_connection_idle: float = 300.0
    max_connection_age: float = 1800.0
    max_connection_age_grace: float = 3600.0
    max_concurrent_streams: int = 256
    workers: int = 1
    drain_delay: float = 0.0
    shutdown_grace: float = 30.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
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
        positive = (
            "connect_timeout", "read_timeout", "stall_timeout", "sweep_age", "health_probe_interval",
            "keepalive_time", "keepalive_timeout",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        for name in ("max_connections", "max_streams", "max_concurrent_streams", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")
        not_negative = (
            "sweep_interval", "min_ping_interval", "max_connection_idle", "max_connection_age",
            "max_connection_age_grace", "drain_delay", "shutdown_grace",
        )  # fmt: skip
        for name in not_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', ' ')} must not be negative")
        for name in ("port", "metrics_port", "health_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name.replace('_', ' ')} must be between 0 and 65535")
        for name in ("port", "health_port"):
            if self.workers > 1 and getattr(self, name) == 0:
                raise ValueError(f"--workers needs a fixed --{name.replace('_', '-')} (the workers share it)")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")

    @property
    def glance_base(self) -> str:
        """The Glance URL without a trailing slash: every upstream request is below it."""
        return self.glance_url.rstrip("/")


@dataclass(frozen=True)
class Option:
    """The command-line side of one Settings field: `--field-name`, its environment variable
    (`GATEWAY_FIELD_NAME` unless named) and help."""

    field: str
    help: str
    env_name: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_name or "GATEWAY_" + self.field.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "glance_url", "the one Glance endpoint this gateway talks to, e.g. http://glance:9292", "GLANCE_URL"
    ),
    Option("host", "address to listen on; 0.0.0.0 or [::] for all (in a container)"),
    Option("port", "gRPC port to listen on (0 picks a free one and logs it)"),
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
        "most GetImage, AddImage and StageImageData streams served at once; more are refused at once with "
        "RESOURCE_EXHAUSTED (reason TOO_MANY_STREAMS), which bounds the memory of data in flight",
    ),
    Option(
        "stall_timeout",
        "seconds a GetImage client may stop reading, or an AddImage or StageImageData client stop sending, "
        "before the gateway ends the call and releases its Glance connection",
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
    ),
    Option(
        "sweep_interval",
        "seconds between sweeps for unfinished upload records (one also runs at start-up; 0: only then)",
    ),
    Option(
        "sweep_token_file",
        "file holding a Keystone token for the sweep, read again before every sweep (rotate it in place, "
        "e.g. a mounted Secret); its identity must see and delete every project's images (Glance's admin). "
        "Unset: the sweep sends no token, which only a Glance without Keystone accepts",
    ),
    Option("log_level", "log level; tokens are never logged", choices=LOG_LEVELS),
    Option(
        "log_format",
        "text: one readable line per event; json: one JSON object per line, with an access line per RPC",
        choices=LOG_FORMATS,
    ),
    Option(
        "tls_cert",
        "PEM certificate chain: serve gRPC over TLS (needs --tls-key). Without it the gateway serves "
        "plaintext, for loopback or behind a mesh sidecar that terminates TLS. Reloaded on SIGHUP",
    ),
    Option("tls_key", "PEM private key of --tls-cert"),
    Option(
        "tls_client_ca",
        "PEM CA bundle: require client certificates signed by it (mutual TLS; needs --tls-cert). "
        "Reloaded on SIGHUP",
    ),
    Option(
        "glance_ca_file",
        "PEM CA bundle to verify an https Glance with (default: the system's CA store)",
        "GLANCE_CA_FILE",
    ),
    Option("metrics_port", "serve Prometheus metrics at http://HOST:PORT/metrics (off when unset)"),
    Option(
        "health_port",
        "also serve only the gRPC health service, in plaintext, on this port (for Kubernetes gRPC probes "
        "when the main port uses TLS; off when unset)",
    ),
    Option(
        "health_probe_interval",
        "seconds between the light probes of Glance behind the health status of "
        "glance.gateway.v1.ImageService (NOT_SERVING while Glance is unreachable)",
    ),
    Option(
        "keepalive_time",
        "seconds of connection silence after which the server pings the client (finds dead peers on "
        "long streams, before idle timeouts of load balancers on the path)",
    ),
    Option("keepalive_timeout", "seconds to wait for a ping's answer before closing the connection"),
    Option(
        "keepalive_permit_without_calls",
        "accept client keepalive pings on connections without calls (true/false); when false such "
        "clients are sent GOAWAY too_many_pings",
    ),
    Option(
        "min_ping_interval",
        "shortest interval between client pings the server accepts, in seconds; clients must not "
        "keepalive more often than this",
    ),
    Option("max_connection_idle", "seconds after which a connection without calls is closed (0: never)"),
    Option(
        "max_connection_age",
        "seconds after which a connection is sent GOAWAY (with 10%% jitter) so clients reconnect and new "
        "replicas get traffic behind an L4 load balancer (0: never)",
    ),
    Option(
        "max_connection_age_grace",
        "seconds calls may go on after --max-connection-age's GOAWAY before they are cut (0: no limit); "
        "must cover the longest upload, since an AddImage cannot resume (a GetImage can, by offset)",
    ),
    Option("max_concurrent_streams", "most concurrent calls on one client connection"),
    Option(
        "workers",
        "server processes sharing the port (SO_REUSEPORT; connections, not calls, are balanced); "
        "1 runs in this process",
    ),
    Option(
        "drain_delay",
        "seconds between reporting NOT_SERVING on SIGTERM and refusing new calls, so load balancers "
        "and Kubernetes endpoints stop routing here first",
    ),
    Option(
        "shutdown_grace",
        "seconds in-flight calls get to finish after the drain delay on SIGTERM, before they are cut",
    ),
)
