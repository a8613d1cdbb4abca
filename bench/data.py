"""Random image data, made a chunk at a time so even 2 GiB never sits in memory whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from harness.data import pseudo_random_chunks

MIB = 1024 * 1024
CHUNK = MIB


@dataclass(frozen=True)
class Digests:
    size: int
    sha512: str
    md5: str


class Hashing:
    """Wraps a chunk iterator and hashes what passes through (the digests are final once it is exhausted)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._sha512 = hashlib.sha512()
        self._md5 = hashlib.md5()
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._sha512.update(chunk)
            self._md5.update(chunk)
            self._size += len(chunk)
            yield chunk

    def digests(self) -> Digests:
        return Digests(self._size, self._sha512.hexdigest(), self._md5.hexdigest())


class UploadData:
    """The bytes every upload of one figure sends, gateway and direct alike: a random buffer, sent in chunks.

    Sizes above `max_buffer` repeat the buffer (only the RSS figure sends that much; what matters there is
    the amount, not that every byte is fresh).
    """

    def __init__(self, size: int, seed: int, max_buffer: int = 512 * MIB) -> None:
        self.size = size
        # Made in 1 MiB pieces: one randbytes() call cannot make more than 256 MiB.
        self._buffer = b"".join(pseudo_random_chunks(seed, min(size, max_buffer)))
        self._digests: Digests | None = None

    def chunks(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        buffer, length = self._buffer, len(self._buffer)
        sent = 0
        while sent < self.size:
            start = sent % length
            size = min(chunk_size, self.size - sent, length - start)
            yield buffer[start : start + size]
            sent += size

    def digests(self) -> Digests:
        if self._digests is None:
            hashing = Hashing(self.chunks())
            for _ in hashing:
                pass
            self._digests = hashing.digests()
        return self._digests
