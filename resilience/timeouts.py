"""Deadlines inside the stack: the total timeout bounds a whole call, the attempt timeout each attempt.

Both only ever tighten what is already in force (a deadline never grows back), and both fail at once,
without a network call, when the time is already gone.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import TimeoutConfig
from resilience.context import Call, CallContext
from resilience.deadline import Deadline, earliest
from resilience.errors import DeadlineExceeded


class TotalTimeout:
    """Bounds everything below (attempts, backoff sleeps, hedge delays) by the call's deadline.

    It sets `ctx.deadline` and fails at once when it has passed; it arms no timer of its own. Every policy
    below reads `ctx.deadline` (Retry skips a backoff that ends after it, Hedge a hedge that cannot finish,
    the Bulkhead stops waiting at it) and the transport sends grpc the time left, so grpc ends the attempt
    on time. A timer here would cost each call a timer handle for a bound that is already enforced.
    """

    def __init__(self, config: TimeoutConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._total = config.total if config.enabled else None
        self._clock = clock

    def deadline_for(self, ctx: CallContext) -> Deadline | None:
        """The caller's deadline clipped by the configured total (what Cached also bounds its waiters by)."""
        own = None if self._total is None else Deadline(self._clock.now() + self._total)
        return earliest(ctx.deadline, own)

    def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Awaitable[Any]:
        # A plain function: it acts only before the call, so it needs no coroutine of its own.
        ctx.deadline = self.deadline_for(ctx)
        if ctx.deadline is not None and ctx.deadline.expired(self._clock):
            raise DeadlineExceeded(ctx.downstream, "deadline exceeded before the call", sent=False)
        return inner(request, ctx)


class AttemptTimeout:
    """Gives each attempt its own slice (`per_attempt`), clipped by what is left of the call's deadline."""

    def __init__(self, config: TimeoutConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._slice = config.per_attempt if config.enabled and config.per_attempt > 0 else None
        self._clock = clock

    def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Awaitable[Any]:
        now = self._clock.now()
        own = None if self._slice is None else Deadline(now + self._slice)
        bound = ctx.attempt_deadline = earliest(ctx.deadline, own)
        if bound is not None and bound.at <= now:
            raise DeadlineExceeded(ctx.downstream, "deadline exceeded before the attempt", sent=False)
        return inner(request, ctx)
