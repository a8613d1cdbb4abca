"""Launcher for a real local OpenStack Glance 33.0.0 (stdlib only).

Glance lives in its own venv (default <repo>/.state/glance-venv) and runs under
uWSGI on 127.0.0.1; nothing here imports Glance, so the caller's venv stays clean.
"""

from __future__ import annotations

from .server import GlanceServer, recorded_master, stop_recorded
from .venv import ensure_venv

__all__ = ["GlanceServer", "ensure_venv", "recorded_master", "stop_recorded"]
