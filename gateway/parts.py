"""Fetching one part of a view from its owner and labelling where it came from, so nothing is silently stale."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from gateway.reads import ReadMode
from pullgate.errors import ServiceError
from pullgate.gateway.v1 import gateway_pb2 as pb
from resilience import Downstream, Method, Outcome, ResilienceError, Source, classify

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

_SOURCES = {Source.LIVE: pb.SOURCE_LIVE, Source.CACHED: pb.SOURCE_CACHED, Source.STALE: pb.SOURCE_STALE}


@dataclass(frozen=True, slots=True)
class Part(Generic[Resp]):
    """An owner's answer (None when missing) and its provenance: source, age in seconds, why it is not live."""

    value: Resp | None
    source: pb.Source.ValueType
    age: float = 0.0
    reason: str = ""

    def status(self, name: str) -> pb.PartStatus:
        status = pb.PartStatus(part=name, source=self.source, reason=self.reason)
        status.age.FromNanoseconds(int(self.age * 1e9))
        return status


def missing(reason: str) -> Part[Any]:
    """A part that is not in the response, and why."""
    return Part(None, pb.SOURCE_MISSING, 0.0, reason)


class ReadFailed(ServiceError):
    """A read that cannot be answered as its mode demands: DEADLINE_EXCEEDED when time ran out, else UNAVAILABLE.

    The message names the part, the owner and the owner's reason, e.g. "strong read: customer:1 could not be
    fetched live: customers: circuit open (127.0.0.1:50051)".
    """

    def __init__(self, message: str, error: ResilienceError) -> None:
        super().__init__(message)
        timed_out = error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        self.code = grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else grpc.StatusCode.UNAVAILABLE
        self.cause = error


def describe(error: ResilienceError) -> str:
    """The owner and its reason, e.g. "inventory: deadline exceeded after 2 attempts"."""
    return f"{error.downstream}: {error.reason}"


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
            raise ReadFailed(f"strong read: {what} could not be fetched live: {describe(error)}", error) from None
        if required and not mode.available:
            raise ReadFailed(
                f"{mode.name} read: {what} is required and could not be had live or within "
                f"{_staleness(bound)}: {describe(error)}", error
            ) from None
        return missing(describe(error))
    provenance = result.provenance
    reason = ""
    if provenance.source is Source.CACHED:
        reason = f"{owner.name}: cached, within {_staleness(bound)}"
    elif provenance.source is Source.STALE:
        reason = f"{owner.name}: {provenance.reason}"
        if provenance.attempts > 1 and "attempts" not in reason:
            reason += f" after {provenance.attempts} attempts"
    return Part(result.value, _SOURCES[provenance.source], provenance.age, reason)


@dataclass
class Provenance:
    """The parts of one response, in the order they were added."""

    statuses: list[pb.PartStatus] = field(default_factory=list)

    def add(self, name: str, part: Part[Any]) -> None:
        self.statuses.append(part.status(name))

    @property
    def degraded(self) -> bool:
        """True exactly when some part is stale or missing."""
        return any(s.source in (pb.SOURCE_STALE, pb.SOURCE_MISSING) for s in self.statuses)
