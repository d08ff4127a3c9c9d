"""Picks a replica for each attempt: power of two choices on outstanding requests, avoiding replicas tried before.

Two random replicas are drawn and the one with fewer calls in flight wins (Mitzenmacher; Finagle's and
Linkerd's default). It needs no global view and sends little to a slow replica, whose calls pile up. A retry or
hedge avoids the replicas its earlier attempts went to, and every attempt avoids replicas whose breaker is
open, as long as any other replica is left.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.context import Call, CallContext
from resilience.outcome import Outcome, classify


class Balance:
    """Sets `ctx.replica` and counts outstanding calls per replica."""

    def __init__(
        self,
        replicas: Sequence[str],
        rng: random.Random | None = None,
        usable: Callable[[str], bool] = lambda replica: True,
        clock: Clock = SYSTEM_CLOCK,
        answered: Callable[[bool, float], None] | None = None,
    ) -> None:
        """`answered(accepted, now)` hears of every attempt that came back from the owner: accepted, or refused
        as overloaded (the throttle counts them)."""
        self.replicas = tuple(replicas)
        self.outstanding = dict.fromkeys(self.replicas, 0)
        self._rng = rng or random.Random()
        self._usable = usable
        self._clock = clock
        self._answered = answered

    def pick(self, avoid: frozenset[str]) -> str:
        """The replica for an attempt that should avoid `avoid`."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        candidates = [r for r in self.replicas if r not in avoid and self._usable(r)]
        if not candidates:
            candidates = [r for r in self.replicas if r not in avoid] or [r for r in self.replicas if self._usable(r)]
        if not candidates:
            candidates = list(self.replicas)
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        return a if self.outstanding[a] <= self.outstanding[b] else b

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        replica = self.pick(ctx.avoid)
        ctx.replica = replica
        ctx.stats.attempts += 1
        ctx.stats.tried.append(replica)
        self.outstanding[replica] += 1
        try:
            response = await inner(request, ctx)
        except BaseException as error:
            if self._answered is not None:
                outcome = classify(error)
                if outcome.news:
                    self._answered(outcome is not Outcome.OVERLOADED, self._clock.now())
            raise
        finally:
            self.outstanding[replica] -= 1
        if self._answered is not None:
            self._answered(True, self._clock.now())
        ctx.stats.replica = replica
        ctx.stats.won = ctx.attempt
        return response
