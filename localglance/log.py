"""Progress messages go to stderr so stdout stays machine-readable for the CLI."""

from __future__ import annotations

import sys


def info(message: str) -> None:
    print(f"localglance: {message}", file=sys.stderr, flush=True)
