"""The layer's errors. grpc errors become these once, in the transport; servers turn them into status codes.

ResilienceError            code: grpc.StatusCode to answer with, downstream: which owner, reason: for a person
 ├── CircuitOpen           UNAVAILABLE; the breaker of every usable replica is open, no call was sent
 ├── BulkheadFull          RESOURCE_EXHAUSTED; too many calls in flight to this downstream
 ├── DeadlineExceeded      DEADLINE_EXCEEDED; the deadline passed, on the wire or before a call was sent
 └── StatusError           the owner answered with a non-OK status (NOT_FOUND, UNAVAILABLE, ...)

`origin` is set when the owner answered with a failure that began further down (it said so in the
`ORIGIN_METADATA` trailer): the owner is healthy, one of its own dependencies is not. See resilience.outcome.
"""

from __future__ import annotations

import grpc

ORIGIN_METADATA = "resilience-failure-origin"
"""Trailing metadata a server adds when it answers with a failure of one of its own downstream calls: the name
of the service where the failure began. Its callers then know the server itself is healthy."""


class ResilienceError(Exception):
    """A call through the layer did not produce an answer."""

    def __init__(self, code: grpc.StatusCode, downstream: str, reason: str) -> None:
        super().__init__(f"{downstream}: {reason}")
        self.code = code
        self.downstream = downstream
        self.reason = reason
        self.origin: str | None = None  # set by the transport from the ORIGIN_METADATA trailer

    def origin_metadata(self) -> tuple[tuple[str, str], ...]:
        """The trailer a server answering with this error adds, naming where the failure began."""
        return ((ORIGIN_METADATA, self.origin or self.downstream),)


class CircuitOpen(ResilienceError):
    """The circuit breaker refused the call; nothing was sent."""

    def __init__(self, downstream: str, replica: str | None = None) -> None:
        where = f" ({replica})" if replica else ""
        super().__init__(grpc.StatusCode.UNAVAILABLE, downstream, f"circuit open{where}")
        self.replica = replica


class BulkheadFull(ResilienceError):
    """The downstream's concurrency limit stayed full for longer than the bulkhead's wait; nothing was sent."""

    def __init__(self, downstream: str, limit: int) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, downstream, f"bulkhead full ({limit} calls in flight)")
        self.limit = limit


class DeadlineExceeded(ResilienceError):
    """The deadline passed. `sent` is False when the layer gave up before anything went on the wire."""

    def __init__(self, downstream: str, reason: str = "deadline exceeded", *, sent: bool = True) -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, downstream, reason)
        self.sent = sent


class StatusError(ResilienceError):
    """The owner (or grpc on its behalf) answered with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, downstream: str, details: str, replica: str | None = None) -> None:
        reason = f"{code.name}: {details}" if details else code.name
        super().__init__(code, downstream, reason)
        # The reason keeps the code (it labels stale and missing parts); the message a server answers with
        # does not, because the status it travels in already carries the code.
        self.args = (f"{downstream}: {details or code.name}",)
        self.details = details
        self.replica = replica


# Overload and gray failure (issue 13, client side). Where these sit in the tree above:
#   ResilienceError
#    ├── Throttled         RESOURCE_EXHAUSTED; the adaptive throttle refused the attempt here, nothing was sent
#    ├── DeadlineExceeded
#    │    └── LocalDeadline  DEADLINE_EXCEEDED, but the time ran out in this process, not at the owner
#    └── StatusError
#         └── Overloaded   RESOURCE_EXHAUSTED with the OVERLOADED_METADATA trailer: the owner refused, to shed load

OVERLOADED_METADATA = "resilience-overloaded"
"""Trailing metadata (value "1") a server adds to a RESOURCE_EXHAUSTED that refuses a call because it is
overloaded. Its callers then throttle themselves instead of counting the refusal against the server's health."""


class Throttled(ResilienceError):
    """The adaptive throttle refused the attempt locally, because the owner has been refusing; nothing was sent.

    RESOURCE_EXHAUSTED, as the owner's own refusal would have been: a caller above must not retry it (gRPC
    clients retry UNAVAILABLE), and a server relaying it says where it began (resilience.outcome: DEPENDENCY).
    """

    def __init__(self, downstream: str, probability: float) -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED, downstream,
            f"throttled here: the owner has been refusing calls (rejecting {probability:.0%} of them)",
        )
        self.probability = probability


class Overloaded(StatusError):
    """The owner refused the attempt because it is overloaded (RESOURCE_EXHAUSTED with OVERLOADED_METADATA).

    Not a sign of a sick owner: it feeds the caller's throttle, never its breaker.
    """


class LocalDeadline(DeadlineExceeded):
    """The attempt's deadline passed, but the time went in this process: the event loop was running behind, or
    the slice left by the caller's own queueing was too short to blame anyone. Not the owner's failure.

    `slice` is the attempt's time in seconds, `lag` how long the event loop was behind during it, `fair` the
    time the owner would have needed to have (with the loop keeping up) for the timeout to count as its own.
    """

    def __init__(self, downstream: str, replica: str, slice: float, lag: float, fair: float) -> None:
        super().__init__(
            downstream,
            f"deadline exceeded at {replica}, but the time went here: {slice * 1e3:.1f} ms slice, event loop "
            f"behind for {lag * 1e3:.1f} ms of it (the owner is blamed only with {fair * 1e3:.1f} ms clear)",
            sent=True,
        )
        self.replica = replica
        self.slice = slice
        self.lag = lag
        self.fair = fair
