"""gateway.client against the real gateway and Glance: the seed document's own examples
(seed-glance-client.rst), modernised only where Glance v2 forces it, then the same flow with AsyncClient.

What changed from the seed, and why:
- The port is the gateway's gRPC port, not Glance's 9292.
- `uri` values are Glance v2 URIs (<glance>/v2/images/<id>); the seed's /images/<id> form is accepted too.
- A typeless image is no longer possible in v2 (disk and container formats are needed before data), so the
  seed's "type" shorthand maps to the formats (machine = ami/ami).
- is_public True makes the image public, which Glance v2 allows only to admins; the test Glance runs with
  noauth, whose callers are admins. Under Keystone a non-admin gets Forbidden.
- The seed's bare `open(path)` is a binary file object (`open(path, "rb")`): image data is bytes in Python 3.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client import (
    AsyncClient,
    BadRequest,
    Client,
    Duplicate,
    InvalidState,
    NotFound,
)
from gateway.client.meta import BRIEF_KEYS
from harness.process import GatewayProcess
from localglance import GlanceServer

from .support import force_delete, unique_name

# ~1.5 MiB: more than one 1 MiB chunk either way, and not a multiple of it.
DATA = os.urandom(3 * 512 * 1024 + 321)


@pytest.fixture(scope="module")
def created(glance: GlanceServer) -> Iterator[list[str]]:
    """Ids of the images this module creates; deleted straight in Glance at the end, whatever happened."""
    ids: list[str] = []
    yield ids
    for image_id in ids:
        force_delete(glance.url, image_id)


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[Client]:
    with Client("127.0.0.1", gateway.port, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def seed_image(
    client: Client, created: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The seed's complete add_image example, with its data from a file object."""
    path = tmp_path_factory.mktemp("client") / "image.tar.gz"
    path.write_bytes(DATA)
    meta = {
        "name": unique_name("Ubuntu 10.10 5G"),
        "type": "machine",
        "is_public": True,
        "properties": {"distro": "Ubuntu 10.10"},
    }
    with open(path, "rb") as image_file:
        new_meta = client.add_image(meta, image_file)
    created.append(new_meta["id"])
    return new_meta


def test_add_image_seed_example(seed_image: dict[str, Any]) -> None:
    assert uuid.UUID(seed_image["id"])  # "Stored image. Got identifier: %s"
    assert seed_image["status"] == "active"
    assert (seed_image["disk_format"], seed_image["container_format"]) == ("ami", "ami")
    assert seed_image["is_public"] is True and seed_image["visibility"] == "public"
    assert seed_image["properties"]["distro"] == "Ubuntu 10.10"
    assert seed_image["size"] == len(DATA)
    assert seed_image["os_hash_value"] == hashlib.sha512(DATA).hexdigest()


def test_get_images_brief_has_the_uri(
    client: Client, seed_image: dict[str, Any], glance: GlanceServer
) -> None:
    # The seed lists every image; page_size 2 makes the iterator cross pages on the way.
    images = {image["id"]: image for image in client.get_images(page_size=2)}
    brief = images[seed_image["id"]]
    assert tuple(brief) == BRIEF_KEYS
    assert brief["uri"] == f"{glance.url}/v2/images/{seed_image['id']}"
    assert (brief["name"], brief["status"], brief["size"]) == (seed_image["name"], "active", len(DATA))


def test_get_images_detailed(client: Client, seed_image: dict[str, Any]) -> None:
    [detailed] = list(client.get_images_detailed(name=seed_image["name"]))
    assert detailed["id"] == seed_image["id"]
    assert detailed["properties"]["distro"] == "Ubuntu 10.10"
    assert detailed["visibility"] == "public"


def test_get_image_meta_by_listed_uri(client: Client, seed_image: dict[str, Any]) -> None:
    [listed] = list(client.get_images(name=seed_image["name"]))
    meta = client.get_image_meta(listed["uri"])
    assert meta["id"] == seed_image["id"]
    assert meta["properties"] == {"distro": "Ubuntu 10.10"}
    assert client.get_image_meta(seed_image["id"])["checksum"] == hashlib.md5(DATA).hexdigest()


@pytest.mark.parametrize("verify", ["gateway", "client"])
def test_get_image_to_a_file(client: Client, seed_image: dict[str, Any], tmp_path: Path, verify: Any) -> None:
    [listed] = list(client.get_images(name=seed_image["name"]))
    meta, image_file = client.get_image(listed["uri"], verify=verify)
    assert meta["id"] == seed_image["id"]
    path = tmp_path / "some_local_file"
    with open(path, "wb") as f:
        for chunk in image_file:
            f.write(chunk)
    assert path.read_bytes() == DATA


def test_duplicate_id(client: Client, created: list[str]) -> None:
    image_id = str(uuid.uuid4())
    created.append(image_id)
    first = client.add_image({"name": unique_name("dup"), "id": image_id})
    assert first["status"] == "queued"  # no data: a reserved slot, as the seed describes
    with pytest.raises(Duplicate) as caught:
        client.add_image({"name": unique_name("dup"), "id": image_id})
    assert caught.value.reason  # the gateway's ErrorInfo reason comes through


def test_unknown_store_is_bad_request(client: Client, created: list[str]) -> None:
    image_id = str(uuid.uuid4())
    created.append(image_id)
    with pytest.raises(BadRequest):
        client.add_image({"name": unique_name(), "id": image_id, "type": "raw", "store": "nonesuch"}, b"data")
    with pytest.raises(NotFound):
        client.get_image_meta(image_id)  # a failed add leaves no image behind


