"""Launcher for a real local OpenStack Glance 33.0.0, and optionally Keystone 30.0.0 (stdlib only).

Both live in one venv of their own (default <repo>/.state/glance-venv) and run under
uWSGI on 127.0.0.1; nothing here imports them, so the caller's venv stays clean.
"""

from __future__ import annotations

from .identities import Identities
from .keystone import KeystoneServer
from .server import GlanceServer, recorded_master, stop_recorded
from .venv import ensure_venv

__all__ = ["GlanceServer", "Identities", "KeystoneServer", "ensure_venv", "recorded_master", "stop_recorded"]
