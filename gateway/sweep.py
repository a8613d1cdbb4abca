"""The sweep: removes image records that an AddImage marked (upload_marker) and that never got their data,
once older than the sweep age, whatever gateway made them (one that died mid-upload leaves such a record for
ever otherwise).

It runs at start-up and then every interval (with jitter, so replicas do not sweep in step). Several replicas
sweeping at once is safe: a removal is a DELETE that the loser sees as 404. It must not remove an upload still
in progress, so the age must exceed the longest upload (the README says so).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from gateway import background, upload_marker, validation
from gateway.call_context import CallContext
from gateway.cleanup import Janitor
from gateway.errors import C, GatewayError
from gateway.glance_client import GlanceClient, JsonObject

log = logging.getLogger(__name__)

PAGE = 200
JITTER = 0.1


class Sweep:
    """`async with Sweep(glance, janitor, age, interval):` sweeps in the background while the block runs."""

    def __init__(
        self,
        glance: GlanceClient,
        janitor: Janitor,
        age: float,
        interval: float,
        token_file: str | None = None,
    ) -> None:
        self._glance = glance
        self._janitor = janitor
        self._age = timedelta(seconds=age)
        self._interval = interval
        self._token_file = Path(token_file) if token_file else None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sweep:
        self._task = asyncio.create_task(self._run(), name="sweep")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await background.stop(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except GatewayError as error:
                log.warning("sweep for unfinished uploads failed: %s", error)
            if not self._interval:
                return
            await asyncio.sleep(self._interval * random.uniform(1 - JITTER, 1 + JITTER))

    async def sweep_once(self) -> int:
        """Starts removing every stale unfinished upload record; returns how many it found."""
        call = CallContext(token=self._token())
        cutoff = datetime.now(UTC) - self._age
        found = 0
        for image in await self._unfinished(call):
            created = _parse_time(image.get("created_at"))
            if created is None or created > cutoff:
                continue
            found += 1
            log.info("sweep: removing image %s, an upload left unfinished since %s", image["id"], created)
            # The age says no worker is receiving its data any more: no need to wait while it is "saving".
            self._janitor.discard(str(image["id"]), call, wait_while_saving=False)
        return found

    def _token(self) -> str | None:
        """The token in the token file, read now: Keystone tokens expire (an hour by default), so whoever
        rotates the file must be able to count on the next sweep using the new one."""
        if self._token_file is None:
            return None
        try:
            return validation.auth_token(self._token_file.read_text().strip())
        except (OSError, UnicodeDecodeError, GatewayError) as error:
            # Never the file's content: it is a credential.
            reason = error.reason if isinstance(error, GatewayError) else type(error).__name__
            raise GatewayError(
                C.FAILED_PRECONDITION,
                "SWEEP_TOKEN_UNREADABLE",
                f"cannot use the sweep's token file {self._token_file}: {reason}",
            ) from None

    async def _unfinished(self, call: CallContext) -> list[JsonObject]:
        found: list[JsonObject] = []
        # Glance leaves hidden images out of a listing unless asked for them alone.
        for hidden in ("false", "true"):
            marker: str | None = None
            while True:
                params = [
                    (upload_marker.KEY, upload_marker.VALUE),
                    ("status", "in:" + ",".join(upload_marker.UNFINISHED_STATUSES)),
                    ("visibility", "all"),
                    ("os_hidden", hidden),
                    ("limit", str(PAGE)),
                ]
                if marker:
                    params.append(("marker", marker))
                page = (await self._glance.list_images(params, call)).get("images") or []
                found.extend(page)
                if len(page) < PAGE:
                    break
                marker = str(page[-1]["id"])
        return found


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
