"""Keystone 30.0.0's state layout and config files, as in keystone-30-local.md (the tuned form)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .ports import HOST

# The seeded identities. Changing any of this changes the saved template's key (keystone_template.py).
PROJECTS = ("alpha", "beta", "service")
USER_PROJECTS = ("alpha", "beta")  # each gets <project>-reader, -member, -admin
USER_ROLES = ("reader", "member", "admin")
GLANCE_USER = "glance"
GLANCE_PROJECT = "service"
# Keystone's validate_token policy accepts the service role; with only member Glance answers 401 to all.
GLANCE_ROLE = "service"
ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
REGION = "RegionOne"
INTERFACES = ("public", "internal", "admin")
IMAGE_SERVICE_TYPE = "image"

# Glance's unified limits (keystone-30-local.md, "Optional: unified limits"). The registered defaults hold
# for every project and are generous so that no test meets them by accident; sizes are in MiB. Glance
# refuses whatever has no registered limit, so all four are needed.
REGISTERED_LIMITS = {
    "image_size_total": 100_000,
    "image_stage_total": 100_000,
    "image_count_total": 1000,
    "image_count_uploading": 100,
}
# A project with tight limits of its own, for quota tests; its only user is <project>-<role> for these roles.
QUOTA_PROJECT = "gamma"
QUOTA_PROJECT_ROLES = ("member",)
PROJECT_LIMITS = {QUOTA_PROJECT: {"image_count_total": 2}}

# Glance's oslo.limit looks the image endpoint up on every quota check, which takes admin or a system
# reader. A system-scoped token costs ~60 ms per Keystone request here (Keystone recomputes system roles,
# uncached, three times per request) against ~10 ms project-scoped, and a check is 5 requests. So Glance
# reads with its project-scoped service token: Keystone 30 already shows every project's limits to the
# service role, and these rules let it read the catalog too (upstream rule + "or role:service").
POLICY_OVERRIDES = {
    f"identity:{action}": f"rule:admin_required or (role:reader and system_scope:all) or role:{GLANCE_ROLE}"
    for action in ("list_services", "list_endpoints", "get_endpoint")
}


def user_name(project: str, role: str) -> str:
    return f"{project}-{role}"


@dataclass(frozen=True)
class KeystoneConfig:
    state_dir: Path
    venv_dir: Path
    port: int

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    @property
    def data_dir(self) -> Path:
        """Everything bootstrap and seeding create: what the saved template holds."""
        return self.state_dir / "data"

    @property
    def database(self) -> Path:
        return self.data_dir / "keystone.sqlite"

    @property
    def fernet_dir(self) -> Path:
        return self.data_dir / "fernet-keys"

    @property
    def credential_dir(self) -> Path:
        return self.data_dir / "credential-keys"

    @property
    def secrets_file(self) -> Path:
        """Generated passwords (mode 0600), kept with the data they belong to."""
        return self.data_dir / "secrets.json"

    @property
    def identities_file(self) -> Path:
        """Ids of the seeded projects, users, roles and endpoints."""
        return self.data_dir / "identities.json"

    @property
    def conf(self) -> Path:
        return self.etc_dir / "keystone.conf"

    @property
    def policy_file(self) -> Path:
        return self.etc_dir / "policy.yaml"

    @property
    def uwsgi_ini(self) -> Path:
        return self.etc_dir / "keystone-uwsgi.ini"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "uwsgi.pid"

    @property
    def uwsgi_log(self) -> Path:
        return self.state_dir / "uwsgi.log"

    @property
    def keystone_log(self) -> Path:
        return self.state_dir / "keystone.log"


def write_configs(cfg: KeystoneConfig) -> None:
    cfg.etc_dir.mkdir(parents=True, exist_ok=True)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cfg.conf.write_text(render_conf(cfg))
    cfg.policy_file.write_text(render_policy())
    cfg.uwsgi_ini.write_text(render_uwsgi_ini(cfg))


def render_conf(cfg: KeystoneConfig) -> str:
    # bcrypt's minimum rounds and a memory cache: 12-17 ms per request instead of 250-490 ms.
    # The memory cache is per process, hence processes = 1 in the uWSGI ini (pitfall 2).
    return f"""\
[DEFAULT]
log_file = {cfg.keystone_log}
use_stderr = false
debug = false

[database]
connection = sqlite:///{cfg.database}

[token]
provider = fernet

[fernet_tokens]
key_repository = {cfg.fernet_dir}/

[fernet_receipts]
key_repository = {cfg.fernet_dir}/

[credential]
key_repository = {cfg.credential_dir}/

[identity]
password_hash_rounds = 4

[cache]
enabled = true
backend = dogpile.cache.memory

[oslo_policy]
policy_file = {cfg.policy_file}
"""


def render_policy() -> str:
    # JSON strings are valid YAML.
    return "".join(f"{json.dumps(rule)}: {json.dumps(check)}\n" for rule, check in POLICY_OVERRIDES.items())


def render_uwsgi_ini(cfg: KeystoneConfig) -> str:
    # One process, no extra threads: SQLite write contention and the per-process cache (pitfalls 2, 3).
    return f"""\
[uwsgi]
http-socket = {HOST}:{cfg.port}
module = keystone.wsgi.api:application
home = {cfg.venv_dir}
env = OS_KEYSTONE_CONFIG_DIR={cfg.etc_dir}
master = true
processes = 1
lazy-apps = true
enable-threads = true
add-header = Connection: close
buffer-size = 65535
die-on-term = true
exit-on-reload = true
pidfile = {cfg.pidfile}
"""
