"""AddImage: an image record and its data, made so that a failed call leaves no image behind.

The order of events, and why:
1. The spec and the first data message are read and checked before Glance sees anything.
2. The gateway picks the image id (unless the client did) and creates the record with the upload mark
   (upload_marker), which lets a sweep find it should this gateway die before the data is in. The create
   runs to its end even if the call is cancelled meanwhile: a create cancelled in flight can still be
   carried out by Glance later (it waits in uWSGI's listen queue), and only a finished exchange tells
   whether the record exists.
3. The data streams to Glance, counted and hashed; the last chunk is held back until the data has ended and
   passed every check. The end is explicit when the client sends an UploadFinish; otherwise it is the end of
   the request stream, which grpc.aio can also report for a cancelled client (best effort, see below).
4. A PATCH sets `protected` if asked (earlier, it would have blocked deleting a failed upload); the mark
   stays, and the sweep leaves marked images that have their data alone.
Any failure from step 2 on hands the record to the Janitor, which deletes it once Glance lets it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress

from gateway import call_record, convert, upload_marker, validation, wire
from gateway.call_context import CallContext
from gateway.cleanup import Janitor
from gateway.errors import GatewayError, Operation, invalid_argument
from gateway.glance_client import GlanceClient, JsonObject
from gateway.integrity import Chunk, DataCheck, upload_digests
from gateway.stall import StallWatch
from generated.glance.gateway.v1 import image_service_pb2 as pb

# AddImage's messages as wire.parse_upload_message gives them: data-only messages are views of their bytes.
UploadMessage = pb.AddImageRequest | memoryview | wire.MalformedMessage

# Without an UploadFinish, grpc.aio can end a cancelled client's request stream like a finished one and cancel
# the handler a moment later (context.cancelled() does not tell them apart); this gives that cancel time to
# land before the last chunk goes. Measured: without it about 1 cancel in 10 completed the image.
CANCEL_SETTLE_SECONDS = 0.01
# A failed call (other than a cancel) waits this long for its record to be gone before it returns its status,
# so a caller who looks right after the error finds nothing; the Janitor goes on after that if it must.
DISCARD_WAIT_SECONDS = 20.0
_PROTECT: JsonObject = {"op": "replace", "path": "/protected", "value": True}
_DIGEST_NAMES: dict[pb.DigestAlgorithm.ValueType, str] = {
    pb.DIGEST_ALGORITHM_SHA512: "sha512",
    pb.DIGEST_ALGORITHM_MD5: "md5",
}


class UploadStream:
    """The messages of one AddImage call: the spec, then data chunks, then (optionally) an UploadFinish."""

    def __init__(self, messages: AsyncIterator[UploadMessage], watch: StallWatch) -> None:
        self._messages = messages
        self._watch = watch
        self.finish: pb.UploadFinish | None = None
        self.ended = False
        self.received = 0  # bytes of data chunks so far

    @property
    def stalled(self) -> bool:
        return self._watch.stalled

    async def _next(self) -> UploadMessage | None:
        return await self._watch.guard(anext(self._messages, None))

    async def spec(self) -> pb.ImageSpec:
        first = await self._next()
        if isinstance(first, wire.MalformedMessage):
            raise first.error()
        if not isinstance(first, pb.AddImageRequest) or first.WhichOneof("content") != "spec":
            raise invalid_argument("SPEC_NOT_FIRST", "the first AddImage message must carry the image spec")
        return first.spec

    async def next_chunk(self) -> Chunk | None:
        """The next non-empty data chunk, or None once the data has ended (by a finish or the stream end)."""
        while not self.ended:
            message = await self._next()
            if message is None:
                self.ended = True
            elif isinstance(message, memoryview):
                if message:
                    self.received += len(message)
                    return message
            elif isinstance(message, wire.MalformedMessage):
                raise message.error()
            else:
                kind = message.WhichOneof("content")
                if kind == "data":
                    if message.data:
                        self.received += len(message.data)
                        return message.data
                elif kind == "finish":
                    self.finish = message.finish
                    if await self._next() is not None:
                        raise invalid_argument("FINISH_NOT_LAST", "no AddImage message may follow the finish")
                    self.ended = True
                elif kind == "spec":
                    raise invalid_argument(
                        "SPEC_NOT_FIRST", "only the first AddImage message may carry the spec"
                    )
                else:
                    raise invalid_argument(
                        "EMPTY_MESSAGE", "an AddImage message must carry data, spec or finish"
                    )
        return None


class Uploads:
    """Runs AddImage calls against one Glance, handing failed records to the Janitor."""

    def __init__(self, glance: GlanceClient, janitor: Janitor, stall_timeout: float) -> None:
        self._glance = glance
        self._janitor = janitor
        self._stall_timeout = stall_timeout

    async def add_image(self, messages: AsyncIterator[UploadMessage], call: CallContext) -> JsonObject:
        """The new image's JSON; a reservation (no data) when the stream holds only the spec."""
        message = f"the client sent nothing for {self._stall_timeout:g} s; the upload was stopped"
        async with StallWatch(self._stall_timeout, Operation.UPLOAD, message, {}) as watch:
            stream = UploadStream(messages, watch)
            try:
                image = await self._add_image(stream, call)
                call_record.note_image_id(str(image.get("id") or ""))  # a reservation's id comes from Glance
                return image
            finally:
                call_record.add_bytes(received=stream.received)  # once per call, not per chunk

    async def _add_image(self, stream: UploadStream, call: CallContext) -> JsonObject:
        spec = await stream.spec()
        body = convert.create_body(spec)
        store = validation.store_name(spec.store) if spec.store else None
        if spec.HasField("size") and spec.size < 0:
            raise invalid_argument("INVALID_SIZE", "size must not be negative")
        size = spec.size if spec.HasField("size") else None
        announced = _announced_digests(spec)
        needs_finish = spec.ends_with_finish or bool(announced)
        async with DataCheck(
            Operation.UPLOAD,
            size,
            upload_digests(spec.expected_sha512, spec.expected_md5),
            hash_algorithms=announced,
        ) as check:
            first = await stream.next_chunk()
            if first is None and needs_finish and stream.finish is None:
                raise _finish_missing()  # the stream ended before any data: nothing was created yet
            # Only a spec, with nothing said about data: a reservation.
            if first is None and stream.finish is None and size is None and not check.verifies_digest:
                return await self._glance.create_image(body, call)
            if not ("disk_format" in body and "container_format" in body):
                raise invalid_argument(
                    "MISSING_FORMAT",
                    "an image with data needs a type, or both disk_format and container_format",
                )
            if store:
                await self._require_store(store, call)
            data = _verified_body(first, stream, check, announced, needs_finish)
            return await self._create_and_upload(body, data, size, store, call, stream)

    async def _create_and_upload(
        self,
        body: JsonObject,
        data: AsyncIterator[Chunk],
        size: int | None,
        store: str | None,
        call: CallContext,
        stream: UploadStream,
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
        known = await self._glance.store_ids(call)
        if known is None or store not in known:
            raise invalid_argument(
                "UNKNOWN_STORE", f"Glance has no store {store!r} (it has: {', '.join(known or []) or 'none'})"
            )


def _announced_digests(spec: pb.ImageSpec) -> list[str]:
    names = []
    for algorithm in spec.finish_digests:
        if algorithm not in _DIGEST_NAMES:
            raise invalid_argument("INVALID_DIGEST_ALGORITHM", "finish_digests may name only SHA512 and MD5")
        names.append(_DIGEST_NAMES[algorithm])
    return names


def _finish_missing() -> GatewayError:
    return invalid_argument(
        "FINISH_MISSING",
        "the upload ended without the UploadFinish message its spec announced; no image was kept",
    )


async def _verified_body(
    first: Chunk | None, stream: UploadStream, check: DataCheck, announced: list[str], needs_finish: bool
) -> AsyncIterator[Chunk]:
    """The upload body, checked as it streams; the last chunk goes only once the data has passed every check,
    so Glance never completes an image from wrong, short or cancelled data."""
    held = first
    if held is not None:
        await check.update(held)
    while (chunk := await stream.next_chunk()) is not None:
        await check.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if stream.finish is not None:
        _expect_finish_digests(stream.finish, check, announced)
    elif needs_finish:
        raise _finish_missing()
    else:
        await asyncio.sleep(CANCEL_SETTLE_SECONDS)
    await check.finish()
    if held is not None:
        yield held


def _expect_finish_digests(finish: pb.UploadFinish, check: DataCheck, announced: list[str]) -> None:
    given = upload_digests(finish.sha512, finish.md5)
    unannounced = sorted(given.keys() - set(announced))
    if unannounced:
        raise invalid_argument(
            "FINISH_DIGEST_NOT_ANNOUNCED",
            f"the finish carries a {', '.join(unannounced)} digest not announced in ImageSpec.finish_digests",
        )
    for algo, value in given.items():
        check.expect(algo, value)
    # The contract: an announced digest comes in the finish, even when the spec also gave it up front.
    missing = sorted(set(announced) - given.keys())
    if missing:
        raise invalid_argument(
            "FINISH_DIGEST_MISSING", f"the finish message lacks the announced {', '.join(missing)} digest"
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
