"""The interoperable import RPCs: staging data, starting an import, and following it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from gateway import validation
from gateway.call_context import CallContext
from gateway.convert import imports
from gateway.errors import Operation
from gateway.glance_client import GlanceClient
from gateway.rpc_group import Context, RpcGroup
from gateway.rpc_scope import RpcScope
from gateway.upload import StageMessage
from generated.glance.gateway.v1 import image_service_pb2 as pb

# How long WatchImageImport waits between two looks at the image: the first wait, doubled after each look
# that saw no change, up to the longest. One GET per image every 2 s at most is cheap for Glance; a change
# starts again from the first wait, since the next one tends to follow soon (measured: a small import's
# steps come ~0.1 s apart).
WATCH_FIRST_WAIT = 0.1
WATCH_LONGEST_WAIT = 2.0
# A watch whose call has a deadline ends this long before it, with status OK: the client then has the last
# state it was sent (IN_PROGRESS) and a clean end, rather than DEADLINE_EXCEEDED racing the last message.
WATCH_END_BEFORE_DEADLINE = 0.5


class ImportRpcs(RpcGroup):
    async def StageImageData(
        self, request_iterator: AsyncIterator[StageMessage], context: Context
    ) -> pb.StageImageDataResponse:
        async with RpcScope(context, "StageImageData") as call, self._streams.admit():
            image = await self._uploads.stage(request_iterator, call)
            return pb.StageImageDataResponse(image=self._image(image))

    async def ImportImage(self, request: pb.ImportImageRequest, context: Context) -> pb.ImportImageResponse:
        async with RpcScope(context, "ImportImage") as call:
            image_id = validation.image_id(request.image_id)
            body = imports.import_body(request)
            path = f"/v2/images/{image_id}/import"
            await self._glance.send("POST", path, Operation.IMPORT, call, image_id=image_id, json_body=body)
            return pb.ImportImageResponse()

    # A coroutine that writes (not an async generator), as GetImage: a client's cancel lands in the wait
    # between two looks at once, and no more requests go to Glance.
    async def WatchImageImport(  # type: ignore[override]
        self, request: pb.WatchImageImportRequest, context: Context
    ) -> None:
        async with RpcScope(context, "WatchImageImport") as call:
            await watch_import(self._glance, validation.image_id(request.image_id), context, call)


async def watch_import(glance: GlanceClient, image_id: str, context: Context, call: CallContext) -> None:
    """Writes the image's import progress now and after each change, until the import has ended (or the call
    is near its deadline)."""
    body = await glance.show_image(image_id, call)
    progress = imports.import_progress(body)
    await context.write(imports.watch_response(body, glance.base, progress))
    end = None if call.deadline is None else call.deadline - WATCH_END_BEFORE_DEADLINE
    wait = WATCH_FIRST_WAIT
    while not progress.finished:
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            return
        await asyncio.sleep(wait if left is None else min(wait, left))
        left = None if end is None else end - time.monotonic()
        try:
            async with asyncio.timeout(None if left is None else max(left, 0)):
                body = await glance.show_image(image_id, call)
        except TimeoutError:
            return  # a look cut short by the end: the client has the last state already
        seen = imports.import_progress(body)
        if seen == progress:
            wait = min(wait * 2, WATCH_LONGEST_WAIT)
            continue
        progress, wait = seen, WATCH_FIRST_WAIT
        await context.write(imports.watch_response(body, glance.base, progress))
