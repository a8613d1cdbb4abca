"""What a measurement ran on: the machine, package versions and time (the bench and chaos reports)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> str:
    """A command's output (stdout and stderr), or "" when it cannot run."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def first_line_with(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    from localglance.paths import GLANCE_VERSION

    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    mem_kib = first_line_with("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu_model": first_line_with("/proc/cpuinfo", "model name"),
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": int(mem_kib) / 1024 / 1024 if mem_kib.isdigit() else 0.0,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "glance": GLANCE_VERSION,
        "loadavg": loadavg(),
    }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
