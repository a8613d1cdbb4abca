"""Glance's REST API straight over HTTP, for the tests and the chaos suite to look past the gateway."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

# Loopback only: never let an http_proxy from the environment sit between the caller and Glance.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

JsonObject = dict[str, Any]


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def glance_image(glance_url: str, image_id: str) -> JsonObject | None:
    """The image as Glance has it, or None once it does not exist (or was deleted)."""
    status, raw = http("GET", f"{glance_url}/v2/images/{image_id}")
    if status == 404:
        return None
    if status != 200:
        raise RuntimeError(f"GET image {image_id}: {status} {raw[:200]!r}")
    image: JsonObject = json.loads(raw)
    return image


def force_delete(glance_url: str, image_id: str, timeout: float = 10.0) -> bool:
    """Deletes an image straight in Glance, unprotecting it first if needed; True once it is gone.

    Retried for a while (Glance answers 500 while another worker still writes the same image). A record
    stuck in `deleted` status answers 400 and can never be removed through the API: False at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        status, raw = http("DELETE", f"{glance_url}/v2/images/{image_id}")
        if status in (204, 404):
            return True
        if status == 400 or time.monotonic() >= deadline:
            return False
        if status == 403 and b"protected" in raw:
            patch = json.dumps([{"op": "replace", "path": "/protected", "value": False}]).encode()
            headers = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
            http("PATCH", f"{glance_url}/v2/images/{image_id}", patch, headers)
        else:
            time.sleep(0.2)
