"""Fetching one part of a view from its owner and labelling where it came from, so nothing is silently stale.

A part's outcome stays a value until the response is built: its kind (live, cached, stale, missing), why it is
not live (the owner's failure as a `ResilienceError`, or the owner leaving it out of a batch answer), the
staleness bound it was judged by and the attempts. `Part.status()` turns that into the wire's PartStatus, and
its `reason` is the one place those facts become words.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from gateway.reads import ReadMode
from pullgate.errors import ServiceError
from pullgate.gateway.v1 import gateway_pb2 as pb
from resilience import Cause, Downstream, Method, Outcome, ResilienceError, Source, classify

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class Kind(enum.Enum):
    """Where a part came from."""

    LIVE = "live"
    CACHED = "cached"
    STALE = "stale"
    MISSING = "missing"


_KINDS = {Source.LIVE: Kind.LIVE, Source.CACHED: Kind.CACHED, Source.STALE: Kind.STALE}
_SOURCES = {Kind.LIVE: pb.SOURCE_LIVE, Kind.CACHED: pb.SOURCE_CACHED, Kind.STALE: pb.SOURCE_STALE,
            Kind.MISSING: pb.SOURCE_MISSING}
_CAUSES = {
    Cause.CIRCUIT_OPEN: pb.CAUSE_CIRCUIT_OPEN,
    Cause.BULKHEAD_FULL: pb.CAUSE_BULKHEAD_FULL,
    Cause.DEADLINE_EXCEEDED: pb.CAUSE_DEADLINE_EXCEEDED,
    Cause.UNAVAILABLE: pb.CAUSE_UNAVAILABLE,
    Cause.OWNER_FAILED: pb.CAUSE_OWNER_FAILED,
    Cause.NOT_FOUND: pb.CAUSE_NOT_FOUND,
    Cause.REFUSED: pb.CAUSE_REFUSED,
    Cause.OVERLOADED: pb.CAUSE_OVERLOADED,
    Cause.THROTTLED: pb.CAUSE_THROTTLED,
}


@dataclass(frozen=True, slots=True)
class Omitted:
    """The owner answered a batch, and left this key out of it: for the owner, it does not exist."""

    downstream: str
    key: str
    cause = Cause.NOT_FOUND

    def __str__(self) -> str:
        return f"{self.downstream}: no answer for {self.key}"


Why = ResilienceError | Omitted
"""Why a part is not live."""


@dataclass(frozen=True, slots=True)
class Part(Generic[Resp]):
    """An owner's answer (None when missing) and its outcome, as values.

    `bound` is the staleness bound in seconds the part was judged by (0.0 live only, math.inf any age).
    `attempts` is how many attempts the owner call made (0 for a cache hit). `why` is set for STALE and MISSING.
    """

    value: Resp | None
    kind: Kind
    bound: float
    age: float = 0.0
    attempts: int = 1
    why: Why | None = None
    downstream: str = ""

    @property
    def reason(self) -> str:
        """Why the part is not live, in words; the only place a part's outcome becomes text."""
        if self.kind is Kind.CACHED:
            return f"{self.downstream}: cached, within {_staleness(self.bound)}"
        return "" if self.why is None else str(self.why)

    def status(self, name: str) -> pb.PartStatus:
        status = pb.PartStatus(part=name, source=_SOURCES[self.kind], reason=self.reason, attempts=self.attempts)
        status.age.FromNanoseconds(int(self.age * 1e9))
        if self.why is not None:
            status.cause = _CAUSES[self.why.cause]
        if math.isfinite(self.bound):
            status.max_staleness.FromNanoseconds(int(self.bound * 1e9))
        return status


def missing(why: Why, bound: float, attempts: int = 0) -> Part[Any]:
    """A part that is not in the response, and why."""
    return Part(None, Kind.MISSING, bound, attempts=attempts, why=why, downstream=why.downstream)


def each(batch: Part[Any], found: dict[str, Any], key: str) -> Part[Any]:
    """The part of one key in a batched answer: the batch's own outcome, or missing if the owner left it out."""
    if batch.value is not None and key not in found:
        return missing(Omitted(batch.downstream, key), batch.bound, batch.attempts)
    return batch


class ReadFailed(ServiceError):
    """A read that cannot be answered as its mode demands. The code says what kind of failure it was:
    DEADLINE_EXCEEDED when time ran out; RESOURCE_EXHAUSTED when the owner refused for load (it was overloaded, its
    bulkhead full, or this gateway throttled itself because it had been refusing), so that a caller backs off
    rather than retrying at once, as gRPC clients retry UNAVAILABLE; else UNAVAILABLE. The trailer says where the
    failure began (resilience's origin metadata), so a caller's breaker does not count it against the gateway.

    The message names the part, the owner and the owner's reason, e.g. "strong read: customer:1 could not be
    fetched live: customers: circuit open (127.0.0.1:50051)".
    """

    def __init__(self, message: str, error: ResilienceError) -> None:
        super().__init__(message)
        timed_out = error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        self.code = grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else _READ_FAILED.get(
            error.cause, grpc.StatusCode.UNAVAILABLE)
        self.cause = error

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return self.cause.origin_metadata()


_READ_FAILED = {
    Cause.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Cause.THROTTLED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Cause.BULKHEAD_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
"""A failed read's status code by its cause, when time did not run out (UNAVAILABLE for any other)."""


def _staleness(bound: float) -> str:
    return "any age" if math.isinf(bound) else f"max staleness {bound:g}s"


async def fetch(
    owner: Downstream, method: Method[Req, Resp], request: Req, mode: ReadMode, what: str, *, required: bool = False
) -> Part[Resp]:
    """Ask the owner for `what` (a part's name, for messages) within the read's staleness bound.

    When no answer can be had: a strong read fails, and so does a bounded read of a `required` part (the order
    of an order view, the customer of an overview), with ReadFailed naming the owner and its reason. Otherwise
    the part is MISSING with that reason. An owner's "no" (NOT_FOUND, ...) is its answer: for a required part it
    is the caller's error as it is; for any other part of a non-strong read, the part is missing.
    """
    bound = mode.bound(owner.config.cache.max_staleness)
    try:
        result = await owner.call(method, request, max_staleness=mode.max_staleness)
    except ResilienceError as error:
        answered_no = classify(error) is Outcome.CALLER_ERROR
        if answered_no and (required or mode.strong):
            raise
        if mode.strong:
            raise ReadFailed(f"strong read: {what} could not be fetched live: {error}", error) from None
        if required and not mode.available:
            raise ReadFailed(
                f"{mode.name} read: {what} is required and could not be had live or within "
                f"{_staleness(bound)}: {error}", error
            ) from None
        return missing(error, bound, error.attempts)
    p = result.provenance
    return Part(result.value, _KINDS[p.source], bound, p.age, 0 if p.source is Source.CACHED else p.attempts,
                p.error, owner.name)


@dataclass
class Provenance:
    """The parts of one response, in the order they were added."""

    statuses: list[pb.PartStatus] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    """The kind of entity each part is ("customer", "product", ...), beside its status: a metric label."""

    def add(self, entity: str, key: str, part: Part[Any]) -> None:
        """Add the part for `key` of an `entity` (its name on the wire: "product:SKU-1")."""
        self.statuses.append(part.status(f"{entity}:{key}"))
        self.entities.append(entity)

    @property
    def degraded(self) -> bool:
        """True exactly when some part is stale or missing."""
        return any(s.source in (pb.SOURCE_STALE, pb.SOURCE_MISSING) for s in self.statuses)
