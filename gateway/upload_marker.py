"""The mark an AddImage puts on the image record until its data is in, so that a sweep can find records whose
gateway died mid-upload (SIGKILL, OOM, node loss) and remove them, and never touch anything else.

A custom property on the record: Glance stores it, filters listings by it, and it costs no extra request
(it goes in the create body and comes off in the PATCH that ends the upload). Reservations (AddImage without
data) and images made any other way never carry it. The gateway hides it from callers and refuses it as a
property a caller may set or filter by.
"""

from __future__ import annotations

KEY = "glance_grpc_gateway_upload"
UNFINISHED = "unfinished"
# The JSON patch that takes the mark off once the data is in.
REMOVE: dict[str, object] = {"op": "remove", "path": f"/{KEY}"}
