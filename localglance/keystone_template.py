"""A fresh Keystone data dir (keys, schema, bootstrap) and the saved template of a seeded one.

The template lives next to the venv (like db.py's empty Glance DB), keyed on the Keystone version and on
the code that configures and seeds it, so a change to either builds a new one.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from .env import clean_env
from .keystone_api import Secrets
from .keystone_config import ADMIN_PROJECT, ADMIN_USER, REGION, KeystoneConfig
from .paths import KEYSTONE_VERSION, PACKAGE_DIR

MANAGE_TIMEOUT = 300.0
TEMPLATE_PREFIX = "localglance-keystone-template-"
COMPLETE_MARKER = ".complete"


def _code_digest() -> str:
    digest = hashlib.sha256()
    for source in ("keystone_config.py", "keystone_api.py", "keystone_template.py"):
        digest.update((PACKAGE_DIR / source).read_bytes())
    return digest.hexdigest()[:16]


# Taken at import, not at save: a process that seeded with the code it loaded must not save under the key
# of files edited since (it once saved a template without the newer seeding under the newer key).
CODE_DIGEST = _code_digest()


def template_dir(venv_dir: Path) -> Path:
    return venv_dir / f"{TEMPLATE_PREFIX}{KEYSTONE_VERSION}-{CODE_DIGEST}"


def load_template(cfg: KeystoneConfig) -> bool:
    """Fill the (empty) data dir from the saved template; False when there is none yet."""
    template = template_dir(cfg.venv_dir)
    if not (template / COMPLETE_MARKER).is_file():
        return False
    shutil.copytree(template, cfg.data_dir, dirs_exist_ok=True)
    (cfg.data_dir / COMPLETE_MARKER).unlink()
    return True


def save_template(cfg: KeystoneConfig) -> None:
    """Copy the seeded data dir (Keystone may be running: the DB goes through SQLite's backup API)."""
    template = template_dir(cfg.venv_dir)
    if (template / COMPLETE_MARKER).is_file():
        return
    # Built aside then renamed, so a concurrent start never copies a half-written template.
    tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cfg.data_dir, tmp, ignore=shutil.ignore_patterns(cfg.database.name + "*"))
    with (
        closing(sqlite3.connect(f"file:{cfg.database}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(tmp / cfg.database.name)) as target,
    ):
        source.backup(target)
    (tmp / COMPLETE_MARKER).touch()
    try:
        tmp.rename(template)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another start saved one first: same content
    # Templates of earlier launcher code are never used again.
    for stale in cfg.venv_dir.glob(f"{TEMPLATE_PREFIX}*"):
        if stale != template and not stale.name.endswith(".tmp"):
            shutil.rmtree(stale, ignore_errors=True)


def bootstrap(cfg: KeystoneConfig, secrets: Secrets) -> None:
    """Keys, schema, then bootstrap (admin user and project, roles, region, identity endpoints)."""
    write_secret(cfg.secrets_file, secrets.to_json())
    owner = ["--keystone-user", pwd.getpwuid(os.getuid()).pw_name]
    owner += ["--keystone-group", grp.getgrgid(os.getgid()).gr_name]
    # Independent of each other, and each mostly Python start-up: run them side by side.
    _manage_all(cfg, [["fernet_setup", *owner], ["credential_setup", *owner], ["db_sync"]])
    url = f"{cfg.url}/v3"
    args = ["bootstrap", "--bootstrap-username", ADMIN_USER, "--bootstrap-project-name", ADMIN_PROJECT]
    args += ["--bootstrap-region-id", REGION, "--bootstrap-public-url", url]
    args += ["--bootstrap-internal-url", url, "--bootstrap-admin-url", url]
    # The password goes by environment, never on a command line that `ps` shows.
    _manage_all(cfg, [args], {"OS_BOOTSTRAP_PASSWORD": secrets.admin_password})


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _manage_all(
    cfg: KeystoneConfig, commands: list[list[str]], extra_env: dict[str, str] | None = None
) -> None:
    env = clean_env(cfg.venv_dir) | (extra_env or {})
    manage = [str(cfg.venv_dir / "bin" / "keystone-manage"), "--config-file", str(cfg.conf)]
    running = [
        (
            args[0],
            subprocess.Popen(
                [*manage, *args],
                cwd=cfg.state_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ),
        )
        for args in commands
    ]
    failures = []
    for name, proc in running:
        try:
            output, _ = proc.communicate(timeout=MANAGE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            text = output.decode(errors="replace")[-4000:]
            failures.append(f"keystone-manage {name} failed ({proc.returncode}):\n{text}")
    if failures:
        raise RuntimeError("\n".join(failures))
