"""Create and fill the private venv of Glance and Keystone (idempotent, guarded by a marker file)."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .env import clean_env
from .log import info
from .paths import CONSTRAINTS_FILE, DEFAULT_VENV_DIR, GLANCE_VERSION, KEYSTONE_VERSION, UWSGI_VERSION

MARKER_NAME = ".localglance-installed"
REQUIRED_BINARIES = ("python", "uwsgi", "glance-manage", "keystone-manage")


def expected_marker() -> str:
    """What the marker must say; a changed pin or constraints file forces a re-install."""
    digest = hashlib.sha256(CONSTRAINTS_FILE.read_bytes()).hexdigest()
    return (
        f"glance=={GLANCE_VERSION}\nkeystone=={KEYSTONE_VERSION}\nuWSGI=={UWSGI_VERSION}\n"
        f"constraints-sha256={digest}\n"
    )


def venv_is_ready(venv_dir: Path) -> bool:
    marker = venv_dir / MARKER_NAME
    if not marker.is_file() or marker.read_text() != expected_marker():
        return False
    return all((venv_dir / "bin" / name).exists() for name in REQUIRED_BINARIES)


def ensure_venv(venv_dir: Path | None = None) -> Path:
    """Return a venv with glance, keystone and uWSGI installed, installing them if needed."""
    venv_dir = (venv_dir or DEFAULT_VENV_DIR).resolve()
    if venv_is_ready(venv_dir):
        return venv_dir
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    # A lock so parallel callers (test workers, `make run`) don't install twice at once.
    with _install_lock(venv_dir):
        if not venv_is_ready(venv_dir):
            _install(venv_dir)
    return venv_dir


@contextmanager
def _install_lock(venv_dir: Path) -> Iterator[None]:
    lock_path = venv_dir.with_name(venv_dir.name + ".lock")
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _install(venv_dir: Path) -> None:
    started = time.monotonic()
    (venv_dir / MARKER_NAME).unlink(missing_ok=True)
    # Cached DB templates (see db.py, keystone.py) belong to the old install.
    for stale in venv_dir.glob("localglance-empty-db-*"):
        stale.unlink()
    for stale_dir in venv_dir.glob("localglance-keystone-template-*"):
        shutil.rmtree(stale_dir, ignore_errors=True)
    _create_venv(venv_dir)
    _pip_install(venv_dir)
    (venv_dir / MARKER_NAME).write_text(expected_marker())
    info(f"venv ready in {time.monotonic() - started:.1f} s: {venv_dir}")


def _create_venv(venv_dir: Path) -> None:
    if (venv_dir / "pyvenv.cfg").is_file() and (venv_dir / "bin" / "python").exists():
        info(f"reusing incomplete venv {venv_dir}")
        return
    if venv_dir.exists() and any(venv_dir.iterdir()):
        # Never delete a directory we did not create.
        raise RuntimeError(f"{venv_dir} exists but is not a venv; remove it or pick another venv_dir")
    info(f"creating venv {venv_dir}")
    # sys.executable may itself be a venv's python; venv then builds on its base interpreter.
    _run([sys.executable, "-m", "venv", str(venv_dir)], venv_dir)


def _pip_install(venv_dir: Path) -> None:
    info(
        f"installing glance=={GLANCE_VERSION} keystone=={KEYSTONE_VERSION} uwsgi=={UWSGI_VERSION} "
        "(~1 min cold; uWSGI compiles)"
    )
    _run(
        [
            str(venv_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--progress-bar",
            "off",
            "-c",
            str(CONSTRAINTS_FILE),
            f"glance=={GLANCE_VERSION}",
            f"keystone=={KEYSTONE_VERSION}",
            f"uwsgi=={UWSGI_VERSION}",
        ],
        venv_dir,
    )


def _run(cmd: list[str], venv_dir: Path) -> None:
    # pip's own output is the progress report; send it to stderr, not our stdout.
    result = subprocess.run(cmd, env=clean_env(venv_dir), stdout=sys.stderr, stderr=sys.stderr, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"command failed with exit code {result.returncode}: {' '.join(cmd)}")
