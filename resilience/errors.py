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
