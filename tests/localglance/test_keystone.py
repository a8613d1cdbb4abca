"""Real tests of the Keystone launcher and of Glance's keystone auth mode (real uWSGI processes).

Uses the session fixtures `keystone`, `keystone_glance` and `identities` of tests/conftest.py.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The launcher is a plain directory in the repo, not an installed package.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from localglance import GlanceServer, Identities, KeystoneServer  # noqa: E402
from localglance.config import GlanceConfig, render_api_conf  # noqa: E402
from localglance.keystone_config import (  # noqa: E402
    PROJECT_LIMITS,
    QUOTA_PROJECT,
    REGISTERED_LIMITS,
    USER_PROJECTS,
    USER_ROLES,
)
from localglance.ports import port_is_free  # noqa: E402
from localglance.procs import cmdline, live_group_members  # noqa: E402
from localglance.venv import REQUIRED_BINARIES, expected_marker  # noqa: E402

# Loopback only: never let an http_proxy from the environment intercept.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with OPENER.open(req, timeout=30) as resp:
            return int(resp.status), dict(resp.headers), _json(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), _json(err.read())


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def validate(keystone: KeystoneServer, token: str) -> dict[str, Any]:
    """What Keystone says about a token (as auth_token asks it): GET /v3/auth/tokens."""
    headers = {"X-Auth-Token": keystone.admin_token(), "X-Subject-Token": token}
    status, _, body = request("GET", f"{keystone.identity_url}/auth/tokens", headers=headers)
    assert status == 200, body
    validated: dict[str, Any] = body["token"]
    return validated


def identity_endpoint_urls(keystone: KeystoneServer) -> set[str]:
    headers = {"X-Auth-Token": keystone.admin_token()}
    status, _, services = request("GET", f"{keystone.identity_url}/services?type=identity", headers=headers)
    assert status == 200, services
    urls = set()
    for service in services["services"]:
        path = f"{keystone.identity_url}/endpoints?service_id={service['id']}"
        status, _, endpoints = request("GET", path, headers=headers)
        assert status == 200, endpoints
        urls |= {endpoint["url"] for endpoint in endpoints["endpoints"]}
    return urls


def assert_gone(pid: int, port: int) -> None:
    assert live_group_members(pid) == []
    assert port_is_free(port)


# -- the seeded identities -----------------------------------------------------


@pytest.mark.parametrize("project", USER_PROJECTS)
@pytest.mark.parametrize("role", USER_ROLES)
def test_seeded_user_token_is_scoped_to_its_project_with_its_role(
    keystone: KeystoneServer, project: str, role: str
) -> None:
    token = validate(keystone, keystone.token(project, role))
    assert token["project"]["id"] == keystone.project_id(project)
    assert token["user"]["name"] == f"{project}-{role}"
    assert token["user"]["id"] == keystone.user_id(f"{project}-{role}")
    roles = {r["name"] for r in token["roles"]}
    assert role in roles
    # Implied roles: admin -> member -> reader; a reader is nothing more.
    assert ("admin" in roles) == (role == "admin")
    assert ("member" in roles) == (role in ("member", "admin"))


def test_glance_service_user_holds_the_service_role(keystone: KeystoneServer) -> None:
    token = validate(keystone, keystone.token("service", "service"))
    assert token["user"]["name"] == "glance"
    assert token["project"]["id"] == keystone.project_id("service")
    assert {r["name"] for r in token["roles"]} == {"service"}


def test_tokens_are_cached_and_unknown_identities_refused(identities: Identities) -> None:
    assert identities.token("beta", "reader") == identities.token("beta", "reader")
    assert identities.token("beta", "reader") != identities.token("alpha", "reader")
    assert identities.metadata("alpha", "member") == (("x-auth-token", identities.token("alpha", "member")),)
    with pytest.raises(KeyError, match="delta"):
        identities.token("delta", "member")
    with pytest.raises(KeyError, match="reader"):
        identities.token("gamma", "reader")  # the quota project has a member only
    with pytest.raises(KeyError, match="owner"):
        identities.token("alpha", "owner")
    assert "token" not in repr(identities).lower()


def test_catalog_identity_endpoints_follow_the_port(keystone: KeystoneServer) -> None:
    # auth_token validates at the catalog's identity endpoint (pitfall 4 of keystone-30-local.md).
    assert identity_endpoint_urls(keystone) == {keystone.identity_url}


def test_secrets_stay_private(keystone: KeystoneServer) -> None:
    secrets_file = keystone.config.secrets_file
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert keystone.pid is not None
    password = keystone.tokens.secrets.admin_password
    assert all(password not in arg for arg in cmdline(keystone.pid))
    assert password not in keystone.config.conf.read_text()


# -- a second Keystone from the saved template ---------------------------------


def test_second_keystone_from_template_serves_glance_on_its_own_port(
    keystone: KeystoneServer, tmp_path: Path
) -> None:
    other = KeystoneServer(state_dir=tmp_path / "ks")
    assert other.port != keystone.port
    with other:
        # The session Keystone saved the template if it did not start from one itself.
        assert other.from_template is True
        assert other.project_id("alpha") == keystone.project_id("alpha")
        assert identity_endpoint_urls(other) == {other.identity_url}
        with GlanceServer(state_dir=tmp_path / "gl", processes=1, auth="keystone", keystone=other) as glance:
            token = other.token("alpha", "member")
            status, _, body = request("GET", f"{glance.url}/v2/images", headers={"X-Auth-Token": token})
            assert status == 200, body
            # The catalog's image service points at the Glance that last started against it.
            headers = {"X-Auth-Token": other.admin_token()}
            status, _, catalog = request("GET", f"{other.identity_url}/auth/catalog", headers=headers)
            assert status == 200
            image = [s for s in catalog["catalog"] if s["type"] == "image"]
            assert {e["url"] for e in image[0]["endpoints"]} == {glance.url}
        pid, port = other.pid, other.port
        assert pid is not None
    assert_gone(pid, port)
    assert other.pid is None
    other.stop()  # idempotent


# -- Glance in keystone mode over plain REST -------------------------------------


def test_glance_keystone_mode_validates_tokens(
    keystone_glance: GlanceServer, keystone: KeystoneServer, identities: Identities
) -> None:
    url = f"{keystone_glance.url}/v2/images"
    status, headers, _ = request("GET", url)
    assert status == 401
    assert headers.get("WWW-Authenticate") == f'Keystone uri="{keystone.url}"'
    assert request("GET", url, headers={"X-Auth-Token": "bogus"})[0] == 401
    # auth_token strips identity headers a client sends itself.
    spoofed = {"X-Identity-Status": "Confirmed", "X-Roles": "admin", "X-Project-Id": "p1"}
    assert request("GET", url, headers=spoofed)[0] == 401
    assert request("GET", url, headers={"X-Auth-Token": identities.token("alpha", "reader")})[0] == 200
    status, _, body = request(
        "POST", url, {"name": "reader-may-not"}, {"X-Auth-Token": identities.token("alpha", "reader")}
    )
    assert status == 403, body
    # Without a token /versions still answers: that is what the readiness check uses.
    assert request("GET", f"{keystone_glance.url}/versions")[0] == 200


def test_keystone_mode_config(keystone_glance: GlanceServer, keystone: KeystoneServer) -> None:
    conf = keystone_glance.config.api_conf.read_text()
    assert "flavor = keystone\n" in conf
    assert f"auth_url = {keystone.url}\n" in conf
    assert keystone_glance.config.policy_file.read_text() == ""  # upstream default policies


def test_keystone_mode_needs_exactly_a_running_keystone(keystone: KeystoneServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keystone"):
        GlanceServer(state_dir=tmp_path, auth="keystone")
    with pytest.raises(ValueError, match="keystone"):
        GlanceServer(state_dir=tmp_path, auth="noauth", keystone=keystone)
    not_started = KeystoneServer(state_dir=tmp_path / "ks")
    with pytest.raises(RuntimeError, match="start the Keystone first"):
        GlanceServer(state_dir=tmp_path / "gl", auth="keystone", keystone=not_started).start()


def test_venv_marker_names_keystone() -> None:
    # A venv installed before Keystone joined must be completed, not trusted.
    assert "keystone==30.0.0\n" in expected_marker()
    assert "keystone-manage" in REQUIRED_BINARIES


# -- the command line --------------------------------------------------------------


def test_cli_start_token_status_stop_with_keystone(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "localglance"]
    common = ["--state", str(tmp_path)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, *common], cwd=REPO, capture_output=True, text=True, timeout=120)

    started = run("start", "--auth", "keystone", "--port", "0", "--processes", "1")
    # A failed start stops what it started.
    assert started.returncode == 0, started.stderr
    glance_line, keystone_line = started.stdout.splitlines()
    pid_text, url = glance_line.split()
    word, ks_pid_text, ks_url = keystone_line.split()
    try:
        assert word == "keystone"
        assert "localglance token" in started.stderr
        token = run("token", "alpha", "member")
        assert token.returncode == 0, token.stderr
        status, _, body = request("GET", f"{url}/v2/images", headers={"X-Auth-Token": token.stdout.strip()})
        assert status == 200, body
        assert request("GET", f"{url}/v2/images")[0] == 401
        status_run = run("status")
        assert status_run.returncode == 0
        assert status_run.stdout.splitlines() == [glance_line, keystone_line]
        assert run("token", "alpha", "owner").returncode == 1
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert_gone(int(pid_text), int(url.rsplit(":", 1)[1]))
    assert_gone(int(ks_pid_text), int(ks_url.rsplit(":", 1)[1]))
    assert run("status").returncode == 1


# -- unified limits: quota usage with numbers ------------------------------------------


def usage(glance: GlanceServer, token: str) -> dict[str, dict[str, int]]:
    status, _, body = request("GET", f"{glance.url}/v2/info/usage", headers={"X-Auth-Token": token})
    assert status == 200, body
    found: dict[str, dict[str, int]] = body["usage"]
    return found


def test_quota_usage_has_the_registered_limits(keystone_glance: GlanceServer, identities: Identities) -> None:
    found = usage(keystone_glance, identities.token("alpha", "member"))
    assert {name: quota["limit"] for name, quota in found.items()} == REGISTERED_LIMITS
    for name, quota in found.items():
        assert isinstance(quota["usage"], int) and quota["usage"] >= 0, (name, quota)


def test_the_quota_project_has_a_limit_of_its_own(
    keystone_glance: GlanceServer, identities: Identities
) -> None:
    found = usage(keystone_glance, identities.token(QUOTA_PROJECT, "member"))
    assert found["image_count_total"]["limit"] == PROJECT_LIMITS[QUOTA_PROJECT]["image_count_total"] == 2
    # Every quota it has no limit of its own for falls back to the registered default.
    for name, default in REGISTERED_LIMITS.items():
        if name not in PROJECT_LIMITS[QUOTA_PROJECT]:
            assert found[name]["limit"] == default, name


def test_quota_project_member_token(keystone: KeystoneServer) -> None:
    token = validate(keystone, keystone.token(QUOTA_PROJECT, "member"))
    assert token["user"]["name"] == f"{QUOTA_PROJECT}-member"
    assert token["project"]["id"] == keystone.project_id(QUOTA_PROJECT)
    assert {r["name"] for r in token["roles"]} == {"member", "reader"}


def test_only_the_service_role_gains_reading_the_catalog(keystone: KeystoneServer) -> None:
    # Glance's oslo.limit looks the image endpoint up with its project-scoped service token.
    path = f"{keystone.identity_url}/endpoints?interface=public"
    status, _, body = request("GET", path, headers={"X-Auth-Token": keystone.token("service", "service")})
    assert status == 200, body
    assert keystone.tokens.ids.image_endpoints[0] in {endpoint["id"] for endpoint in body["endpoints"]}
    # A member still may not (upstream default: admin or system reader).
    status, _, body = request("GET", path, headers={"X-Auth-Token": keystone.token("alpha", "member")})
    assert status == 403, body


def test_unified_limits_are_configured_in_keystone_mode_only(
    keystone_glance: GlanceServer, tmp_path: Path
) -> None:
    conf = keystone_glance.config.api_conf.read_text()
    assert "\nuse_keystone_limits = true\n" in conf
    oslo_limit = conf.split("[oslo_limit]\n", 1)[1]
    assert "project_name = service\n" in oslo_limit and "endpoint_service_type = image\n" in oslo_limit
    noauth = GlanceConfig(state_dir=tmp_path, venv_dir=tmp_path, port=1)
    assert "keystone_limits" not in render_api_conf(noauth) and "[oslo_limit]" not in render_api_conf(noauth)
