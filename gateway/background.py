"""Background loops that live inside an `async with` (the Glance probe, the sweep)."""

from __future__ import annotations

import asyncio


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancels a background loop and waits until it has ended (whatever it ended with)."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
