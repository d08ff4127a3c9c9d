"""What a call returns: the response and where it came from (live, cached, stale), how old it is, how it was got."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from resilience.errors import ResilienceError

T = TypeVar("T")


class Source(enum.Enum):
    """Where a response came from."""

    LIVE = "live"
    """Answered by the owner during this call."""
    CACHED = "cached"
    """From the short-lived cache, younger than its TTL and than the caller's max staleness."""
    STALE = "stale"
    """The owner could not answer; the last good answer, within the caller's max staleness."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """How a response was obtained. `age` is in seconds (0.0 for live); `error` is why a STALE answer is not
    live (the failure of the call that could not be made), with its attempts."""

    source: Source = Source.LIVE
    age: float = 0.0
    attempts: int = 1
    hedged: bool = False
    hedge_won: bool = False
    replica: str | None = None
    error: ResilienceError | None = None

    @property
    def reason(self) -> str:
        """Why it is not live, in words ("" when it is): the error's own reason."""
        return "" if self.error is None else self.error.reason


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """A response message and its provenance."""

    value: T
    provenance: Provenance
