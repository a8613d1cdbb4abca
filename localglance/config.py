"""Write the config files Glance needs, as in glance-33-local.md (auth keystone: keystone-30-local.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .keystone_config import IMAGE_SERVICE_TYPE

AUTH_MODES = ("noauth", "headers", "keystone")
# Modules loaded into the Glance workers (not into this launcher): see inside_glance/.
INSIDE_GLANCE = Path(__file__).resolve().parent / "inside_glance"
CHUNKED_INPUT_LIMIT = 64 * 1024 * 1024  # uWSGI's 1 MiB default turns any chunk >= 1 MiB into a 500

# Every caller is admin: without this, noauth's empty context gets 403 on every call.
NOAUTH_POLICY = '"context_is_admin": "@"\n"service_api": "@"\n'

# Trimmed copy of the glance-api-paste.ini shipped with glance 33.0.0.
PASTE_INI = """\
[composite:glance-api]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[composite:glance-api-trusted-headers]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[composite:glance-api-keystone]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[composite:api]
paste.composite_factory = glance.api:pipeline_factory
default = cors http_proxy_to_wsgi versionnegotiation osprofiler unauthenticated-context rootapp
trusted-headers = cors http_proxy_to_wsgi versionnegotiation osprofiler context rootapp
keystone = cors http_proxy_to_wsgi versionnegotiation osprofiler authtoken context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[app:healthcheck]
paste.app_factory = oslo_middleware:Healthcheck.app_factory
backends = disable_by_file
disable_by_file_path = /nonexistent/glance-healthcheck-disable

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory

[filter:osprofiler]
paste.filter_factory = osprofiler.web:WsgiMiddleware.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = glance
oslo_config_program = glance-api

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true
"""


@dataclass(frozen=True)
class KeystoneAuth:
    """What Glance needs of Keystone (auth mode "keystone"): auth_token to validate tokens, oslo.limit to
    read the unified limits."""

    url: str  # Keystone's root, e.g. http://127.0.0.1:5000
    username: str
    password: str
    project: str
    # Seconds a Glance worker trusts a validated token without asking Keystone; -1: ask every time.
    token_cache_time: int = 300
    # Keystone's unified limits for images (use_keystone_limits): quota usage and 413s over a limit.
    unified_limits: bool = True


@dataclass(frozen=True)
class GlanceConfig:
    """Everything that varies between instances."""

    state_dir: Path
    venv_dir: Path
    port: int
    processes: int = 2
    auth: str = "noauth"
    socket_timeout: int = 10
    format_check: bool = True
    chunked_input_limit: int = CHUNKED_INPUT_LIMIT
    # web-download imports may fetch from 127.0.0.1 on this port (and 80, 443); 0: only 80 and 443.
    web_port: int = 0
    keystone: KeystoneAuth | None = None

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {self.auth!r}")
        if (self.auth == "keystone") != (self.keystone is not None):
            raise ValueError('a Keystone is needed exactly for auth mode "keystone"')
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        for port in (self.port, self.web_port or 1):
            if not 0 < port < 65536:
                raise ValueError(f"invalid port {port}")

    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def database(self) -> Path:
        return self.data_dir / "glance.sqlite"

    @property
    def api_conf(self) -> Path:
        return self.etc_dir / "glance-api.conf"

    @property
    def paste_ini(self) -> Path:
        return self.etc_dir / "glance-api-paste.ini"

    @property
    def policy_file(self) -> Path:
        return self.etc_dir / "policy-noauth.yaml"

    @property
    def uwsgi_ini(self) -> Path:
        return self.etc_dir / "glance-uwsgi.ini"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "uwsgi.pid"

    @property
    def uwsgi_log(self) -> Path:
        return self.state_dir / "uwsgi.log"

    @property
    def api_log(self) -> Path:
        return self.state_dir / "glance-api.log"


def write_configs(cfg: GlanceConfig) -> None:
    """Create the state layout and (re)write every config file."""
    cfg.etc_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "images2", "staging", "tasks", "locks"):
        (cfg.data_dir / sub).mkdir(parents=True, exist_ok=True)
    cfg.api_conf.write_text(render_api_conf(cfg))
    cfg.paste_ini.write_text(PASTE_INI)
    cfg.policy_file.write_text(render_policy(cfg))
    cfg.uwsgi_ini.write_text(render_uwsgi_ini(cfg))


def render_policy(cfg: GlanceConfig) -> str:
    # headers and keystone modes keep the upstream defaults (empty file) for real per-project behaviour.
    return NOAUTH_POLICY if cfg.auth == "noauth" else ""


# "" selects the noauth pipeline; "trusted-headers" the Keystone pipeline minus authtoken.
FLAVORS = {"noauth": "", "headers": "trusted-headers", "keystone": "keystone"}


def render_api_conf(cfg: GlanceConfig) -> str:
    data = cfg.data_dir
    flavor = FLAVORS[cfg.auth]
    return f"""\
