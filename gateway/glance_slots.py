"""The gateway's own limit on requests to Glance: one slot per upstream connection.

A slot is held from sending a request until its response is closed. The transport's pool has the same limit
but can only say "connect timeout" when its wait runs out; a wait here knows it is the gateway that is busy,
not Glance (GATEWAY_BUSY).
"""

from __future__ import annotations

import asyncio

from gateway.call_context import CallContext
from gateway.errors import Failure, Operation, from_outcome


class ConnectionSlots:
    def __init__(self, count: int, longest_wait: float) -> None:
        self.count = count
        self._longest_wait = longest_wait
        self._free = asyncio.Semaphore(count)

    def all_busy(self) -> bool:
        return self._free.locked()

    async def acquire(self) -> None:
        """A slot, however long it takes (the caller bounds the wait itself)."""
        await self._free.acquire()

    def release(self) -> None:
        self._free.release()

    async def take(self, operation: Operation, call: CallContext) -> bool:
        """Takes a slot (the caller releases it), waiting for one while all are busy; True when it waited.

        The wait lasts until the call's deadline, at most `longest_wait` (the read timeout); past it the call
        fails with GATEWAY_BUSY (DEADLINE_EXCEEDED when it was the deadline, else UNAVAILABLE), nothing sent.
        """
        if not self._free.locked():
            await self._free.acquire()  # a free slot: returns without suspending
            return False
        wait = self._longest_wait
        remaining = call.time_remaining()
        deadline_first = remaining is not None and remaining <= wait
        try:
            async with asyncio.timeout(remaining if deadline_first else wait):
                await self._free.acquire()
        except TimeoutError:
            if deadline_first:
                raise from_outcome(
                    Failure.GATEWAY_BUSY_PAST_DEADLINE,
                    operation,
                    f"the call's deadline passed while the gateway waited for one of its {self.count} "
                    "connections to Glance (all busy); nothing was sent",
                ) from None
            raise from_outcome(
                Failure.GATEWAY_BUSY,
                operation,
                f"all {self.count} of the gateway's connections to Glance stayed busy for {wait:g} s; "
                "nothing was sent, retry with backoff",
            ) from None
        return True
