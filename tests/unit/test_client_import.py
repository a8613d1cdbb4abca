"""Importing gateway.client loads no server dependency and no server module of the gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import gateway.client
servers = {'aiohttp', 'uvloop', 'httpx', 'prometheus_client', 'opentelemetry'}
print(sorted(m for m in sys.modules if m.split('.')[0] in servers))
print(sorted(m for m in sys.modules if m.startswith('gateway.') and not m.startswith('gateway.client')))
"""


def test_import_is_clean_of_server_dependencies() -> None:
    # A fresh interpreter: this test process has long imported the server modules.
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == ["[]", "[]"], result.stdout
