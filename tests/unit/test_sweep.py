"""The sweep (gateway/sweep.py) against a small in-memory Glance that honours the listing's filters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway import cleanup, sweep, upload_marker
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.glance_client import GlanceClient, JsonObject
from gateway.sweep import Sweep

AGE = 3600.0
MARK = {upload_marker.KEY: upload_marker.VALUE}
# Listing parameters that are not property filters.
_LIST_PARAMS = {"visibility", "os_hidden", "limit", "marker"}


def answer(status: int, message: str = "") -> httpx.Response:
    return httpx.Response(
        status, json={"message": message or f"fake Glance says {status}", "code": str(status)}
    )


def stamp(seconds_ago: float, *, zulu: bool = True) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    text = moment.replace(microsecond=0, tzinfo=None).isoformat()
    return text + "Z" if zulu else text


class FakeGlance:
    """Images by id; a listing honours visibility, os_hidden, property filters, limit and marker as Glance
    does (newest first; community images only for visibility=all/community; hidden ones only for
    os_hidden=true); every request recorded; statuses answered on demand."""

    def __init__(self) -> None:
        self.images: dict[str, JsonObject] = {}
        self.requests: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.tokens: list[str | None] = []  # each request's X-Auth-Token
        self.failures: dict[str, list[int]] = defaultdict(list)
        self._serial = 0

    def client(self) -> GlanceClient:
        return GlanceClient(
            Settings(glance_url="http://glance.test"), transport=httpx.MockTransport(self.handle)
        )

    def add(
        self,
        seconds_ago: float,
        *,
        marked: bool = True,
        hidden: bool = False,
        visibility: str = "private",
        status: str = "queued",
    ) -> str:
        self._serial += 1
        image_id = f"00000000-0000-4000-8000-{self._serial:012d}"
        self.images[image_id] = {
            "id": image_id,
            "status": status,
            "visibility": visibility,
            "os_hidden": hidden,
            "created_at": stamp(seconds_ago),
            **(MARK if marked else {}),
        }
        return image_id

    def listings(self) -> list[dict[str, list[str]]]:
        found = []
        for method, path, params in self.requests:
            if method == "GET" and path == "/v2/images":
                query: dict[str, list[str]] = defaultdict(list)
                for key, value in params:
                    query[key].append(value)
                found.append(dict(query))
        return found

    def deleted(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for method, path, _ in self.requests if method == "DELETE"]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        params = list(request.url.params.multi_items())
        self.requests.append((method, path, params))
        self.tokens.append(request.headers.get("X-Auth-Token"))
        if self.failures[method]:
            return answer(self.failures[method].pop(0))
        if method == "GET" and path == "/v2/images":
            return self._list(params)
        image = self.images.get(path.rsplit("/", 1)[-1])
        if image is None:
            return answer(404)
        if method == "GET":
            return httpx.Response(200, json=image)
        assert method == "DELETE", f"the sweep only lists, reads and deletes, not {method}"
        del self.images[image["id"]]
        return httpx.Response(204)

    def _list(self, params: list[tuple[str, str]]) -> httpx.Response:
        query = dict(params)
        assert len(query) == len(params), f"a parameter given twice: {params}"
        visibility = query.get("visibility")
        hidden = query.get("os_hidden", "false") == "true"
        wanted = {key: value for key, value in query.items() if key not in _LIST_PARAMS}
        matching = [
            image
            for image in sorted(
                self.images.values(), key=lambda image: (image.get("created_at", ""), image["id"])
            )[::-1]
            if image["os_hidden"] == hidden
            and (
                visibility in ("all", image["visibility"])
                or (visibility is None and image["visibility"] != "community")
            )
            and all(_matches(image.get(key), value) for key, value in wanted.items())
        ]
        if "marker" in query:
            ids = [image["id"] for image in matching]
            if query["marker"] not in ids:
                return answer(400, "marker not found")
            matching = matching[ids.index(query["marker"]) + 1 :]
        limit = int(query.get("limit", "25"))
        return httpx.Response(200, json={"images": matching[:limit]})


def _matches(actual: object, wanted: str) -> bool:
    """Glance's list filters: equality, or `in:a,b` for one of several values."""
    if wanted.startswith("in:"):
        return actual in wanted[3:].split(",")
    return actual == wanted


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cleanup, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(cleanup, "MAX_DELAY", 0.02)
    yield


