"""Interoperable import: the ImportImage request as Glance's import body, and Glance's image JSON as import
progress (WatchImageImportResponse).

How Glance 33 shows an import on the image (glance/api/v2/images.py import_image, async_/flows/):
* `os_glance_import_task`: the import's lock, set before the POST .../import answers 202 and dropped when the
  task has ended, after every other change (success or failure). It is the one field that says an import is
  running from the very first moment: status and the store lists change only once the task thread runs.
* `os_glance_importing_to_stores`: the stores still to do, comma-separated; each store leaves it when done.
* `os_glance_failed_import`: the stores that failed, comma-separated. A new import clears only its own
  stores from it, so a store that failed earlier stays listed until an import into it succeeds.
* status: "importing" while a glance-direct or web-download import runs ("queued" or "uploading" until the
  task thread starts), then "active". A failed web-download goes back to "queued"; a failed glance-direct
  stays "importing" for good, its staged data kept (measured: a qcow2 image staged with raw data; Glance
  reverts the status only from a later step of the flow). copy-image leaves an active image active.
So the lock alone says "in progress": once it is gone, any store still listed, or a status left at
"importing", is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import validation
from gateway.convert.image import JsonObject, image_to_proto
from gateway.errors import invalid_argument
from generated.glance.gateway.v1 import image_service_pb2 as pb

METHOD_NAMES: dict[pb.ImportMethod.ValueType, str] = {
    pb.IMPORT_METHOD_GLANCE_DIRECT: "glance-direct",
    pb.IMPORT_METHOD_WEB_DOWNLOAD: "web-download",
    pb.IMPORT_METHOD_COPY_IMAGE: "copy-image",
}
LOCK_KEY = "os_glance_import_task"
IMPORTING_KEY = "os_glance_importing_to_stores"
FAILED_KEY = "os_glance_failed_import"


def import_body(request: pb.ImportImageRequest) -> JsonObject:
    """The POST /v2/images/{id}/import body for a request, after checking every field."""
    if request.method == pb.IMPORT_METHOD_UNSPECIFIED:
        raise invalid_argument("MISSING_IMPORT_METHOD", "method is required")
    if request.method not in METHOD_NAMES:
        raise invalid_argument("INVALID_IMPORT_METHOD", f"unknown method value {request.method}")
    method: JsonObject = {"name": METHOD_NAMES[request.method]}
    if request.method == pb.IMPORT_METHOD_WEB_DOWNLOAD:
        method["uri"] = validation.import_uri(request.uri)
    elif request.uri:
        raise invalid_argument("UNEXPECTED_URI", "uri is for WEB_DOWNLOAD only")
    body: JsonObject = {"method": method}
    # dict.fromkeys: duplicates dropped, order kept (Glance would import into a store twice).
    stores = list(dict.fromkeys(validation.store_name(store) for store in request.stores))
    if request.all_stores and stores:
        # Glance refuses both together too (400), once the image has been looked up.
        raise invalid_argument("CONFLICTING_STORES", "give either stores or all_stores, not both")
    if request.all_stores:
        body["all_stores"] = True
    elif stores:
        body["stores"] = stores
    elif request.method == pb.IMPORT_METHOD_COPY_IMAGE:
        # Glance would pick its default store, which holds the data of most active images already.
        raise invalid_argument("MISSING_STORES", "COPY_IMAGE needs the stores to copy to, or all_stores")
    if request.HasField("all_stores_must_succeed"):
        body["all_stores_must_succeed"] = request.all_stores_must_succeed
    return body


@dataclass(frozen=True)
class ImportProgress:
    """Where an image's import stands, read from its JSON (the fields in the module's docstring)."""

    status: str
    importing: tuple[str, ...]
    failed: tuple[str, ...]
    locked: bool  # an import task holds the image

    @property
    def state(self) -> pb.ImportState.ValueType:
        if self.locked:
            return pb.IMPORT_STATE_IN_PROGRESS
        # No task holds the image any more: a store still listed as importing was never reached.
        if self.failed or self.importing or self.status in ("importing", "killed"):
            return pb.IMPORT_STATE_FAILED
        if self.status == "active":
            return pb.IMPORT_STATE_SUCCEEDED
        # Never imported (queued), or staged and not imported yet (uploading): there is nothing to follow.
        return pb.IMPORT_STATE_UNSPECIFIED

    @property
    def finished(self) -> bool:
        return self.state != pb.IMPORT_STATE_IN_PROGRESS


def import_progress(body: JsonObject) -> ImportProgress:
    return ImportProgress(
        status=str(body.get("status") or ""),
        importing=store_list(body.get(IMPORTING_KEY)),
        failed=store_list(body.get(FAILED_KEY)),
        locked=bool(body.get(LOCK_KEY)),
    )


def store_list(value: object) -> tuple[str, ...]:
    """One of Glance's comma-separated store lists ("" or absent when empty)."""
    if not isinstance(value, str):
        return ()
    return tuple(store for store in (part.strip() for part in value.split(",")) if store)


def watch_response(
    body: JsonObject, glance_base: str, progress: ImportProgress
) -> pb.WatchImageImportResponse:
    return pb.WatchImageImportResponse(
        image=image_to_proto(body, glance_base),
        state=progress.state,
        importing_to_stores=progress.importing,
        failed_stores=progress.failed,
    )
