"""The project as a user installs it: a wheel, installed with its dependencies into a fresh venv, gives
`glance-grpc`, `python -m gateway` and `gateway.client`, and the CLI talks to the session gateway.

The wheel is built from a copy of the sources (setuptools would leave build/ in the work tree). The fresh venv
is made without pip and filled by this project's pip (`pip --python`), pinned by constraints.txt, without
byte-compiling: the same install a user's `pip install` does, in about half the time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support import GatewayProcess

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "gateway", "generated")
SERVER_ONLY = ("aiohttp", "uvloop", "httpx", "opentelemetry")


def _run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        # Not this venv's: the fresh venv's own paths must do.
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")},
    )
    assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its dependencies installed; returns its bin/."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = Path(sys.executable).parent / "pip"

    started = time.monotonic()
    _run(pip, "wheel", "--quiet", "--no-deps", "-w", root / "dist", source, cwd=root)
    built = time.monotonic()
    (wheel,) = (root / "dist").glob("glance_grpc_gateway-*.whl")
    _run(sys.executable, "-m", "venv", "--without-pip", root / "venv", cwd=root)
    venv_python = root / "venv" / "bin" / "python"
    constraints = REPO / "constraints.txt"
    _run(pip, "--python", venv_python, "install", "-q", "--no-compile", "-c", constraints, wheel, cwd=root)
    done = time.monotonic()
    # Reported, not asserted (-rA or -s shows it): the CI machine's load decides the number.
    print(f"\nwheel built in {built - started:.1f} s, installed with dependencies in {done - built:.1f} s")
    return root / "venv" / "bin"


def test_the_wheel_gives_the_cli_the_server_and_the_client(installed: Path, tmp_path: Path) -> None:
    help_text = _run(installed / "glance-grpc", "--help", cwd=tmp_path).stdout
    assert help_text.startswith("usage: glance-grpc") and "download" in help_text and "upload" in help_text
    server_help = _run(installed / "python", "-m", "gateway", "--help", cwd=tmp_path).stdout
    assert "--glance-url" in server_help
    # From outside the work tree, so the installed package is what gets imported; the client alone pulls in
    # none of the server's dependencies.
    check = (
        "import sys, gateway.client; from gateway.client import Client; print(gateway.client.__file__); "
        f"print([m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY!r}])"
    )
    where, server_modules = _run(installed / "python", "-c", check, cwd=tmp_path).stdout.splitlines()
    assert where.startswith(str(installed.parent)) and server_modules == "[]"


def test_the_installed_cli_lists_images_through_the_gateway(
    installed: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    listed = _run(installed / "glance-grpc", "--address", gateway.address, "list", "-f", "json", cwd=tmp_path)
    images = json.loads(listed.stdout)
    assert isinstance(images, list)
    assert all(set(image) == {"ID", "Name", "Status"} for image in images)
