"""Tokens of the seeded users (cached), ids by name, and a Keystone recorded in a state dir (for the CLI)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .config import read_port
from .keystone_api import Identities, IssuedToken, KeystoneApi, KeystoneError, Secrets
from .keystone_config import (
    ADMIN_PROJECT,
    ADMIN_USER,
    GLANCE_PROJECT,
    GLANCE_ROLE,
    GLANCE_USER,
    QUOTA_PROJECT,
    QUOTA_PROJECT_ROLES,
    USER_PROJECTS,
    USER_ROLES,
    KeystoneConfig,
    user_name,
)
from .paths import DEFAULT_STATE_DIR, DEFAULT_VENV_DIR
from .procs import recorded_leader
from .uwsgi import stop_recorded

# A cached token is fetched again when it has less than this left (Keystone's default lifetime: 1 h).
TOKEN_MARGIN = timedelta(minutes=5)
DEFAULT_KEYSTONE_STATE_DIR = DEFAULT_STATE_DIR / "keystone"


class Tokens:
    """Project-scoped tokens of the seeded users, cached per (project, role); ids by name."""

    def __init__(self, api: KeystoneApi, secrets: Secrets, ids: Identities) -> None:
        self.api = api
        self.secrets = secrets
        self.ids = ids
        self._cache: dict[tuple[str, str], IssuedToken] = {}
        self._lock = threading.Lock()

    def token(self, project: str, role: str) -> str:
        """A token of user <project>-<role> scoped to <project>; ("admin", "admin") is the bootstrap admin,
        ("service", "service") Glance's service user, ("gamma", "member") the quota project's member."""
        user, password = self._credentials(project, role)
        with self._lock:
            cached = self._cache.get((project, role))
            if cached is None or _expires_soon(cached.expires_at):
                cached = self.api.password_token(user, password, project)
                self._cache[(project, role)] = cached
            return cached.token

    def admin_token(self) -> str:
        return self.token(ADMIN_PROJECT, "admin")

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def project_id(self, name: str) -> str:
        try:
            return self.ids.projects[name]
        except KeyError:
            raise KeyError(f"no seeded project {name!r}; known: {sorted(self.ids.projects)}") from None

    def user_id(self, name: str) -> str:
        """By user name: "alpha-member", "glance", "admin", ..."""
        try:
            return self.ids.users[name]
        except KeyError:
            raise KeyError(f"no seeded user {name!r}; known: {sorted(self.ids.users)}") from None

    def _credentials(self, project: str, role: str) -> tuple[str, str]:
        if (project, role) == (ADMIN_PROJECT, "admin"):
            return ADMIN_USER, self.secrets.admin_password
        if (project, role) == (GLANCE_PROJECT, GLANCE_ROLE):
            return GLANCE_USER, self.secrets.glance_password
        if (project in USER_PROJECTS and role in USER_ROLES) or (
            project == QUOTA_PROJECT and role in QUOTA_PROJECT_ROLES
        ):
            return user_name(project, role), self.secrets.users_password
        raise KeyError(f"no seeded user holds role {role!r} on project {project!r}")


def _expires_soon(expires_at: str) -> bool:
    return datetime.fromisoformat(expires_at) - datetime.now(UTC) < TOKEN_MARGIN


# -- an instance recorded in a state dir (for the CLI, in another process) ---


def recorded_keystone(state_dir: Path) -> tuple[int, str] | None:
    """(pid, url) of the live Keystone started from this Keystone state dir, or None."""
    cfg_ini = state_dir.resolve() / "etc" / "keystone-uwsgi.ini"
    pid = recorded_leader(state_dir.resolve() / "uwsgi.pid", cfg_ini)
    port = read_port(cfg_ini)
    return (pid, f"http://127.0.0.1:{port}") if pid is not None and port is not None else None


def stop_recorded_keystone(state_dir: Path, timeout: float = 10.0) -> int | None:
    return stop_recorded("Keystone", state_dir, "keystone-uwsgi.ini", timeout)


def recorded_tokens(state_dir: Path) -> Tokens:
    """Tokens from the Keystone running from this state dir (for `python -m localglance token`)."""
    found = recorded_keystone(state_dir)
    if found is None:
        raise RuntimeError(f"no Keystone running from {state_dir}")
    cfg = KeystoneConfig(
        state_dir=state_dir.resolve(), venv_dir=DEFAULT_VENV_DIR, port=int(found[1].rsplit(":")[-1])
    )
    try:
        secrets = Secrets.from_json(cfg.secrets_file.read_text())
        ids = Identities.from_json(cfg.identities_file.read_text())
    except (OSError, ValueError, TypeError) as exc:
        raise KeystoneError(f"cannot read the identities of the Keystone in {state_dir}: {exc}") from exc
    return Tokens(KeystoneApi(found[1]), secrets, ids)
