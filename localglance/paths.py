"""Default locations, all relative to the repository that holds this package."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEFAULT_VENV_DIR = REPO_DIR / ".state" / "glance-venv"
DEFAULT_STATE_DIR = REPO_DIR / ".state" / "glance"
CONSTRAINTS_FILE = PACKAGE_DIR / "constraints-glance-33.0.0.txt"

GLANCE_VERSION = "33.0.0"
# Installed into the same venv as Glance (pins: the union list in CONSTRAINTS_FILE).
KEYSTONE_VERSION = "30.0.0"
UWSGI_VERSION = "2.0.31"
