"""The layer's errors. grpc errors become these once, in the transport; servers turn them into status codes.

ResilienceError            code: grpc.StatusCode to answer with, downstream: which owner, cause: why, as a value
 ├── CircuitOpen           UNAVAILABLE; the breaker of every usable replica is open, no call was sent
 ├── NoReplicas            UNAVAILABLE; the downstream has no replica (its DNS name resolves to no address)
 ├── BulkheadFull          RESOURCE_EXHAUSTED; too many calls in flight to this downstream
 ├── Throttled             RESOURCE_EXHAUSTED; the adaptive throttle refused the attempt here, nothing was sent
 ├── DeadlineExceeded      DEADLINE_EXCEEDED; the deadline passed, on the wire or before a call was sent
 │    └── LocalDeadline    the time ran out in this process (the event loop behind), not at the owner
 └── StatusError           the owner answered with a non-OK status (NOT_FOUND, UNAVAILABLE, ...)
      └── Overloaded       RESOURCE_EXHAUSTED with the OVERLOADED_METADATA trailer: the owner shed the call

Facts stay typed: `cause`, `code`, `attempts`, `replica` are values that policies, metric labels and clients
branch on. Words are made from them in one place, `str(error)` ("inventory: deadline exceeded at
127.0.0.1:50053 after 2 attempts"), for the status message a server answers with and for a person.

`origin` is set when the owner answered with a failure that began further down (it said so in the
`ORIGIN_METADATA` trailer): the owner is healthy, one of its own dependencies is not. See resilience.outcome.
"""

from __future__ import annotations

import enum

import grpc

ORIGIN_METADATA = "resilience-failure-origin"
"""Trailing metadata a server adds when it answers with a failure of one of its own downstream calls: the name
of the service where the failure began. Its callers then know the server itself is healthy."""


class Cause(enum.Enum):
    """Why a call produced no answer, in a word: what a metric label or a client branches on."""

    CIRCUIT_OPEN = "circuit_open"
    """The layer refused: the breaker of every usable replica is open."""
    BULKHEAD_FULL = "bulkhead_full"
    """The layer refused: too many calls in flight to the downstream."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """No answer within the deadline (on the wire, or none left to send with)."""
    UNAVAILABLE = "unavailable"
    """The owner could not be reached, or said it cannot serve now (UNAVAILABLE)."""
    OWNER_FAILED = "owner_failed"
    """The owner answered with a failure of its own (INTERNAL, UNKNOWN, DATA_LOSS, RESOURCE_EXHAUSTED)."""
    NOT_FOUND = "not_found"
    """The owner answered that the entity does not exist."""
    REFUSED = "refused"
    """The owner answered "no" to the request itself (INVALID_ARGUMENT, FAILED_PRECONDITION, ...)."""
    OVERLOADED = "overloaded"
    """The owner shed the call to stay within what it can answer in time (it said so in a trailer)."""
    THROTTLED = "throttled"
    """The caller's own throttle refused the call, because the owner has been shedding; nothing was sent."""


_CAUSES = {
    grpc.StatusCode.UNAVAILABLE: Cause.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Cause.DEADLINE_EXCEEDED,
    grpc.StatusCode.NOT_FOUND: Cause.NOT_FOUND,
    grpc.StatusCode.INTERNAL: Cause.OWNER_FAILED,
    grpc.StatusCode.UNKNOWN: Cause.OWNER_FAILED,
    grpc.StatusCode.DATA_LOSS: Cause.OWNER_FAILED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Cause.OWNER_FAILED,
}


class ResilienceError(Exception):
    """A call through the layer did not produce an answer.

    `detail` says what happened in words of its own (without the downstream or the attempts); `attempts` is
    how many attempts the call made (set when it leaves the layer); `str()` puts them together once.
    """

    cause: Cause = Cause.OWNER_FAILED

    def __init__(self, code: grpc.StatusCode, downstream: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.downstream = downstream
        self.detail = detail
        self.attempts = 1
        self.origin: str | None = None  # set by the transport from the ORIGIN_METADATA trailer

    @property
    def reason(self) -> str:
        """What happened and how hard the layer tried, without the downstream: "deadline exceeded after 2 attempts"."""
        return self.detail if self.attempts <= 1 else f"{self.detail} after {self.attempts} attempts"

    def __str__(self) -> str:
        return f"{self.downstream}: {self.reason}"

    def origin_metadata(self) -> tuple[tuple[str, str], ...]:
        """The trailer a server answering with this error adds, naming where the failure began."""
        return ((ORIGIN_METADATA, self.origin or self.downstream),)


class CircuitOpen(ResilienceError):
    """The circuit breaker refused the call; nothing was sent."""

    cause = Cause.CIRCUIT_OPEN

    def __init__(self, downstream: str, replica: str | None = None) -> None:
        where = f" ({replica})" if replica else ""
        super().__init__(grpc.StatusCode.UNAVAILABLE, downstream, f"circuit open{where}")
        self.replica = replica


class NoReplicas(ResilienceError):
    """The downstream has no replica to send to (its name resolves to no address, or could not be resolved yet);
    nothing was sent. The detail names the name: "dns:///catalog:50052 resolves to no address"."""

    cause = Cause.UNAVAILABLE

    def __init__(self, downstream: str, detail: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, downstream, detail)


class BulkheadFull(ResilienceError):
    """The downstream's concurrency limit stayed full for longer than the bulkhead's wait; nothing was sent."""

    cause = Cause.BULKHEAD_FULL

    def __init__(self, downstream: str, limit: int) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, downstream, f"bulkhead full ({limit} calls in flight)")
        self.limit = limit


class DeadlineExceeded(ResilienceError):
    """The deadline passed. `sent` is False when the layer gave up before anything went on the wire."""

    cause = Cause.DEADLINE_EXCEEDED

    def __init__(self, downstream: str, reason: str = "deadline exceeded", *, sent: bool = True) -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, downstream, reason)
        self.sent = sent


class StatusError(ResilienceError):
    """The owner (or grpc on its behalf) answered with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, downstream: str, details: str, replica: str | None = None) -> None:
        # The detail keeps the code (it labels stale and missing parts, where nothing else shows the code).
        super().__init__(code, downstream, f"{code.name}: {details}" if details else code.name)
        self.details = details
        """The owner's own message."""
        self.replica = replica
        self.cause = _CAUSES.get(code, Cause.REFUSED)


OVERLOADED_METADATA = "resilience-overloaded"
"""Trailing metadata (value "1") a server adds to a RESOURCE_EXHAUSTED that refuses a call because it is
overloaded. Its callers then throttle themselves instead of counting the refusal against the server's health."""

REFUSED_METADATA = "resilience-refused"
"""Trailing metadata on every refusal at arrival, naming why ("limit" or "deadline"): the request was not
started, so nothing of it happened and nothing of it needs undoing. A caller reads "deadline" as time that ran
out before the owner could start: nobody's failure."""


class Throttled(ResilienceError):
    """The adaptive throttle refused the attempt locally, because the owner has been refusing; nothing was sent.

    RESOURCE_EXHAUSTED, as the owner's own refusal would have been: a caller above must not retry it (gRPC
    clients retry UNAVAILABLE), and a server relaying it says where it began (resilience.outcome: DEPENDENCY).
    """

    cause = Cause.THROTTLED

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

    def __init__(self, code: grpc.StatusCode, downstream: str, details: str, replica: str | None = None) -> None:
        super().__init__(code, downstream, details, replica)
        self.cause = Cause.OVERLOADED


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