def sweep_once(glance: FakeGlance, age: float = AGE, token_file: Path | None = None) -> int:
    async def run() -> int:
        async with glance.client() as client, Janitor(client) as janitor:
            sweeper = Sweep(
                client, janitor, age, interval=0, token_file=str(token_file) if token_file else None
            )
            return await sweeper.sweep_once()
        # Leaving the Janitor's block lets the removals it started end.

    return asyncio.run(run())


def test_only_marked_records_older_than_the_age_are_removed() -> None:
    glance = FakeGlance()
    stale = {
        glance.add(AGE + 60),
        glance.add(AGE * 10, hidden=True),
        glance.add(AGE + 60, visibility="community"),
        glance.add(AGE + 60, visibility="public", status="saving"),
    }
    kept = {
        glance.add(AGE - 60),  # an upload that may still be running
        glance.add(60, hidden=True),
        glance.add(AGE * 10, marked=False),  # never the sweep's business, however old
        glance.add(AGE * 10, marked=False, hidden=True, visibility="community"),
    }
    # A marked image that got its data is a finished upload, however old.
    kept.add(glance.add(AGE * 10, status="active"))
    kept.add(glance.add(AGE * 10, status="deactivated", hidden=True))
    other_value = glance.add(AGE * 10, marked=False)
    glance.images[other_value][upload_marker.KEY] = "something else"
    kept.add(other_value)
    assert sweep_once(glance) == len(stale)
    assert set(glance.images) == kept
    assert sorted(glance.deleted()) == sorted(stale)


def test_the_listing_asks_for_marked_records_of_every_visibility_hidden_or_not() -> None:
    glance = FakeGlance()
    sweep_once(glance)
    assert glance.listings() == [
        {
            upload_marker.KEY: [upload_marker.VALUE],
            "status": ["in:queued,saving"],
            "visibility": ["all"],
            "os_hidden": [hidden],
            "limit": [str(sweep.PAGE)],
        }
        for hidden in ("false", "true")
    ]
    assert all(method == "GET" for method, _, _ in glance.requests)


def test_full_pages_are_followed_by_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "PAGE", 2)
    glance = FakeGlance()
    shown = [glance.add(AGE + 100 - index) for index in range(5)]
    hidden = [glance.add(AGE + 50 - index, hidden=True) for index in range(2)]
    # Unmarked records between them must not shift the pages.
    for index in range(3):
        glance.add(AGE + 75 - index, marked=False)
    assert sweep_once(glance) == 7
    listings = glance.listings()
    assert [(query["os_hidden"], query.get("marker")) for query in listings] == [
        (["false"], None),
        (["false"], [shown[3]]),  # newest first: the first page held shown[4] and shown[3]
        (["false"], [shown[1]]),
        (["true"], None),
        (["true"], [hidden[0]]),
    ]
    assert all(query["limit"] == ["2"] for query in listings)
    assert all(query[upload_marker.KEY] == [upload_marker.VALUE] for query in listings)
    assert sorted(glance.deleted()) == sorted(shown + hidden)
    assert len(glance.images) == 3


def test_records_without_a_readable_creation_time_are_left() -> None:
    glance = FakeGlance()
    stale = glance.add(AGE + 60)
    no_time = glance.add(AGE + 60)
    del glance.images[no_time]["created_at"]
    bad_time = glance.add(AGE + 60)
    glance.images[bad_time]["created_at"] = "yesterday"
    assert sweep_once(glance) == 1
    assert glance.deleted() == [stale]


def test_a_creation_time_without_zone_is_utc() -> None:
    glance = FakeGlance()
    old = glance.add(AGE + 60)
    glance.images[old]["created_at"] = stamp(AGE + 60, zulu=False)
    recent = glance.add(AGE - 60)
    glance.images[recent]["created_at"] = stamp(AGE - 60, zulu=False)
    assert sweep_once(glance) == 1
    assert set(glance.images) == {recent}


