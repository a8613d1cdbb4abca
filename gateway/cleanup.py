"""Removing the image records of failed uploads, in the background, for as long as Glance needs.

A failed AddImage hands its record to the Janitor and may return (or be cancelled) at once: the removal
outlives the call. Each removal retries with backoff for up to `patience`; what it cannot remove (Glance
down for longer, an expired token) keeps its upload mark, so the next sweep removes it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from types import TracebackType

from gateway import metrics
from gateway.call_context import CallContext
from gateway.errors import C, GatewayError
from gateway.glance_client import GlanceClient

log = logging.getLogger(__name__)

# Glance answers these while it unwinds an aborted upload, or while it is restarting: worth another try.
RETRYABLE = frozenset({C.INTERNAL, C.UNAVAILABLE, C.DEADLINE_EXCEEDED, C.FAILED_PRECONDITION, C.ABORTED})
FIRST_DELAY = 0.05
MAX_DELAY = 5.0
PATIENCE = 600.0
# How long a record may stay "saving" before it is deleted anyway: the Glance worker that was receiving the
# data unwinds within a second of the connection closing (measured), unless it died with it.
SAVING_PATIENCE = 30.0
# Removals under way at once; each mostly waits between looks.
CONCURRENCY = 16


class Janitor:
    """`async with Janitor(glance) as janitor:`; `janitor.discard(image_id, call)` removes a record."""

    def __init__(
        self, glance: GlanceClient, *, patience: float = PATIENCE, concurrency: int = CONCURRENCY
    ) -> None:
        self._glance = glance
        self._patience = patience
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[bool]] = {}
        self.removed = 0
        self.given_up = 0

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def __aenter__(self) -> Janitor:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close(grace=10.0)

    def discard(
        self,
        image_id: str,
        call: CallContext,
        record_made: Awaitable[bool] | None = None,
        *,
        wait_while_saving: bool = True,
    ) -> asyncio.Task[bool]:
        """Starts removing the record (after `record_made`, if given, says it exists); the task's result says
        whether it is gone. Cancelling a waiter does not stop the removal."""
        running = self._tasks.get(image_id)
        if running is not None:
            if inspect.iscoroutine(record_made):
                record_made.close()  # that removal already covers the record
            return running
        task = asyncio.create_task(
            self._remove(image_id, call.without_deadline(), record_made, wait_while_saving),
            name=f"discard {image_id}",
        )
        self._tasks[image_id] = task
        metrics.UPLOAD_CLEANUPS_PENDING.inc()
        task.add_done_callback(lambda _: self._finished(image_id))
        return task

    def _finished(self, image_id: str) -> None:
        self._tasks.pop(image_id, None)
        metrics.UPLOAD_CLEANUPS_PENDING.dec()

    async def close(self, grace: float) -> None:
        """Gives pending removals `grace` seconds, then stops them; their records are left to the sweep."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        for image_id, task in list(self._tasks.items()):
            task.cancel()
            log.warning(
                "stopping before image %s of a failed upload was removed; the sweep will remove it", image_id
            )

    async def _remove(
        self, image_id: str, call: CallContext, record_made: Awaitable[bool] | None, wait_while_saving: bool
    ) -> bool:
        if record_made is not None and not await record_made:
            return True
        async with self._slots:
            gone = await self._delete_until_gone(image_id, call, wait_while_saving)
        if gone:
            self.removed += 1
        else:
            self.given_up += 1
        metrics.UPLOAD_CLEANUPS.labels("deleted" if gone else "given_up").inc()
        return gone

    async def _delete_until_gone(self, image_id: str, call: CallContext, wait_while_saving: bool) -> bool:
        # Deleting while the Glance worker that received the aborted upload still unwinds it races with that
        # worker's own writes (an image_repo.save of the reverted status, glance/api/v2/image_data.py), so a
        # record in "saving" gets time to settle first. Then: delete, and look again until Glance says 404.
        started = time.monotonic()
        delay = FIRST_DELAY
        last_problem = "nothing answered yet"
        while True:
            try:
                status = (await self._glance.show_image(image_id, call)).get("status")
                settling = wait_while_saving and status == "saving"
                if status == "deleted":
                    # Glance marks the row "deleted", then destroys it: two transactions (ImageRepo.remove);
                    # between them another DELETE is refused, so wait for the first to end.
                    last_problem = "Glance left it in status 'deleted'"
                elif settling and time.monotonic() - started < SAVING_PATIENCE:
                    last_problem = "Glance was still unwinding the upload"
                else:
                    await self._glance.delete_image(image_id, call)
                    continue
            except GatewayError as error:
                if error.code == C.NOT_FOUND:
                    return True
                if error.code not in RETRYABLE:
                    log.warning(
                        "cannot delete image %s of a failed upload: %s (left to the sweep)", image_id, error
                    )
                    return False
                last_problem = str(error)
            if time.monotonic() + delay - started > self._patience:
                log.warning(
                    "gave up deleting image %s of a failed upload after %.0f s: %s (left to the sweep)",
                    image_id, time.monotonic() - started, last_problem,
                )  # fmt: skip
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
