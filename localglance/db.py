"""Glance's SQLite schema: `glance-manage db_sync`, plus a cached empty template.

db_sync costs about 1.5-3.5 s per start. The schema depends only on the installed
glance, so the first fresh sync is kept as a template in the venv dir and copied
for later fresh starts; a kept DB already at the template's revision is reused as is.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from .config import GlanceConfig
from .env import clean_env
from .paths import GLANCE_VERSION

DB_SYNC_TIMEOUT = 300.0


def template_path(venv_dir: Path) -> Path:
    return venv_dir / f"localglance-empty-db-glance-{GLANCE_VERSION}.sqlite"


def prepare_db(cfg: GlanceConfig) -> None:
    """Make <state>/data/glance.sqlite exist at the current schema revision."""
    db = cfg.database
    template = template_path(cfg.venv_dir)
    template_rev = schema_revision(template)
    if db.exists():
        if template_rev is None or schema_revision(db) != template_rev:
            db_sync(cfg)  # migrates a kept DB from an older glance; a no-op otherwise
        return
    if template_rev is not None:
        shutil.copyfile(template, db)
        return
    db_sync(cfg)
    _save_template(db, template)


def schema_revision(db: Path) -> str | None:
    if not db.is_file():
        return None
    try:
        # Read-only URI: never create or modify the file just to look at it.
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _save_template(db: Path, template: Path) -> None:
    # Write then rename, so a concurrent start never copies a half-written template.
    tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    shutil.copyfile(db, tmp)
    tmp.replace(template)


def db_sync(cfg: GlanceConfig) -> None:
    cmd = [str(cfg.venv_dir / "bin" / "glance-manage"), "--config-file", str(cfg.api_conf), "db_sync"]
    result = subprocess.run(
        cmd,
        cwd=cfg.state_dir,
        env=clean_env(cfg.venv_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DB_SYNC_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise RuntimeError(f"glance-manage db_sync failed ({result.returncode}):\n{output}")
