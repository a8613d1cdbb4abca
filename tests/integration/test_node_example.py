"""examples/node, the Node client built from protos/ alone, runs its walkthrough against the session gateway.

It proves the published contract works from another language: `npm ci` (from the committed lockfile, skipped
while node_modules matches it) and then `node --test`, as examples/node/README.md tells users to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from .support import GatewayProcess

NODE_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
# Written after a successful `npm ci`: the hash of the package-lock.json it installed.
STAMP = NODE_EXAMPLE / "node_modules" / ".installed-lock-sha256"


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> None:
    """Runs a command in examples/node and fails with its whole output unless it exits 0."""
    result = subprocess.run(
        args, cwd=NODE_EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    command = " ".join(args)
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{command} exited {result.returncode}\n{output}"


def npm_ci() -> None:
    """`npm ci` unless node_modules was installed from this very package-lock.json."""
    lock_hash = hashlib.sha256((NODE_EXAMPLE / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == lock_hash:
        return
    run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], timeout=600)
    STAMP.write_text(lock_hash)


def test_node_walkthrough(gateway: GatewayProcess) -> None:
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not installed: examples/node needs Node.js 18 or later"
    npm_ci()
    env = {**os.environ, "GLANCE_GRPC_ADDRESS": gateway.address}
    env.pop("OS_AUTH_TOKEN", None)  # the session Glance needs no token
    run(["node", "--test"], env=env)
