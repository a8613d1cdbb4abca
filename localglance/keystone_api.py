"""Keystone's v3 API over plain HTTP (stdlib only): tokens, seeding the test identities, the catalog."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import Message
from typing import Any

from .keystone_config import (
    ADMIN_PROJECT,
    ADMIN_USER,
    GLANCE_PROJECT,
    GLANCE_ROLE,
    GLANCE_USER,
    IMAGE_SERVICE_TYPE,
    INTERFACES,
    PROJECT_LIMITS,
    PROJECTS,
    QUOTA_PROJECT,
    QUOTA_PROJECT_ROLES,
    REGION,
    REGISTERED_LIMITS,
    USER_PROJECTS,
    USER_ROLES,
    user_name,
)

# urllib honours http_proxy; loopback calls must never go through a proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TIMEOUT = 30.0

JsonObject = dict[str, Any]


class KeystoneError(RuntimeError):
    """An unexpected answer from Keystone (the message never holds a token or a password)."""


@dataclass(frozen=True)
class Secrets:
    admin_password: str
    glance_password: str
    users_password: str  # shared by the seeded <project>-<role> users

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> Secrets:
        return Secrets(**json.loads(text))


@dataclass
class Identities:
    """Ids of what bootstrap and seeding created, plus the URL the catalog's endpoints point at."""

    projects: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    identity_endpoints: list[str] = field(default_factory=list)
    image_service: str = ""
    image_endpoints: list[str] = field(default_factory=list)
    identity_url: str = ""
    image_url: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> Identities:
        return Identities(**json.loads(text))


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: str  # ISO 8601, as Keystone gives it
    roles: tuple[str, ...]


class KeystoneApi:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(
        self, method: str, path: str, body: JsonObject | None = None, token: str | None = None
    ) -> tuple[int, Message, JsonObject]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["X-Auth-Token"] = token
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with _NO_PROXY_OPENER.open(request, timeout=TIMEOUT) as resp:
                return int(resp.status), resp.headers, _json(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers, _json(err.read())

    def expect(
        self, status: int, method: str, path: str, body: JsonObject | None = None, token: str | None = None
    ) -> JsonObject:
        got, _, answer = self.call(method, path, body, token)
        if got != status:
            message = answer.get("error", {}).get("message", "") if isinstance(answer, dict) else ""
            raise KeystoneError(f"{method} {path}: expected {status}, got {got} {message}".rstrip())
        return answer

    def password_token(self, user: str, password: str, project: str) -> IssuedToken:
        """A project-scoped token (users and projects of the default domain)."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        status, headers, answer = self.call("POST", "/v3/auth/tokens", body)
        if status != 201:
            raise KeystoneError(f"token for user {user!r} on project {project!r}: HTTP {status}")
        token = answer["token"]
        roles = tuple(sorted(role["name"] for role in token.get("roles", [])))
        return IssuedToken(str(headers["X-Subject-Token"]), str(token["expires_at"]), roles)


def _json(raw: bytes) -> JsonObject:
    if not raw:
        return {}
    try:
        answer = json.loads(raw)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def seed(api: KeystoneApi, secrets: Secrets, image_url: str) -> Identities:
    """Create the projects, users, role assignments, the image service and its limits after a fresh
    bootstrap."""
    admin = api.password_token(ADMIN_USER, secrets.admin_password, ADMIN_PROJECT).token
    ids = Identities(identity_url=f"{api.url}/v3", image_url=image_url)
    ids.roles = {r["name"]: r["id"] for r in api.expect(200, "GET", "/v3/roles", token=admin)["roles"]}
    for name in (*USER_ROLES, GLANCE_ROLE):
        if name not in ids.roles:
            raise KeystoneError(f"bootstrap created no role {name!r}: {sorted(ids.roles)}")
    listed = api.expect(200, "GET", f"/v3/projects?name={ADMIN_PROJECT}", token=admin)["projects"]
    ids.projects[ADMIN_PROJECT] = listed[0]["id"]
    for project in (*PROJECTS, QUOTA_PROJECT):
        created = api.expect(
            201, "POST", "/v3/projects", {"project": {"name": project, "domain_id": "default"}}, admin
        )
        ids.projects[project] = created["project"]["id"]
    users = [(user_name(p, r), p, r, secrets.users_password) for p in USER_PROJECTS for r in USER_ROLES]
    users += [
        (user_name(QUOTA_PROJECT, r), QUOTA_PROJECT, r, secrets.users_password) for r in QUOTA_PROJECT_ROLES
    ]
    users.append((GLANCE_USER, GLANCE_PROJECT, GLANCE_ROLE, secrets.glance_password))
    for name, project, role, password in users:
        project_id = ids.projects[project]
        # default_project_id: an unscoped password auth comes back scoped to the user's project.
        user = {"name": name, "domain_id": "default", "password": password, "default_project_id": project_id}
        ids.users[name] = api.expect(201, "POST", "/v3/users", {"user": user}, admin)["user"]["id"]
        grant = f"/v3/projects/{project_id}/users/{ids.users[name]}/roles/{ids.roles[role]}"
        api.expect(204, "PUT", grant, token=admin)
    listed = api.expect(200, "GET", f"/v3/users?name={ADMIN_USER}", token=admin)["users"]
    ids.users[ADMIN_USER] = listed[0]["id"]
    ids.identity_endpoints = _endpoints_of(api, admin, "identity")
    service = {"service": {"name": "glance", "type": IMAGE_SERVICE_TYPE, "description": "local Glance"}}
    service_id = api.expect(201, "POST", "/v3/services", service, admin)["service"]["id"]
    ids.image_service = service_id
    for interface in INTERFACES:
        endpoint = {"service_id": service_id, "interface": interface, "region_id": REGION, "url": image_url}
        created = api.expect(201, "POST", "/v3/endpoints", {"endpoint": endpoint}, admin)
        ids.image_endpoints.append(created["endpoint"]["id"])
    _seed_limits(api, admin, ids)
    return ids


def _seed_limits(api: KeystoneApi, admin: str, ids: Identities) -> None:
    """Glance's unified limits: registered defaults and per-project limits (Glance reads them with its
    service role: keystone_config.POLICY_OVERRIDES)."""
    where = {"service_id": ids.image_service, "region_id": REGION}
    registered = [
        {**where, "resource_name": name, "default_limit": limit} for name, limit in REGISTERED_LIMITS.items()
    ]
    api.expect(201, "POST", "/v3/registered_limits", {"registered_limits": registered}, admin)
    limits = [
        {**where, "project_id": ids.projects[project], "resource_name": name, "resource_limit": limit}
        for project, per_project in PROJECT_LIMITS.items()
        for name, limit in per_project.items()
    ]
    api.expect(201, "POST", "/v3/limits", {"limits": limits}, admin)


def _endpoints_of(api: KeystoneApi, admin: str, service_type: str) -> list[str]:
    services = api.expect(200, "GET", f"/v3/services?type={service_type}", token=admin)["services"]
    found: list[str] = []
    for service in services:
        endpoints = api.expect(200, "GET", f"/v3/endpoints?service_id={service['id']}", token=admin)
        found.extend(endpoint["id"] for endpoint in endpoints["endpoints"])
    return found


def repoint(api: KeystoneApi, admin: str, endpoint_ids: list[str], url: str) -> None:
    """Point catalog endpoints at `url` (a saved template's catalog names the port it was made on)."""
    for endpoint_id in endpoint_ids:
        api.expect(200, "PATCH", f"/v3/endpoints/{endpoint_id}", {"endpoint": {"url": url}}, admin)
