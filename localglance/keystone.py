"""Start, seed, and stop one real Keystone 30.0.0 under uWSGI (SQLite, fernet tokens), on 127.0.0.1.

A fresh Keystone (keys, db_sync, bootstrap, seeding) takes about 13 s. Its data dir after seeding is saved
as a template next to the venv (keystone_template.py) and copied for later starts, which then take about
3 s; only the catalog's endpoint URLs have to follow the new port (keystone-30-local.md, pitfall 4).
"""

from __future__ import annotations

import contextlib
import secrets as secrets_module
import shutil
import time
from pathlib import Path
from typing import Self

from .keystone_api import Identities, KeystoneApi, Secrets, repoint, seed
from .keystone_config import KeystoneConfig
from .keystone_config import write_configs as write_keystone_configs
from .keystone_template import bootstrap, load_template, save_template
from .keystone_tokens import DEFAULT_KEYSTONE_STATE_DIR, Tokens
from .log import info
from .paths import DEFAULT_VENV_DIR
from .ports import free_port
from .uwsgi import UwsgiServer, ready_lines, tail
from .venv import ensure_venv

# Where seeding first points the image service; GlanceServer repoints it to itself.
PLACEHOLDER_IMAGE_URL = "http://127.0.0.1:9292"


class KeystoneServer(UwsgiServer):
    """A real Keystone on 127.0.0.1, run by uWSGI (one process) in its own process group.

    Every start is fresh: the data dir is replaced by the saved template (or bootstrapped and seeded).
    """

    name = "Keystone"

    def __init__(
        self,
        port: int | None = None,
        state_dir: Path | None = None,
        venv_dir: Path | None = None,
        use_template: bool = True,
    ) -> None:
        super().__init__()
        self.port: int = port if port else free_port()
        self.state_dir: Path = Path(state_dir or DEFAULT_KEYSTONE_STATE_DIR).resolve()
        self.venv_dir: Path = Path(venv_dir or DEFAULT_VENV_DIR).resolve()
        self.use_template = use_template
        self.config: KeystoneConfig = KeystoneConfig(
            state_dir=self.state_dir, venv_dir=self.venv_dir, port=self.port
        )
        self.api = KeystoneApi(self.url)
        self._tokens: Tokens | None = None
        # After start: whether the data came from the saved template (else bootstrapped and seeded).
        self.from_template: bool | None = None

    def __repr__(self) -> str:
        return f"KeystoneServer(url={self.url!r}, pid={self.pid}, state_dir={str(self.state_dir)!r})"

    @property
    def identity_url(self) -> str:
        return f"{self.url}/v3"

    @property
    def tokens(self) -> Tokens:
        if self._tokens is None:
            raise RuntimeError("Keystone is not started")
        return self._tokens

    @property
    def glance_password(self) -> str:
        return self.tokens.secrets.glance_password

    def token(self, project: str, role: str) -> str:
        return self.tokens.token(project, role)

    def admin_token(self) -> str:
        return self.tokens.admin_token()

    def project_id(self, name: str) -> str:
        return self.tokens.project_id(name)

    def user_id(self, name: str) -> str:
        return self.tokens.user_id(name)

    # -- start ---------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"already started: {self!r}")
        started = time.monotonic()
        ensure_venv(self.venv_dir)
        self._check_nothing_in_the_way()
        cfg = self.config
        shutil.rmtree(cfg.data_dir, ignore_errors=True)
        write_keystone_configs(cfg)
        from_template = self.use_template and load_template(cfg)
        self.from_template = from_template
        if not from_template:
            bootstrap(cfg, _new_secrets())
        try:
            self._launch()
            self._wait_ready(timeout)
            self._finish(from_template)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        how = "from the saved template" if from_template else "bootstrapped and seeded"
        info(f"keystone ready at {self.url} (pid {self.pid}, {how}) in {time.monotonic() - started:.1f} s")
        return self

    def _serving(self) -> bool:
        return self._imported() and self.api.call("GET", "/v3")[0] == 200

    def _imported(self) -> bool:
        return ready_lines(self.config.uwsgi_log) > 0

    def _forget(self) -> None:
        self._tokens = None

    def _finish(self, from_template: bool) -> None:
        cfg = self.config
        secrets = Secrets.from_json(cfg.secrets_file.read_text())
        if from_template:
            ids = Identities.from_json(cfg.identities_file.read_text())
        else:
            ids = seed(self.api, secrets, PLACEHOLDER_IMAGE_URL)
            cfg.identities_file.write_text(ids.to_json())
            if self.use_template:
                save_template(cfg)
        self._tokens = Tokens(self.api, secrets, ids)
        if ids.identity_url != self.identity_url:
            # auth_token validates at the catalog's identity endpoint, not at auth_url (pitfall 4).
            repoint(self.api, self.admin_token(), ids.identity_endpoints, self.identity_url)
            ids.identity_url = self.identity_url
            cfg.identities_file.write_text(ids.to_json())

    def set_image_url(self, url: str) -> None:
        """Point the catalog's image service at a Glance (only catalog-reading clients care)."""
        ids = self.tokens.ids
        if ids.image_url != url:
            repoint(self.api, self.admin_token(), ids.image_endpoints, url)
            ids.image_url = url
            self.config.identities_file.write_text(ids.to_json())

    def log_tail(self, lines: int = 40) -> str:
        parts = [tail(path, lines) for path in (self.config.uwsgi_log, self.config.keystone_log)]
        return "\n".join(part for part in parts if part) or f"(no logs in {self.state_dir})"


def _new_secrets() -> Secrets:
    return Secrets(
        admin_password=secrets_module.token_urlsafe(18),
        glance_password=secrets_module.token_urlsafe(18),
        users_password=secrets_module.token_urlsafe(18),
    )