[DEFAULT]
enabled_backends = file:file, file2:file
log_file = {cfg.api_log}
use_stderr = false
debug = false
{render_limits_switch(cfg.keystone)}
[database]
connection = sqlite:///{cfg.database}

[glance_store]
default_backend = file

[file]
filesystem_store_datadir = {data}/images/

[file2]
filesystem_store_datadir = {data}/images2/

[os_glance_staging_store]
filesystem_store_datadir = {data}/staging/

[os_glance_tasks_store]
filesystem_store_datadir = {data}/tasks/

[paste_deploy]
config_file = {cfg.paste_ini}
flavor = {flavor}

[oslo_policy]
policy_file = {cfg.policy_file}

[oslo_concurrency]
lock_path = {data}/locks

[image_format]
require_image_format_match = {str(cfg.format_check).lower()}
{render_import_filtering(cfg)}{render_keystone_authtoken(cfg.keystone)}"""


def render_import_filtering(cfg: GlanceConfig) -> str:
    # Loopback is refused by default. The brackets are required: without them the list fails to
    # parse and every web-download is refused with "does not pass filtering" (pitfall 7).
    ports = ",".join(str(port) for port in (80, 443, cfg.web_port) if port)
    return f"""
[import_filtering_opts]
allowed_hosts = [127.0.0.1]
allowed_ports = [{ports}]
"""


def render_keystone_authtoken(keystone: KeystoneAuth | None) -> str:
    if keystone is None:
        return ""
    # No memcached_servers: each worker caches validated tokens in process (a deprecation warning).
    return f"""
[keystone_authtoken]
www_authenticate_uri = {keystone.url}
{render_service_user(keystone)}
token_cache_time = {keystone.token_cache_time}
{render_oslo_limit(keystone)}"""


def render_service_user(keystone: KeystoneAuth) -> str:
    """Glance's own Keystone credentials, as both auth_token and oslo.limit read them."""
    return f"""auth_url = {keystone.url}
auth_type = password
user_domain_id = default
project_domain_id = default
project_name = {keystone.project}
username = {keystone.username}
password = {keystone.password}"""


def render_limits_switch(keystone: KeystoneAuth | None) -> str:
    return "use_keystone_limits = true\n" if keystone is not None and keystone.unified_limits else ""


def render_oslo_limit(keystone: KeystoneAuth) -> str:
    if not keystone.unified_limits:
        return ""
    # Project-scoped, not system_scope = all: see POLICY_OVERRIDES in keystone_config.py. The image
    # endpoint (hence the limits' service and region) is found by type, so this file needs no id from the
    # seeding; there is one region, and naming it would cost one more Keystone request per quota check.
    return f"""
[oslo_limit]
{render_service_user(keystone)}
endpoint_service_type = {IMAGE_SERVICE_TYPE}
endpoint_interface = public
"""


def render_uwsgi_ini(cfg: GlanceConfig) -> str:
    # Settings from glance's apache-httpd.rst plus chunked-input-limit; loopback only.
    # noauth has no project to own an import's task: see inside_glance/localglance_noauth_tasks.py.
    noauth_tasks = "import = localglance_noauth_tasks\n" if cfg.auth == "noauth" else ""
    return f"""\
[uwsgi]
http-socket = 127.0.0.1:{cfg.port}
module = glance.wsgi.api:application
# SQLite's "database is locked" becomes a deadlock that Glance retries (localglance/inside_glance).
pythonpath = {INSIDE_GLANCE}
import = localglance_sqlite_locks
{noauth_tasks}home = {cfg.venv_dir}
env = OS_GLANCE_CONFIG_DIR={cfg.etc_dir}
socket-timeout = {cfg.socket_timeout}
http-auto-chunked = true
http-chunked-input = true
http-raw-body = true
chunked-input-limit = {cfg.chunked_input_limit}
lazy-apps = true
add-header = Connection: close
buffer-size = 65535
thunder-lock = true
enable-threads = true
exit-on-reload = true
die-on-term = true
master = true
processes = {cfg.processes}
pidfile = {cfg.pidfile}
"""


def read_port(uwsgi_ini: Path) -> int | None:
    """The port an earlier start wrote into the uWSGI ini (used by `stop`)."""
    if not uwsgi_ini.is_file():
        return None
    for line in uwsgi_ini.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "http-socket":
            return int(value.strip().rsplit(":", 1)[1])
    return None
