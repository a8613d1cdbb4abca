"""The Janitor (gateway/cleanup.py) against a small in-memory Glance behind httpx.MockTransport."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from gateway import cleanup
from gateway.call_context import CallContext
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.glance_client import GlanceClient, JsonObject

IMAGE = "6f1c3a52-0d1b-4a8e-9d4f-2b7e5c9a1f00"
OTHER = "9e2d4b61-1c2a-4b9f-8e5a-3c8f6d0b2e11"
FIRST_DELAY = 0.01


@dataclass
class Seen:
    at: float
    method: str
    image_id: str
    headers: dict[str, str]


def answer(status: int, message: str = "") -> httpx.Response:
    return httpx.Response(
        status, json={"message": message or f"fake Glance says {status}", "code": str(status)}
    )


class FakeGlance:
    """Images by id with statuses; every request recorded; statuses answered on demand."""

    def __init__(self) -> None:
        self.images: dict[str, JsonObject] = {}
        self.requests: list[Seen] = []
        # Statuses to answer, in order, instead of carrying out a request of that method.
        self.failures: dict[str, list[int]] = defaultdict(list)
        # A request of that method waits for the event before it is carried out.
        self.holds: dict[str, asyncio.Event] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        # A "saving" image becomes "queued" after this many GETs of it (None: it stays saving).
        self.saving_for_gets: int | None = None
        # A DELETE leaves the image in status "deleted" for this many GETs before it is gone.
        self.deleted_for_gets = 0

    def client(self) -> GlanceClient:
        return GlanceClient(
            Settings(glance_url="http://glance.test"), transport=httpx.MockTransport(self.handle)
        )

    def add(self, image_id: str = IMAGE, status: str = "queued") -> None:
        self.images[image_id] = {"id": image_id, "status": status, "gets": 0}

    @property
    def methods(self) -> list[str]:
        return [seen.method for seen in self.requests]

    def times(self, method: str) -> list[float]:
        return [seen.at for seen in self.requests if seen.method == method]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        method = request.method
        image_id = request.url.path.rsplit("/", 1)[-1]
        self.requests.append(Seen(time.monotonic(), method, image_id, dict(request.headers)))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if method in self.holds:
                await self.holds[method].wait()
            if self.failures[method]:
                return answer(self.failures[method].pop(0))
            image = self.images.get(image_id)
            if image is None:
                return answer(404, f"No image found with ID {image_id}")
            if method == "GET":
                image["gets"] += 1
                if image["status"] == "saving" and self.saving_for_gets is not None:
                    if image["gets"] > self.saving_for_gets:
                        image["status"] = "queued"
                elif image["status"] == "deleted" and image["gets"] > self.deleted_for_gets:
                    del self.images[image_id]
                    return answer(404)
                return httpx.Response(200, json={"id": image_id, "status": image["status"]})
            assert method == "DELETE", f"the Janitor only reads and deletes, not {method}"
            if image["status"] == "deleted":
                return answer(404)
            if image.get("protected"):
                return answer(403, "Image 6f1c3a52 is protected and cannot be deleted.")
            if self.deleted_for_gets:
                image.update(status="deleted", gets=0)
            else:
                del self.images[image_id]
            return httpx.Response(204)
        finally:
            self.in_flight -= 1


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cleanup, "FIRST_DELAY", FIRST_DELAY)
    monkeypatch.setattr(cleanup, "MAX_DELAY", 0.04)
    monkeypatch.setattr(cleanup, "SAVING_PATIENCE", 5.0)
    yield


@dataclass
class Result:
    gone: bool
    removed: int
    given_up: int
    seconds: float


def remove(
    glance: FakeGlance,
    *,
    patience: float = 5.0,
    wait_while_saving: bool = True,
    call: CallContext | None = None,
) -> Result:
    async def run() -> Result:
        async with glance.client() as client, Janitor(client, patience=patience) as janitor:
            started = time.monotonic()
            gone = await janitor.discard(IMAGE, call or CallContext(), wait_while_saving=wait_while_saving)
            return Result(gone, janitor.removed, janitor.given_up, time.monotonic() - started)

    return asyncio.run(run())


def test_a_record_is_deleted_and_looked_for_again_until_glance_says_404() -> None:
    glance = FakeGlance()
    glance.add()
    result = remove(glance)
    assert (result.gone, result.removed, result.given_up) == (True, 1, 0)
    assert glance.methods == ["GET", "DELETE", "GET"]
    assert glance.images == {}


def test_a_saving_record_gets_time_to_settle_before_the_delete() -> None:
    glance = FakeGlance()
    glance.add(status="saving")
    glance.saving_for_gets = 3
    result = remove(glance)
    assert result.gone and glance.images == {}
    # Three looks while it was saving, the fourth found it queued: only then the DELETE.
    assert glance.methods == ["GET", "GET", "GET", "GET", "DELETE", "GET"]
    assert result.seconds < cleanup.SAVING_PATIENCE


def test_a_record_saving_past_saving_patience_is_deleted_anyway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleanup, "SAVING_PATIENCE", 0.15)
    glance = FakeGlance()
    glance.add(status="saving")
    result = remove(glance)
    assert result.gone and glance.images == {}
    (deleted_at,) = glance.times("DELETE")
    assert deleted_at - glance.requests[0].at >= 0.15
    assert glance.methods.index("DELETE") >= 3
    assert result.seconds < 2


def test_without_waiting_while_saving_a_saving_record_is_deleted_at_once() -> None:
    glance = FakeGlance()
    glance.add(status="saving")
    result = remove(glance, wait_while_saving=False)
    assert result.gone and glance.images == {}
    assert glance.methods == ["GET", "DELETE", "GET"]
    assert result.seconds < 0.5


@pytest.mark.parametrize(
    "statuses", [[500], [503, 500], [503, 409, 504, 502]], ids=["500", "503-500", "mixed"]
)
def test_retryable_delete_failures_are_retried_with_backoff(statuses: list[int]) -> None:
    glance = FakeGlance()
    glance.add()
    glance.failures["DELETE"] = list(statuses)
    result = remove(glance)
    assert (result.gone, result.removed, result.given_up) == (True, 1, 0)
    assert glance.images == {}
    deletes = glance.times("DELETE")
    assert len(deletes) == len(statuses) + 1
    # Each retry waits: FIRST_DELAY, doubling up to MAX_DELAY (0.01, 0.02, 0.04, 0.04, ...).
    expected = [min(FIRST_DELAY * 2**attempt, 0.04) for attempt in range(len(statuses))]
    gaps = [later - earlier for earlier, later in itertools.pairwise(deletes)]
    for gap, delay in zip(gaps, expected, strict=True):
        assert gap >= delay * 0.8, (gaps, expected)


def test_backoff_stops_growing_at_max_delay() -> None:
    glance = FakeGlance()
    glance.add()
    glance.failures["DELETE"] = [503] * 7
    result = remove(glance)
    assert result.gone
    # Uncapped, seven doublings from 0.01 s would sleep 1.27 s in all; capped at 0.04 s it is 0.23 s.
    assert result.seconds < 1.0


def test_a_failing_look_is_retried_too() -> None:
    glance = FakeGlance()
    glance.add()
    glance.failures["GET"] = [503, 500]
    assert remove(glance).gone
    assert glance.methods == ["GET", "GET", "GET", "DELETE", "GET"]


def test_a_record_already_gone_is_done_without_a_delete() -> None:
    glance = FakeGlance()
    result = remove(glance)
    assert (result.gone, result.removed, result.given_up) == (True, 1, 0)
    assert glance.methods == ["GET"]


def test_a_delete_answered_404_means_someone_else_removed_it() -> None:
    glance = FakeGlance()
    glance.add()
    glance.failures["DELETE"] = [404]
    result = remove(glance)
    assert result.gone
    assert glance.methods == ["GET", "DELETE"]


def test_a_record_left_deleted_for_a_while_is_waited_for() -> None:
    glance = FakeGlance()
    glance.add()
    glance.deleted_for_gets = 2
    result = remove(glance)
    assert result.gone and glance.images == {}
    # "deleted" twice (another DELETE would be refused meanwhile), then gone.
    assert glance.methods == ["GET", "DELETE", "GET", "GET", "GET"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("status", [401, 403, 400])
def test_a_failure_no_retry_can_mend_gives_up_at_once(method: str, status: int) -> None:
    glance = FakeGlance()
    glance.add()
    glance.failures[method] = [status]
    result = remove(glance)
    assert (result.gone, result.removed, result.given_up) == (False, 0, 1)
    assert glance.methods == (["GET"] if method == "GET" else ["GET", "DELETE"])
    assert IMAGE in glance.images


def test_a_protected_record_is_retried_until_the_patience_runs_out_and_stays() -> None:
    # Glance refuses to delete a protected image with a 403 that says so: FAILED_PRECONDITION, which the
    # Janitor retries (unlike a plain 403), until its patience runs out.
    glance = FakeGlance()
    glance.add()
    glance.images[IMAGE]["protected"] = True
    result = remove(glance, patience=0.2)
    assert (result.gone, result.given_up) == (False, 1)
    assert IMAGE in glance.images
    assert glance.methods.count("DELETE") >= 3


def test_patience_exhausted_gives_up() -> None:
    glance = FakeGlance()
    glance.add()
    glance.failures["DELETE"] = [503] * 1000
    result = remove(glance, patience=0.2)
    assert (result.gone, result.removed, result.given_up) == (False, 0, 1)
    assert IMAGE in glance.images
    assert 0.1 <= result.seconds < 1.0
    assert len(glance.times("DELETE")) >= 3


def test_patience_exhausted_by_a_record_stuck_deleted() -> None:
    glance = FakeGlance()
    glance.add(status="deleted")
    glance.deleted_for_gets = 10**6
    result = remove(glance, patience=0.15)
    assert (result.gone, result.given_up) == (False, 1)
    assert "DELETE" not in glance.methods


def test_removal_forwards_the_callers_identity_without_its_deadline() -> None:
    glance = FakeGlance()
    glance.add()
    expired = CallContext(token="tok", request_id="req-1", deadline=time.monotonic() - 1)
    result = remove(glance, call=expired)
    assert result.gone and glance.images == {}
    for seen in glance.requests:
        assert seen.headers["x-auth-token"] == "tok"
        assert seen.headers["x-openstack-request-id"] == "req-1"


def test_no_record_made_means_no_request_at_all() -> None:
    async def run() -> tuple[bool, int, int]:
        glance = FakeGlance()
        glance.add()

        async def not_made() -> bool:
            return False

        async with glance.client() as client, Janitor(client) as janitor:
            gone = await janitor.discard(IMAGE, CallContext(), not_made())
            assert glance.requests == [] and IMAGE in glance.images
            return gone, janitor.removed, janitor.given_up

    assert asyncio.run(run()) == (True, 0, 0)


def test_the_removal_waits_for_the_record_to_be_made() -> None:
    async def run() -> FakeGlance:
        glance = FakeGlance()
        made: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        async with glance.client() as client, Janitor(client) as janitor:
            task = janitor.discard(IMAGE, CallContext(), made)
            await asyncio.sleep(0.05)
            assert glance.requests == [] and not task.done()
            glance.add()
            made.set_result(True)
            assert await task
        return glance

    glance = asyncio.run(run())
    assert glance.methods == ["GET", "DELETE", "GET"] and glance.images == {}


def test_discarding_the_same_id_twice_gives_the_same_task() -> None:
    async def run() -> None:
        glance = FakeGlance()
        glance.add()
        glance.add(OTHER)
        glance.holds["DELETE"] = asyncio.Event()
        async with glance.client() as client, Janitor(client) as janitor:
            first = janitor.discard(IMAGE, CallContext())
            assert janitor.discard(IMAGE, CallContext()) is first
            other = janitor.discard(OTHER, CallContext())
            assert other is not first and janitor.pending == 2
            glance.holds["DELETE"].set()
            assert await first and await other
            await asyncio.sleep(0)
            assert janitor.pending == 0
            # Once done, the id may be discarded anew (a new task, a new look).
            again = janitor.discard(IMAGE, CallContext())
            assert again is not first and await again
        assert glance.methods.count("DELETE") == 2

    asyncio.run(run())


def test_cancelling_a_waiter_does_not_stop_the_removal() -> None:
    async def run() -> FakeGlance:
        glance = FakeGlance()
        glance.add()
        glance.holds["DELETE"] = asyncio.Event()
        async with glance.client() as client, Janitor(client) as janitor:
            task = janitor.discard(IMAGE, CallContext())
            waiter = asyncio.ensure_future(asyncio.wait_for(asyncio.shield(task), 0.05))
            with pytest.raises(TimeoutError):
                await waiter
            assert not task.done()
            glance.holds["DELETE"].set()
            assert await task
        return glance

    assert asyncio.run(run()).images == {}


def test_close_gives_pending_removals_their_grace() -> None:
    async def run() -> tuple[bool, float]:
        glance = FakeGlance()
        glance.add()
        glance.holds["DELETE"] = asyncio.Event()
        async with glance.client() as client:
            janitor = Janitor(client)
            task = janitor.discard(IMAGE, CallContext())
            asyncio.get_running_loop().call_later(0.05, glance.holds["DELETE"].set)
            started = time.monotonic()
            await janitor.close(grace=5.0)
            return await task, time.monotonic() - started

    gone, seconds = asyncio.run(run())
    assert gone and seconds < 2


def test_close_cancels_what_is_left_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> tuple[asyncio.Task[bool], float, int]:
        glance = FakeGlance()
        glance.add()
        glance.holds["DELETE"] = asyncio.Event()  # never set: Glance hangs
        async with glance.client() as client:
            janitor = Janitor(client)
            task = janitor.discard(IMAGE, CallContext())
            started = time.monotonic()
            await janitor.close(grace=0.1)
            seconds = time.monotonic() - started
            await asyncio.wait({task}, timeout=1.0)
            return task, seconds, janitor.pending

    with caplog.at_level(logging.WARNING, logger="gateway.cleanup"):
        task, seconds, pending = asyncio.run(run())
    assert task.cancelled()
    assert 0.1 <= seconds < 1.0
    assert pending == 0
    assert any(IMAGE in record.getMessage() and "sweep" in record.getMessage() for record in caplog.records)


def test_close_with_nothing_pending_returns_at_once() -> None:
    async def run() -> float:
        async with FakeGlance().client() as client:
            started = time.monotonic()
            await Janitor(client).close(grace=5.0)
            return time.monotonic() - started

    assert asyncio.run(run()) < 0.5


def test_removals_run_at_most_concurrency_at_once() -> None:
    async def run() -> FakeGlance:
        glance = FakeGlance()
        ids = [f"00000000-0000-4000-8000-00000000000{index}" for index in range(6)]
        for image_id in ids:
            glance.add(image_id)
        glance.holds["GET"] = asyncio.Event()
        async with glance.client() as client, Janitor(client, concurrency=2) as janitor:
            tasks = [janitor.discard(image_id, CallContext()) for image_id in ids]
            await asyncio.sleep(0.05)
            assert glance.methods == ["GET", "GET"]
            glance.holds["GET"].set()
            assert all(await asyncio.gather(*tasks))
        return glance

    glance = asyncio.run(run())
    assert glance.images == {} and glance.most_in_flight == 2
