"""Keeps the gateway's DELETEs to Glance from overlapping its other writes there.

Glance removes an image record in two transactions (ImageRepo.remove in glance/db/__init__.py: the status
becomes "deleted", then image_destroy marks the row deleted). On an SQLite database, oslo.db opens every
transaction with a deferred BEGIN that reads before it writes, and SQLite fails such a transaction at once
("database is locked", a 500) when another one is writing, since waiting could deadlock. When the second of
the two fails, the record stays listed with status "deleted" for ever: Glance allows no transition out of
"deleted", so no later DELETE can remove it. Every other write failing that way is only a retryable 500.

So a DELETE waits until none of this gateway's creates and metadata updates is in flight (and they wait for
it), and for a quiet moment after one of its uploads started or ended (Glance writes the image's status then).
Measured with 40 uploads cancelled by 10 callers at once on a 3-worker Glance: 8 concurrent clean-up DELETEs
left 4 records stuck as "deleted" (16 DELETEs answered 500); one at a time, alone, left none in 3 runs.
It cannot see other clients' writes; on MySQL or PostgreSQL, where row locks wait, none of this matters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

# After an upload starts or ends, Glance writes its status within this time (measured: under 50 ms on
# loopback); a DELETE waits for it, but never longer than MAX_QUIET_WAIT.
QUIET_SECONDS = 0.25
MAX_QUIET_WAIT = 2.0
# The order is best effort: a Glance that is slow to answer one request must not stall the others. A write
# waits at most this long for a DELETE to end, a DELETE this long for writes to end, then each goes ahead.
WRITE_WAIT = 1.0
DELETE_WAIT = 5.0


class WriteGate:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._writes = 0
        self._deleting = False
        self._deletes_waiting = 0
        self._last_upload_event = -QUIET_SECONDS

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Around a create or metadata update: any number at once, never during a DELETE."""
        async with self._changed:
            # DELETEs go first, so a steady flow of updates cannot hold them off.
            await self._wait(lambda: not self._deleting and not self._deletes_waiting, WRITE_WAIT)
            self._writes += 1
        try:
            yield
        finally:
            async with self._changed:
                self._writes -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def delete(self) -> AsyncIterator[None]:
        """Around a DELETE: one at a time, alone."""
        async with self._changed:
            self._deletes_waiting += 1
            try:
                await self._wait(lambda: not self._deleting and not self._writes, DELETE_WAIT)
            finally:
                self._deletes_waiting -= 1
            self._deleting = True
        try:
            await self._quiet_after_uploads()
            yield
        finally:
            async with self._changed:
                self._deleting = False
                self._changed.notify_all()

    async def _wait(self, ready: Callable[[], bool], limit: float) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._changed.wait_for(ready)

    def upload_event(self) -> None:
        """An upload started or ended: Glance is about to write that image's status."""
        self._last_upload_event = time.monotonic()

    async def _quiet_after_uploads(self) -> None:
        give_up = time.monotonic() + MAX_QUIET_WAIT
        while (wait := self._last_upload_event + QUIET_SECONDS - time.monotonic()) > 0:
            if time.monotonic() >= give_up:
                return
            await asyncio.sleep(min(wait, give_up - time.monotonic()))