def test_a_stale_saving_record_is_deleted_without_waiting_for_it_to_settle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cleanup, "SAVING_PATIENCE", 30.0)
    glance = FakeGlance()
    image_id = glance.add(AGE + 60, status="saving")
    started = time.monotonic()
    assert sweep_once(glance) == 1
    assert glance.images == {} and time.monotonic() - started < 5
    removal = [(method, path) for method, path, _ in glance.requests if path != "/v2/images"]
    assert [method for method, _ in removal] == ["GET", "DELETE", "GET"]
    assert {path for _, path in removal} == {f"/v2/images/{image_id}"}


def test_without_a_token_file_the_sweep_sends_no_token() -> None:
    glance = FakeGlance()
    glance.add(AGE + 60)
    assert sweep_once(glance) == 1
    assert glance.tokens and set(glance.tokens) == {None}


def test_the_token_file_is_read_again_before_every_sweep(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")  # a trailing newline, as `echo` writes it
    glance = FakeGlance()
    glance.add(AGE + 60)
    assert sweep_once(glance, token_file=token_file) == 1
    assert set(glance.tokens) == {"first-token"}  # the listings and the removal
    assert len(glance.deleted()) == 1
    token_file.write_text("rotated-token")  # Keystone tokens expire: whoever rotates the file wins at once
    glance.tokens.clear()
    sweep_once(glance, token_file=token_file)
    assert glance.tokens and set(glance.tokens) == {"rotated-token"}


@pytest.mark.parametrize("content", [None, "", "bad\x00token-secret"])
def test_an_unusable_token_file_fails_the_sweep_without_a_request_or_its_content(
    tmp_path: Path, content: str | None
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    glance = FakeGlance()
    glance.add(AGE + 60)
    with pytest.raises(GatewayError) as caught:
        sweep_once(glance, token_file=token_file)
    assert caught.value.reason == "SWEEP_TOKEN_UNREADABLE"
    assert str(token_file) in caught.value.message and "secret" not in str(caught.value)
    assert glance.requests == [] and len(glance.images) == 1


def test_sweep_once_raises_a_listing_failure() -> None:
    glance = FakeGlance()
    glance.failures["GET"] = [503]
    with pytest.raises(GatewayError) as caught:
        sweep_once(glance)
    assert caught.value.reason == "GLANCE_UNAVAILABLE"


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


def test_the_background_loop_logs_a_listing_failure_and_sweeps_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> FakeGlance:
        glance = FakeGlance()
        glance.add(AGE + 60)
        glance.failures["GET"] = [500]
        async with glance.client() as client, Janitor(client) as janitor, Sweep(client, janitor, AGE, 0.02):
            await until(lambda: not glance.images)
        return glance

    with caplog.at_level(logging.WARNING, logger="gateway.sweep"):
        glance = asyncio.run(run())
    assert glance.images == {}
    assert len(glance.listings()) >= 3  # the failed one, then a sweep with both of its listings
    failures = [
        record for record in caplog.records if "sweep for unfinished uploads failed" in record.getMessage()
    ]
    assert len(failures) == 1 and "GLANCE_INTERNAL_ERROR" in failures[0].getMessage()


def test_with_no_interval_it_sweeps_once_at_start() -> None:
    async def run() -> FakeGlance:
        glance = FakeGlance()
        stale = glance.add(AGE + 60)
        async with glance.client() as client, Janitor(client) as janitor, Sweep(client, janitor, AGE, 0):
            await until(lambda: stale not in glance.images)
            glance.add(AGE + 60)  # made after the only sweep: stays
            await asyncio.sleep(0.1)
        return glance

    glance = asyncio.run(run())
    assert len(glance.listings()) == 2 and len(glance.images) == 1


def test_leaving_the_block_stops_the_loop_at_once() -> None:
    async def run() -> tuple[float, int]:
        glance = FakeGlance()
        async with glance.client() as client, Janitor(client) as janitor:
            sweeping = Sweep(client, janitor, AGE, 3600)
            async with sweeping:
                await asyncio.sleep(0.05)
            started = time.monotonic()
            listed = len(glance.listings())
            await asyncio.sleep(0.05)
            assert len(glance.listings()) == listed
            return time.monotonic() - started, listed

    seconds, listed = asyncio.run(run())
    assert listed == 2 and seconds < 1
