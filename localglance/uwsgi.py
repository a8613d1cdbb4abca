"""Starting a uWSGI master (Glance's or Keystone's) the one way both servers need."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .env import clean_env


def launch(venv_dir: Path, uwsgi_ini: Path, uwsgi_log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """uWSGI from `venv_dir` with `uwsgi_ini`, its output in `uwsgi_log` (truncated: ready lines are
    counted for this run only)."""
    with open(uwsgi_log, "wb") as log:
        return subprocess.Popen(
            [str(venv_dir / "bin" / "uwsgi"), "--ini", str(uwsgi_ini)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=clean_env(venv_dir),
            # Own session and process group: killpg reaches every worker, and a Ctrl-C in the caller's
            # terminal does not hit uWSGI directly.
            start_new_session=True,
        )
