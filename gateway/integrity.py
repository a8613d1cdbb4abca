"""Counting and hashing image data as it streams, and comparing with what was expected."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway import metrics
from gateway.errors import Failure, GatewayError, Operation, from_outcome, invalid_argument

# Image data as it streams: bytes, or a view into a received message (no copy).
Chunk = bytes | memoryview

_HEX_LENGTHS = {"sha512": 128, "md5": 32}
# hashlib releases the GIL on large buffers, so each stream's digests are computed on a thread of its own,
# beside the event loop, on another core (SHA-512 alone is slower than the network here; bench/NOTES.md).
# Below this size a thread hop costs more than it saves.
_INLINE_HASH_BYTES = 64 * 1024
# Chunks queued for hashing per stream: enough to ride out scheduling jitter, few enough to bound memory.
_HASH_QUEUE_DEPTH = 4


class DataCheck:
    """Verifies a stream's length and digests without holding the data.

    `size_failure` says what a wrong length means: the client's fault on upload, data loss on download.
    """

    def __init__(
        self,
        operation: Operation,
        expected_size: int | None = None,
        expected_digests: dict[str, str] | None = None,
        size_failure: Failure = Failure.SIZE_MISMATCH,
        hash_algorithms: Iterable[str] = (),
    ) -> None:
        self.operation = operation
        self.expected_size = expected_size
        self.expected_digests = dict(expected_digests or {})
        self.size_failure = size_failure
        self.count = 0
        # Digests to compute: the expected ones, and any whose value only comes at the end (see expect()).
        algorithms = sorted({*self.expected_digests, *hash_algorithms})
        self._hashes = {algo: hashlib.new(algo) for algo in algorithms}
        # One worker thread hashes the chunks in the order they came; at most _HASH_QUEUE_DEPTH wait for it.
        self._hasher: ThreadPoolExecutor | None = None
        self._hashing: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> DataCheck:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Lets the hashing thread go; chunks still queued for it are dropped (the stream failed)."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=False, cancel_futures=True)
            self._hasher = None

    @property
    def verifies_digest(self) -> bool:
        return bool(self._hashes)

    async def update(self, chunk: Chunk) -> None:
        """Counts the chunk at once and hashes it while the caller goes on to move it."""
        self.count += len(chunk)
        if self.expected_size is not None and self.count > self.expected_size:
            raise from_outcome(
                self.size_failure,
                self.operation,
                f"the data is longer than the expected {self.expected_size} bytes",
            )
        if not self._hashes:
            return
        if len(chunk) < _INLINE_HASH_BYTES and not self._hashing:
            self._hash(chunk)
            return
        while len(self._hashing) >= _HASH_QUEUE_DEPTH:
            await self._hashing.popleft()
        self._hashing.append(asyncio.get_running_loop().run_in_executor(self._thread(), self._hash, chunk))

    def _thread(self) -> ThreadPoolExecutor:
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest")
        return self._hasher

    @property
    def hash_algorithms(self) -> frozenset[str]:
        return frozenset(self._hashes)

    def expect(self, algo: str, value: str) -> None:
        """A digest the client gives only at the end (an upload's finish message), checked by finish().

        Only an algorithm hashed from the start can be checked; one also expected up front must agree.
        """
        if algo not in self._hashes:
            raise invalid_argument(
                "FINISH_DIGEST_NOT_ANNOUNCED",
                f"the finish message carries a {algo} digest that ImageSpec.finish_digests did not announce",
            )
        if self.expected_digests.get(algo, value) != value:
            raise self._digest_mismatch(f"the finish message's {algo} digest is not the expected one")
        self.expected_digests[algo] = value

    def _hash(self, chunk: Chunk) -> None:
        for digest in self._hashes.values():
            digest.update(chunk)

    async def finish(self) -> None:
        while self._hashing:
            await self._hashing.popleft()
        self.close()
        if self.expected_size is not None and self.count != self.expected_size:
            raise from_outcome(
                self.size_failure,
                self.operation,
                f"the data has {self.count} bytes where {self.expected_size} were expected",
            )
        for algo, digest in self._hashes.items():
            if algo in self.expected_digests and digest.hexdigest() != self.expected_digests[algo]:
                raise self._digest_mismatch(f"the data does not match its expected {algo} digest")

    def _digest_mismatch(self, message: str) -> GatewayError:
        metrics.CHECKSUM_FAILURES.labels(self.operation.value).inc()
        return from_outcome(Failure.HASH_MISMATCH, self.operation, message)


def upload_digests(sha512: str, md5: str) -> dict[str, str]:
    """The client's expected digests for an upload, checked to be hex of the right length."""
    digests = {}
    for algo, value in (("sha512", sha512), ("md5", md5)):
        if value:
            if not re.fullmatch(f"[0-9a-fA-F]{{{_HEX_LENGTHS[algo]}}}", value):
                raise invalid_argument(
                    "INVALID_CHECKSUM", f"expected_{algo} must be {_HEX_LENGTHS[algo]} hex digits"
                )
            digests[algo] = value.lower()
    return digests


def image_digests(image: dict[str, Any]) -> dict[str, str]:
    """The digest Glance published for an image's whole data: its os_hash, else the legacy md5 checksum."""
    algo, value = image.get("os_hash_algo"), image.get("os_hash_value")
    if isinstance(algo, str) and isinstance(value, str) and value and algo in hashlib.algorithms_available:
        return {algo: value.lower()}
    checksum = image.get("checksum")
    if isinstance(checksum, str) and checksum:
        return {"md5": checksum.lower()}
    return {}
