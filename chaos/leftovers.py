"""Which image records a scenario left in Glance, asked straight from Glance's REST API (admin, noauth).

Glance's listing hides some records by default (hidden images, and `deleted`-status ones), so the census
merges several listings (default, `os_hidden=true`, `status=deleted`, each with `visibility=all`), keeps
the images whose name starts with the scenario's unique prefix, and adds a GET /v2/images/<id> of every id
the clients saw. `Census` is the pure part: the tests check it without a Glance.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.glance_rest import force_delete as force_delete
from harness.glance_rest import glance_image as glance_image
from harness.glance_rest import http as http

JsonObject = dict[str, Any]
# Loopback only: never through a proxy from the environment.
# Glance hides these unless asked; each is listed on top of the default listing.
STUCK_PATIENCE = 10.0
EXTRA_LISTINGS: tuple[dict[str, str], ...] = (
    {"os_hidden": "true"},
    {"status": "deleted"},
    {"status": "deleted", "os_hidden": "true"},
)


@dataclass
class Census:
    """Image records found for one scenario, by id; merged from listings and single GETs."""

    prefix: str
    images: dict[str, JsonObject] = field(default_factory=dict)
    waited_s: float = 0.0  # how long wait_for_none_left polled before this census

    def add_listing(self, listing: Iterable[JsonObject]) -> None:
        for image in listing:
            if str(image.get("name") or "").startswith(self.prefix):
                self.images[str(image["id"])] = image

    def add_lookup(self, image_id: str, image: JsonObject | None) -> None:
        """A GET of an id a client saw: counted whatever its name (None: Glance has no such record)."""
        if image is not None:
            self.images[image_id] = image

    def discard(self, image_ids: Iterable[str]) -> None:
        """Records the scenario means to keep (a reservation, the images it seeded) are not leftovers."""
        for image_id in image_ids:
            self.images.pop(image_id, None)

    def only_stuck(self) -> bool:
        """Everything left is in `deleted` status: records Glance's API can no longer remove."""
        return bool(self.images) and set(self.by_status()) == {"deleted"}

    @property
    def count(self) -> int:
        return len(self.images)

    def by_status(self) -> Counter[str]:
        return Counter(str(image.get("status") or "unknown") for image in self.images.values())

    def text(self) -> str:
        if not self.images:
            return "0 left"
        statuses = ", ".join(f"{status} {n}" for status, n in sorted(self.by_status().items()))
        return f"{self.count} left ({statuses})"

    def waited_text(self, took: float | None) -> str:
        """What the wait came to: "(0 after 1.2 s)", or how long it still found something left, and why."""
        if took is not None:
            return f"(0 after {took:.1f} s)"
        stuck = " (all stuck as `deleted`: Glance's API cannot remove them)" if self.only_stuck() else ""
        return f"after {self.waited_s:.0f} s{stuck}"


# -- Glance over plain HTTP ---------------------------------------------------------------


def glance_list_all(glance_url: str, **params: str) -> list[JsonObject]:
    """Every page of GET /v2/images with these filters."""
    found: list[JsonObject] = []
    marker = ""
    while True:
        query = {"limit": "1000", "visibility": "all", **params}
        if marker:
            query["marker"] = marker
        status, raw = http("GET", f"{glance_url}/v2/images?{urllib.parse.urlencode(query)}")
        if status != 200:
            raise RuntimeError(f"list images {query}: {status} {raw[:200]!r}")
        page: list[JsonObject] = json.loads(raw)["images"]
        found.extend(page)
        if len(page) < 1000:
            return found
        marker = str(page[-1]["id"])


def census(glance_url: str, prefix: str, seen_ids: Iterable[str] = (), keep: Iterable[str] = ()) -> Census:
    result = Census(prefix)
    result.add_listing(glance_list_all(glance_url))
    for params in EXTRA_LISTINGS:
        result.add_listing(glance_list_all(glance_url, **params))
    for image_id in seen_ids:
        result.add_lookup(image_id, glance_image(glance_url, image_id))
    result.discard(keep)
    return result


def wait_for_none_left(
    glance_url: str, prefix: str, seen_ids: Iterable[str], timeout: float, keep: Iterable[str] = ()
) -> tuple[Census, float | None]:
    """Polls the census until nothing is left: the last census and the seconds it took (None: never).

    Gives up early once everything left has been stuck as `deleted` for STUCK_PATIENCE seconds: Glance's API
    cannot remove such a record (DELETE answers 400), so no clean-up will ever get it to 0.
    """
    ids, kept = list(seen_ids), list(keep)
    started = time.monotonic()
    stuck_since: float | None = None
    while True:
        found = census(glance_url, prefix, ids, kept)
        elapsed = found.waited_s = time.monotonic() - started
        if found.count == 0:
            return found, elapsed
        if not found.only_stuck():
            stuck_since = None
        elif stuck_since is None:
            stuck_since = elapsed
        if elapsed >= timeout or (stuck_since is not None and elapsed - stuck_since >= STUCK_PATIENCE):
            return found, None
        time.sleep(1.0)
