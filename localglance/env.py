"""A clean environment for Glance's own processes.

The gateway's venv and Glance's venv must never mix: variables such as
PYTHONPATH or VIRTUAL_ENV inherited from the caller would leak the gateway's
packages into Glance (or the other way round), so they are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

_LEAKY = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE", "__PYVENV_LAUNCHER__")


def clean_env(venv_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env["PATH"] = os.pathsep.join([str(venv_dir / "bin"), env.get("PATH", "/usr/bin:/bin")])
    # Keep Python output unbuffered so logs are complete if a process is killed.
    env["PYTHONUNBUFFERED"] = "1"
    return env
