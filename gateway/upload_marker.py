"""The mark an AddImage with data puts on the record it creates, so that a sweep can find the records of
uploads whose gateway died mid-upload (SIGKILL, OOM, node loss) and remove them, and never touch anything
else.

A custom property set in the create body: Glance stores it and filters listings by it, so it costs no request
of its own. It stays on the image after the upload (taking it off would cost a PATCH per upload, one more
write for Glance's database to serialize); the sweep looks only at marked records that never got their data
(status queued or saving), so a finished image is never swept. Reservations (AddImage without data) and
images made any other way never carry it. The gateway hides it from callers and refuses it as a property a
caller may set, change or filter by.
"""

from __future__ import annotations

KEY = "glance_grpc_gateway_upload"
VALUE = "1"
# The statuses of a marked record whose data never arrived: Glance reverts an aborted upload to queued, and
# a record stays saving if its Glance worker died too.
UNFINISHED_STATUSES = ("queued", "saving")
