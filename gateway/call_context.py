"""What one gRPC call passes to Glance (token, request id, deadline), and what it learns from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

REQUEST_ID_HEADER = "x-openstack-request-id"


@dataclass
class CallContext:
    """What one gRPC call passes to Glance, and what it learns from it."""

    token: str | None = None
    request_id: str | None = None
    # time.monotonic() value of the client's deadline; None means no deadline.
    deadline: float | None = None
    # Glance's request ids, in order, for the trailing metadata and error details.
    glance_request_ids: list[str] = field(default_factory=list)

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def without_deadline(self) -> CallContext:
        """The same caller, for clean-up work that must run even after the deadline passed."""
        return CallContext(self.token, self.request_id, None, self.glance_request_ids)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["X-Auth-Token"] = self.token
        if self.request_id:
            headers["X-Openstack-Request-Id"] = self.request_id
        return headers
