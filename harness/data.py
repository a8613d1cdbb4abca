"""Image data for tests and benchmarks, made a chunk at a time so even gigabytes never sit in memory whole."""

from __future__ import annotations

import random
from collections.abc import Iterator

MIB = 1024 * 1024


def pseudo_random_chunks(seed: int, total: int, chunk_size: int = MIB) -> Iterator[bytes]:
    """The same `total` bytes for the same seed, `chunk_size` at a time."""
    rng = random.Random(seed)
    remaining = total
    while remaining > 0:
        size = min(chunk_size, remaining)
        yield rng.randbytes(size)
        remaining -= size
