"""What a caller's ReadOptions mean for each downstream call: how stale a part may be, and whether to fail."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pullgate.errors import InvalidArgument
from pullgate.gateway.v1 import gateway_pb2 as pb


@dataclass(frozen=True, slots=True)
class ReadMode:
    """A read's consistency, resolved against the gateway's defaults."""

    consistency: pb.Consistency.ValueType
    # Seconds; 0.0 = live only, math.inf = anything the stale store holds, None = each owner's configured
    # default ([resilience.<owner>.cache] max_staleness), so the bound can differ per owner.
    max_staleness: float | None

    @property
    def strong(self) -> bool:
        """A strong read fails rather than answer with anything not live."""
        return self.consistency == pb.CONSISTENCY_STRONG

    @property
    def available(self) -> bool:
        """An available read answers with whatever can be had, even without its root part (order, customer)."""
        return self.consistency == pb.CONSISTENCY_AVAILABLE

    @property
    def name(self) -> str:
        return pb.Consistency.Name(self.consistency).removeprefix("CONSISTENCY_").lower()

    def bound(self, default: float) -> float:
        """The staleness bound for one owner: the caller's, or `default` (that owner's configured one)."""
        return default if self.max_staleness is None else self.max_staleness


def resolve(read: pb.ReadOptions, field: str = "read") -> ReadMode:
    """Turn the wire ReadOptions into a ReadMode; INVALID_ARGUMENT names the field that is wrong."""
    consistency = read.consistency or pb.CONSISTENCY_BOUNDED_STALENESS
    if consistency not in pb.Consistency.values():
        raise InvalidArgument(f"{field}.consistency", f"unknown value {consistency}")
    has_bound = read.HasField("max_staleness")
    bound = read.max_staleness.ToTimedelta().total_seconds() if has_bound else None
    if bound is not None and bound < 0:
        raise InvalidArgument(f"{field}.max_staleness", "must not be negative")
    if has_bound and consistency != pb.CONSISTENCY_BOUNDED_STALENESS:
        raise InvalidArgument(f"{field}.max_staleness", "only applies to CONSISTENCY_BOUNDED_STALENESS")
    if consistency == pb.CONSISTENCY_STRONG:
        return ReadMode(consistency, 0.0)
    if consistency == pb.CONSISTENCY_AVAILABLE:
        return ReadMode(consistency, math.inf)
    return ReadMode(consistency, bound)
