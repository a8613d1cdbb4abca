"""AddImage and StageImageData: image data into Glance, made so that a failed call leaves nothing behind.

AddImage, the order of events and why:
1. The spec and the first data message are read and checked before Glance sees anything.
2. The gateway picks the image id (unless the client did) and creates the record with the upload mark
   (upload_marker), which lets a sweep find it should this gateway die before the data is in. The create
   runs to its end even if the call is cancelled meanwhile: a create cancelled in flight can still be
   carried out by Glance later (it waits in uWSGI's listen queue), and only a finished exchange tells
   whether the record exists.
3. The data streams to Glance, counted and hashed; the last chunk is held back until the data has ended and
   passed every check (upload_stream.verified_body). The end is explicit when the client sends an
   UploadFinish; otherwise it is the end of the request stream, which grpc.aio can also report for a
   cancelled client (best effort, see upload_stream.CANCEL_SETTLE_SECONDS).
4. A PATCH sets `protected` if asked (earlier, it would have blocked deleting a failed upload); the mark
   stays, and the sweep leaves marked images that have their data alone.
Any failure from step 2 on hands the record to the Janitor, which deletes it once Glance lets it.

StageImageData streams the same way into an existing queued image's staging area (PUT .../stage). The image
is the client's, so a failure cannot delete it; Glance 33 has no call that removes staged data either. What
keeps a failed stage clean is the held-back last chunk: the upstream request is cut off mid-body, and Glance
then deletes the partial file and puts the image back to "queued" (image_data.stage, measured ~0.1 s). The
call returns its failure once the image is back to queued. For that wait to mean anything, Glance must have
been reading the request when it was cut off: so after the first chunk the data waits until the image shows
"uploading" (Glance's worker is inside the stage). Otherwise the request could still sit in uWSGI's queue,
its data in socket buffers (measured: a 3 MiB stage fitted), and Glance would take it up only after the
gateway had found the image untouched: the caller would meet an image "uploading" after the error.
Only a failure after the last chunk went (Glance's answer lost, or a cancel landing then) can leave the data
staged: Glance may have completed the stage, and nothing but an import or deleting the image ends that.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, suppress

import grpc

from gateway import call_record, convert, upload_marker, validation
from gateway.call_context import CallContext
from gateway.cleanup import Janitor
from gateway.errors import Failure, GatewayError, Operation, from_outcome, invalid_argument
from gateway.glance_client import GlanceClient, JsonObject
from gateway.integrity import Chunk
from gateway.stall import StallWatch
from gateway.upload_stream import Received, UploadStream, data_terms, verified_body
from generated.glance.gateway.v1 import image_service_pb2 as pb

# The request streams as wire's parsers give them (data-only messages are views of their bytes).
UploadMessage = Received[pb.AddImageRequest]
StageMessage = Received[pb.StageImageDataRequest]

# A failed call (other than a cancel) waits this long for its record to be gone, or its staged data, before
# it returns its status, so a caller who looks right after the error finds nothing; for AddImage the Janitor
# goes on after that if it must.
DISCARD_WAIT_SECONDS = 20.0
# How often a stage looks at its image (has Glance begun? undone it?): the first wait, then the longest.
STAGE_POLL_SECONDS = (0.02, 0.5)
# How long a stage's data waits for Glance to begin taking it (for a free uWSGI worker): --read-timeout's
# default.
GLANCE_START_SECONDS = 60.0
_PROTECT: JsonObject = {"op": "replace", "path": "/protected", "value": True}


class Uploads:
    """Runs AddImage and StageImageData calls against one Glance, handing failed records to the Janitor."""

    def __init__(self, glance: GlanceClient, janitor: Janitor, stall_timeout: float) -> None:
        self._glance = glance
        self._janitor = janitor
        self._stall_timeout = stall_timeout

    def _stall_watch(self, operation: Operation) -> StallWatch:
        message = f"the client sent nothing for {self._stall_timeout:g} s; the upload was stopped"
        return StallWatch(self._stall_timeout, operation, message, {})

    async def add_image(self, messages: AsyncIterator[UploadMessage], call: CallContext) -> JsonObject:
        """The new image's JSON; a reservation (no data) when the stream holds only the spec."""
        async with self._stall_watch(Operation.UPLOAD) as watch:
            stream = UploadStream(messages, watch, "AddImage")
            try:
                image = await self._add_image(stream, call)
                call_record.note_image_id(str(image.get("id") or ""))  # a reservation's id comes from Glance
                return image
            finally:
                call_record.add_bytes(received=stream.received)  # once per call, not per chunk

    async def _add_image(self, stream: UploadStream[pb.AddImageRequest], call: CallContext) -> JsonObject:
        spec = (await stream.first()).spec
        body = convert.create_body(spec)
        store = validation.store_name(spec.store) if spec.store else None
        terms = data_terms(spec)
        async with terms.check(Operation.UPLOAD) as check:
            first = await stream.next_chunk()
            if first is None and terms.needs_finish and stream.finish is None:
                raise stream.finish_missing()  # the stream ended before any data: nothing was created yet
            # Only a spec, with nothing said about data: a reservation.
            if first is None and stream.finish is None and terms.size is None and not check.verifies_digest:
                return await self._glance.create_image(body, call)
            if not ("disk_format" in body and "container_format" in body):
                raise invalid_argument(
                    "MISSING_FORMAT",
                    "an image with data needs a type, or both disk_format and container_format",
                )
            if store:
                await self._require_store(store, call)
            data = verified_body(first, stream, check, terms)
            return await self._create_and_upload(body, data, terms.size, store, call, stream)

    async def _create_and_upload(
        self,
        body: JsonObject,
        data: AsyncIterator[Chunk],
        size: int | None,
        store: str | None,
        call: CallContext,
        stream: UploadStream[pb.AddImageRequest],
    ) -> JsonObject:
        # Protection comes last: a protected image could not be deleted if the upload fails.
        protect = body.pop("protected", False)
        chosen_here = "id" not in body
        image_id = body.setdefault("id", str(uuid.uuid4()))
        call_record.note_image_id(image_id)
        body[upload_marker.KEY] = upload_marker.VALUE
        # Bounded by the read timeout, not the call's deadline: see step 2 in the module's docstring.
        creating = asyncio.ensure_future(self._glance.create_image(body, call.without_deadline()))
        try:
            # Glance's answer names the record (a real Glance keeps the id it was given).
            image_id = str((await asyncio.shield(creating)).get("id") or image_id)
            await self._glance.upload(image_id, data, size, store, call)
            if protect:
                return await self._glance.update_image(image_id, [_PROTECT], call)
            return await self._glance.show_image(image_id, call)
        except BaseException as failure:
            removal = self._janitor.discard(image_id, call, _record_made(creating, chosen_here))
            # A stall arrives as a cancel too, but it is a failure: its caller still waits for the answer.
            if not isinstance(failure, asyncio.CancelledError) or stream.stalled:
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(removal), DISCARD_WAIT_SECONDS)
            raise

    async def _require_store(self, store: str, call: CallContext) -> None:
        # Checked before the image record exists, so an unknown store leaves nothing behind.
        stores = await self._glance.stores(call)
        known = [str(found.get("id")) for found in stores or []]
        if store not in known:
            raise invalid_argument(
                "UNKNOWN_STORE", f"Glance has no store {store!r} (it has: {', '.join(known) or 'none'})"
            )

    async def stage(self, messages: AsyncIterator[StageMessage], call: CallContext) -> JsonObject:
        """The image's JSON once its data is staged (status "uploading")."""
        async with self._stall_watch(Operation.STAGE) as watch:
            stream = UploadStream(messages, watch, "StageImageData")
            try:
                return await self._stage(stream, call)
            finally:
                call_record.add_bytes(received=stream.received)

    async def _stage(self, stream: UploadStream[pb.StageImageDataRequest], call: CallContext) -> JsonObject:
        spec = (await stream.first()).spec
        image_id = validation.image_id(spec.image_id)
        call_record.note_image_id(image_id)
        terms = data_terms(spec)
        async with terms.check(Operation.STAGE) as check:
            first = await stream.next_chunk()
            if first is None:
                if terms.needs_finish and stream.finish is None:
                    raise stream.finish_missing()
                # An empty stage still makes the image "uploading", which only an import or a delete ends.
                raise invalid_argument(
                    "NO_DATA", "StageImageData needs data after the spec; nothing was staged"
                )
            # Asked first, so a wrong image fails with Glance's own answer before any data is sent.
            image = await self._glance.show_image(image_id, call)
            if image.get("status") != "queued":
                raise _not_queued(image_id, str(image.get("status")))
            data = self._once_glance_reads(image_id, verified_body(first, stream, check, terms), call)
            try:
                await self._glance.upload(image_id, data, terms.size, None, call, Operation.STAGE)
            except BaseException as failure:
                # Glance answering means it has already restored the image; a client's cancel has no one to
                # wait for (Glance restores the image all the same).
                answered = isinstance(failure, GatewayError) and "glance_status" in failure.metadata
                cancelled = isinstance(failure, asyncio.CancelledError) and not stream.stalled
                if not (answered or cancelled):
                    await self._await_unstaged(image_id, call.without_deadline())
                raise
            return await self._glance.show_image(image_id, call)

    async def _once_glance_reads(
        self, image_id: str, body: AsyncGenerator[Chunk, None], call: CallContext
    ) -> AsyncIterator[Chunk]:
        """The body, paused after its first chunk until Glance shows the image "uploading" (the docstring of
        the module says why)."""
        begun = False
        async with aclosing(body):
            async for chunk in body:
                yield chunk
                if not begun:
                    try:
                        async with asyncio.timeout(GLANCE_START_SECONDS):
                            await self._await_status_change(image_id, "queued", call)
                    except TimeoutError:
                        message = (
                            f"Glance did not begin to take the staged data in {GLANCE_START_SECONDS:g} s"
                        )
                        raise from_outcome(Failure.UPSTREAM_TIMEOUT, Operation.STAGE, message) from None
                    begun = True

    async def _await_unstaged(self, image_id: str, call: CallContext) -> None:
        """Waits (a while at most) for Glance to notice the cut-off stage and put the image back to queued."""
        with suppress(TimeoutError, GatewayError):
            async with asyncio.timeout(DISCARD_WAIT_SECONDS):
                await self._await_status_change(image_id, "uploading", call)

    async def _await_status_change(self, image_id: str, status: str, call: CallContext) -> None:
        delay, longest = STAGE_POLL_SECONDS
        while (await self._glance.show_image(image_id, call)).get("status") == status:
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)


def _not_queued(image_id: str, status: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "IMAGE_NOT_QUEUED",
        f"the image is {status}: only a queued image can take staged data",
        {"image_id": image_id},
    )


async def _record_made(creating: asyncio.Future[JsonObject], chosen_here: bool) -> bool:
    """Whether the create left a record to remove, once it has run to its end."""
    try:
        # Shielded: stopping this removal (Janitor.close) must not cut the create off mid-flight.
        await asyncio.shield(creating)
    except GatewayError as error:
        # An answer from Glance means no record was made (409 even means the id is somebody else's). A broken
        # or timed-out exchange may have made one: look for it only under an id the gateway chose, which no
        # one else can hold; a record under a client's id keeps its upload mark for the sweep.
        answered = "glance_status" in error.metadata and not error.metadata["glance_status"].startswith("5")
        return not answered and chosen_here
    except asyncio.CancelledError:
        if not creating.cancelled():
            raise  # this removal was stopped, not the create
        return chosen_here
    except Exception:
        return chosen_here
    return True
