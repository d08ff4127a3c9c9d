"""Fetching one part of a view from its owner, and recording where the part came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from gateway.reads import ReadMode
from pullgate.gateway.v1 import gateway_pb2 as pb
from resilience import Downstream, Method, ResilienceError, Source

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

_SOURCES = {Source.LIVE: pb.SOURCE_LIVE, Source.CACHED: pb.SOURCE_CACHED, Source.STALE: pb.SOURCE_STALE}


@dataclass(frozen=True, slots=True)
class Part(Generic[Resp]):
    """An owner's answer (None when missing) and its provenance."""

    value: Resp | None
    source: pb.Source.ValueType
    age: float = 0.0
    reason: str = ""

    def status(self, name: str) -> pb.PartStatus:
        status = pb.PartStatus(part=name, source=self.source, reason=self.reason)
        status.age.FromNanoseconds(int(self.age * 1e9))
        return status


async def fetch(
    owner: Downstream, method: Method[Req, Resp], request: Req, mode: ReadMode, *, required: bool = False
) -> Part[Resp]:
    """Ask the owner. A failure becomes a MISSING part, unless the read is strong or the part is required:
    then the owner's error is the caller's error (its code and a message naming the owner)."""
    try:
        result = await owner.call(method, request, max_staleness=mode.max_staleness)
    except ResilienceError as error:
        if mode.strong or required:
            raise
        return Part(None, pb.SOURCE_MISSING, 0.0, str(error))
    provenance = result.provenance
    return Part(result.value, _SOURCES[provenance.source], provenance.age, provenance.reason)


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
