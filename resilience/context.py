"""The shapes every policy shares: a call is a function, a policy wraps one, and the context it carries.

    Call    = async (request, ctx) -> response
    Policy  = (request, ctx, inner: Call) -> awaitable response   (an async def, or a plain pass-through)

Shared state (a breaker, a budget, a cache) lives on the policy object; per-call state lives in locals and in
the context. A `CallContext` belongs to one attempt: Retry and Hedge hand each attempt its own copy
(`for_attempt`), so concurrent hedges never overwrite each other's replica. What the whole logical call has
learned (attempts, hedges, which replica answered) is in `CallStats`, shared by its attempts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from resilience.deadline import Deadline
from resilience.errors import ResilienceError
from resilience.method import Method
from resilience.result import Provenance, Source


@dataclass(slots=True)
class CallStats:
    """What one logical call has done so far; becomes its Provenance."""

    attempts: int = 0
    hedged: bool = False
    hedge_won: bool = False
    replica: str | None = None
    tried: list[str] = field(default_factory=list)
    source: Source = Source.LIVE
    age: float = 0.0
    error: ResilienceError | None = None
    """The failure a STALE answer stands in for."""
    won: int = 0
    """The number of the attempt that answered (0 = the first)."""
    budget_refusals: int = 0
    """Retries or hedges the budget (or the hedging cap) did not allow."""
    cache: str = ""
    """What the cache did: "hit", "miss", "coalesced" (joined a call in flight), "stale"; "" = not consulted."""

    def copy_from(self, other: CallStats) -> None:
        self.attempts, self.hedged, self.hedge_won = other.attempts, other.hedged, other.hedge_won
        self.replica, self.tried = other.replica, list(other.tried)
        self.won, self.budget_refusals = other.won, other.budget_refusals

    def provenance(self) -> Provenance:
        return Provenance(
            self.source, self.age, max(1, self.attempts), self.hedged, self.hedge_won, self.replica, self.error
        )


@dataclass(slots=True)
class CallContext:
    """One attempt's view of a call: the method, the deadline in force, and where it goes."""

    method: Method[Any, Any]
    downstream: str
    deadline: Deadline | None
    """The whole call's deadline (the caller's, clipped by the total timeout); never later than at entry."""
    max_staleness: float | None = None
    stats: CallStats = field(default_factory=CallStats)
    attempt: int = 0
    """0 for the first attempt, 1 for the first retry or hedge, ..."""
    avoid: frozenset[str] = frozenset()
    """Replicas this attempt should not go to (the ones tried before), if any other is usable."""
    replica: str | None = None
    """Set by Balance: the address this attempt goes to."""
    attempt_deadline: Deadline | None = None
    """Set by AttemptTimeout: this attempt's own slice, never later than `deadline`."""

    def for_attempt(self, attempt: int) -> CallContext:
        """A fresh context for attempt number `attempt`, avoiding every replica tried so far."""
        return dataclasses.replace(
            self, attempt=attempt, avoid=frozenset(self.stats.tried), replica=None, attempt_deadline=None
        )


Call = Callable[[Any, CallContext], Awaitable[Any]]


class Policy(Protocol):
    """Wraps a call: does something before, after or around `inner`.

    Usually an `async def`; a policy that only acts before the call (a timeout that sets the deadline, a
    router) may be a plain function returning `inner(request, ctx)`, and saves the call a coroutine.
    """

    def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Awaitable[Any]: ...