def test_size_mismatch_is_bad_request(client: Client, created: list[str]) -> None:
    image_id = str(uuid.uuid4())
    created.append(image_id)
    meta = {"name": unique_name(), "id": image_id, "type": "raw", "size": len(DATA) + 1}
    with pytest.raises(BadRequest) as caught:
        client.add_image(meta, io.BytesIO(DATA))
    assert caught.value.reason


def test_update_and_delete(client: Client, created: list[str]) -> None:
    new = client.add_image(
        {"name": unique_name(), "type": "raw", "properties": {"a": "1", "b": "2"}}, b"x" * 10
    )
    created.append(new["id"])
    updated = client.update_image(
        new["id"], {"name": "renamed", "min_ram": 64, "properties": {"a": "9", "b": None}}
    )
    assert (updated["name"], updated["min_ram"], updated["properties"]) == ("renamed", 64, {"a": "9"})
    client.add_tag(new["id"], "golden")
    assert client.get_image_meta(new["id"])["tags"] == ["golden"]
    client.delete_image(new["id"])
    with pytest.raises(NotFound) as caught:
        client.get_image_meta(new["id"])
    assert caught.value.request_id  # Glance's request id, for its logs


def test_async_client_flow(gateway: GatewayProcess, created: list[str], glance: GlanceServer) -> None:
    async def flow() -> None:
        async with AsyncClient("127.0.0.1", gateway.port, timeout=60) as client:
            meta = {
                "name": unique_name("async"),
                "type": "machine",
                "is_public": True,
                "properties": {"k": "v"},
            }
            new = await client.add_image(meta, io.BytesIO(DATA))
            created.append(new["id"])
            brief = [image async for image in client.get_images(name=meta["name"])]
            assert [image["uri"] for image in brief] == [f"{glance.url}/v2/images/{new['id']}"]
            detailed = [image async for image in client.get_images_detailed(name=meta["name"])]
            assert detailed[0]["properties"] == {"k": "v"}
            assert (await client.get_image_meta(brief[0]["uri"]))["id"] == new["id"]
            got, chunks = await client.get_image(brief[0]["uri"])
            assert got["size"] == len(DATA)
            assert b"".join([chunk async for chunk in chunks]) == DATA
            with pytest.raises(Duplicate):
                await client.add_image({"name": "again", "id": new["id"]})
            updated = await client.update_image(new["id"], {"properties": {"k": "w"}})
            assert updated["properties"] == {"k": "w"}
            await client.delete_image(new["id"])
            with pytest.raises(NotFound):
                await client.get_image_meta(new["id"])

    asyncio.run(flow())


def test_missing_image_download_is_not_found(client: Client, gateway: GatewayProcess) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound):
        client.get_image(missing)

    async def fetch() -> None:
        async with AsyncClient("127.0.0.1", gateway.port) as aclient:
            await aclient.get_image(missing)

    with pytest.raises(NotFound):
        asyncio.run(fetch())


def test_rpcs_beyond_the_seed(client: Client, created: list[str]) -> None:
    stores = client.get_stores()
    assert {store["id"] for store in stores} == {"file", "file2"}  # localglance's two file stores
    assert [store["id"] for store in stores if store["is_default"]] == ["file"]

    # Interoperable import: a queued image, staged data, glance-direct, followed to the end.
    queued = client.add_image({"name": unique_name("import"), "type": "raw"})
    created.append(queued["id"])
    staged = client.stage_image_data(queued["id"], io.BytesIO(DATA), size=len(DATA))
    assert staged["status"] == "uploading"
    client.import_image(queued["id"], "glance-direct")
    progress = list(client.watch_import(queued["id"]))
    assert progress[-1]["state"] == "succeeded"
    assert progress[-1]["image"]["status"] == "active"
    assert b"".join(client.get_image(queued["id"])[1]) == DATA
    # Its data lives in one store only: removing it from there is refused.
    with pytest.raises(InvalidState):
        client.delete_image_from_store(queued["id"], "file")

    client.deactivate_image(queued["id"])
    assert client.get_image_meta(queued["id"])["status"] == "deactivated"
    client.reactivate_image(queued["id"])
    assert client.get_image_meta(queued["id"])["status"] == "active"

    client.add_tag(queued["id"], "t1")
    client.remove_tag(queued["id"], "t1")
    with pytest.raises(NotFound):
        client.remove_tag(queued["id"], "t1")

    # Members: only a shared image has them (noauth callers are admins, so one caller plays both sides).
    with pytest.raises(InvalidState):
        client.add_member(queued["id"], "project-b")
    client.update_image(queued["id"], {"visibility": "shared"})
    member = client.add_member(queued["id"], "project-b")
    assert (member["member_id"], member["status"]) == ("project-b", "pending")
    assert [m["member_id"] for m in client.get_members(queued["id"])] == ["project-b"]
    assert client.update_member(queued["id"], "project-b", "accepted")["status"] == "accepted"
    assert client.get_member(queued["id"], "project-b")["status"] == "accepted"
    client.delete_member(queued["id"], "project-b")
    assert client.get_members(queued["id"]) == []

    usage = client.get_quota_usage()
    assert all(set(quota) == {"usage", "limit"} for quota in usage.values())
