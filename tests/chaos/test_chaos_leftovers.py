"""Leftovers accounting: which records count as left by a scenario, and how they are reported."""

from __future__ import annotations

from chaos.env import UWSGI_REQUEST, request_shape
from chaos.leftovers import EXTRA_LISTINGS, Census


def image(image_id: str, name: str, status: str = "active") -> dict[str, object]:
    return {"id": image_id, "name": name, "status": status}


def test_only_the_scenarios_prefix_counts_from_listings() -> None:
    census = Census("chaos-s2-abc-")
    census.add_listing([image("1", "chaos-s2-abc-0", "saving"), image("2", "someone-else"), image("3", None)])  # type: ignore[arg-type]
    assert list(census.images) == ["1"]


def test_listings_and_lookups_merge_by_id() -> None:
    census = Census("p-")
    census.add_listing([image("1", "p-1", "queued")])
    census.add_listing([image("1", "p-1", "queued"), image("2", "p-2", "deleted")])  # e.g. status=deleted
    census.add_lookup("3", image("3", "renamed by junk", "killed"))  # an id a client saw, whatever its name
    census.add_lookup("4", None)  # Glance has no such record
    assert census.count == 3
    assert census.by_status() == {"queued": 1, "deleted": 1, "killed": 1}
    assert census.text() == "3 left (deleted 1, killed 1, queued 1)"


def test_kept_records_are_not_leftovers() -> None:
    census = Census("p-")
    census.add_listing([image("seed", "p-seed"), image("res", "p-reservation", "queued"), image("x", "p-x")])
    census.discard(["seed", "res"])
    assert census.text() == "1 left (active 1)"


def test_nothing_left_reads_as_zero() -> None:
    assert Census("p-").text() == "0 left"


def test_hidden_and_deleted_images_are_listed_too() -> None:
    assert {"os_hidden": "true"} in EXTRA_LISTINGS
    assert any(listing.get("status") == "deleted" for listing in EXTRA_LISTINGS)


def test_records_stuck_as_deleted_are_told_apart() -> None:
    census = Census("p-")
    census.add_listing([image("1", "p-1", "deleted"), image("2", "p-2", "deleted")])
    assert census.only_stuck()
    census.add_listing([image("3", "p-3", "saving")])
    assert not census.only_stuck()
    assert not Census("p-").only_stuck()


def test_glance_requests_are_counted_by_shape() -> None:
    line = (
        "[pid: 6143|app: 0|req: 1/1] 127.0.0.1 () {26 vars in 307 bytes} [Sat Nov 28 16:02:38 2026] PUT "
        "/v2/images/799821e2-c9f8-4f76-8d01-e069599b093f/file => generated 0 bytes in 2 msecs (HTTP/1.1 500) "
        "3 headers in 92 bytes (1 switches on core 0)"
    )
    match = UWSGI_REQUEST.search(line)
    assert match is not None
    method, path, status = match.groups()
    assert (method, request_shape(path), status) == ("PUT", "/v2/images/{id}/file", "500")
    assert request_shape("/v2/images?limit=1") == "/v2/images"
