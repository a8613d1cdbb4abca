"""Admission of data streams: at most `max_streams` data streams (GetImage, AddImage, StageImageData) at once.

A stream beyond the limit is refused at once with RESOURCE_EXHAUSTED (TOO_MANY_STREAMS), never queued: a
queued AddImage would already hold up to its HTTP/2 receive window of data in the gateway's memory, and a
queued GetImage a client waiting on nothing it can see. Refusing keeps the memory of data in flight bounded
by the limit and tells the client to back off.
"""

from __future__ import annotations

from types import TracebackType

from gateway import metrics
from gateway.errors import Failure, from_outcome


class StreamLimiter:
    """`async with limiter.admit():` around a stream's work; raises TOO_MANY_STREAMS when full.

    The count changes only between awaits on the one event loop, so no lock is needed.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the stream limit must be at least 1")
        self.limit = limit
        self.active = 0

    def admit(self) -> Admission:
        return Admission(self)


class Admission:
    """One stream's place under the limit, held from `__aenter__` to `__aexit__` (no finalizer needed)."""

    def __init__(self, limiter: StreamLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        limiter = self._limiter
        if limiter.active >= limiter.limit:
            raise from_outcome(
                Failure.TOO_MANY_STREAMS,
                None,
                f"the gateway is serving its limit of {limiter.limit} data streams (GetImage, AddImage, "
                "StageImageData); "
                "retry with backoff, or use another replica",
            )
        limiter.active += 1
        metrics.STREAMS_IN_FLIGHT.inc()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Only reached when __aenter__ took the place.
        self._limiter.active -= 1
        metrics.STREAMS_IN_FLIGHT.dec()
