"""Deadlines inside the stack: the total timeout bounds a whole call, the attempt timeout each attempt.

Both only ever tighten what is already in force (a deadline never grows back), and both fail at once,
without a network call, when the time is already gone. The attempt timeout also says whose a timeout was:
the owner's, or this process's own (resilience.outcome, "Whose deadline").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import TimeoutConfig
from resilience.context import Call, CallContext
from resilience.deadline import Deadline, earliest
from resilience.errors import DeadlineExceeded, LocalDeadline
from resilience.instruments import LOCAL_DEADLINES, event, labels
from resilience.lag import LoopLag, monitor
from resilience.outcome import fair_slice, owner_had_time


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
    """Gives each attempt its own slice (`per_attempt`), clipped by what is left of the call's deadline, and judges
    a DEADLINE_EXCEEDED at its end: if the time went in this process, not at the owner, it becomes LocalDeadline.

    It gave the slice, so it knows it: when the attempt began and how long it had. With the event loop's lag
    during the attempt (resilience.lag) and the replica's usual latency, `resilience.outcome.owner_had_time`
    decides; the breaker, outlier detection and the throttle above then read the verdict from the error's type.
    The judging costs nothing unless the attempt timed out; the monitor costs two counter updates per attempt.
    """

    def __init__(
        self,
        config: TimeoutConfig,
        clock: Clock = SYSTEM_CLOCK,
        estimate: Callable[[str], float] = lambda replica: 0.0,
        lag: LoopLag | None = None,
    ) -> None:
        self._slice = config.per_attempt if config.enabled and config.per_attempt > 0 else None
        self._configured = None if not config.enabled else self._slice or config.total
        """The slice an attempt is meant to have: the per-attempt one, else the total."""
        self._clock = clock
        self._estimate = estimate
        self._lag = lag or monitor(clock)

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        now = self._clock.now()
        own = None if self._slice is None else Deadline(now + self._slice)
        bound = ctx.attempt_deadline = earliest(ctx.deadline, own)
        if bound is not None and bound.at <= now:
            raise DeadlineExceeded(ctx.downstream, "deadline exceeded before the attempt", sent=False)
        lag = self._lag
        lag.enter()
        try:
            return await inner(request, ctx)
        except DeadlineExceeded as error:
            if bound is not None and error.sent and error.origin is None and not isinstance(error, LocalDeadline):
                self._judge(error, ctx, now, bound.at - now)
            raise
        finally:
            lag.leave()

    def _judge(self, error: DeadlineExceeded, ctx: CallContext, start: float, slice: float) -> None:
        """Raise LocalDeadline if the owner did not have a fair share of the slice with the loop keeping up."""
        lag = self._lag.during(start, self._clock.now())
        replica = ctx.replica or "?"
        estimate = self._estimate(replica) if ctx.replica is not None else 0.0
        configured = self._configured or slice
        if owner_had_time(slice, lag, configured, estimate):
            return
        fair = fair_slice(configured, estimate)
        LOCAL_DEADLINES.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
        event("deadline ran out here", {"resilience.replica": replica, "resilience.slice_s": slice,
                                        "resilience.loop_lag_s": lag, "resilience.fair_s": fair})
        raise LocalDeadline(ctx.downstream, replica, slice, lag, fair) from error
