"""Caps glibc's malloc arenas; called before the gateway starts any thread.

glibc gives threads that allocate at the same time arenas of their own, up to 8 per core, and memory freed in
one arena is not reused by another. The gateway's threads (gRPC's, one digest thread per verified stream)
all handle image chunks, so with many streams the arenas' high-water marks add up. Measured with 100
concurrent mixed streams for 60 s (make chaos, scenario 6): peak RSS (VmHWM) 162.7 MiB with glibc's default,
146.5 MiB with 2 arenas, same calls/s. A single stream never showed a difference (bench/NOTES.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 2


def cap_arenas() -> bool:
    """True when glibc took the cap; other C libraries are left as they are."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, ARENAS))
    except (OSError, AttributeError):
        return False
