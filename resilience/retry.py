"""Retries of idempotent methods after a retryable failure: exponential backoff with full jitter, on a budget.

The decision (`RetryPolicy.delay`: may attempt n+1 go, and after how long?) is kept apart from the mechanism
(`Retry.__call__`: the loop), as tower does. A retry is skipped when the method is not idempotent, the outcome
is not retryable (see resilience.outcome; an overloaded refusal is retried only on a replica not yet tried),
the budget is spent, or it could not finish in the time left: a backoff that ends after the deadline is no
retry at all, only a later failure.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from resilience.budget import Budget
from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import RetryConfig
from resilience.context import Call, CallContext
from resilience.errors import ResilienceError
from resilience.instruments import BUDGET_REFUSALS, RETRIES, event, labels
from resilience.outcome import again, classify


class RetryPolicy:
    """Decides whether and when to retry; knows nothing of how calls are made.

    `elsewhere(tried)` says whether a usable replica is left that the call has not tried: an owner's overloaded
    refusal is retried only there, never on the replica that refused (resilience.outcome, OVERLOADED).
    """

    def __init__(
        self,
        config: RetryConfig,
        budget: Budget,
        rng: random.Random,
        elsewhere: Callable[[Sequence[str]], bool] = lambda tried: False,
    ) -> None:
        self.config = config
        self.budget = budget
        self._rng = rng
        self._elsewhere = elsewhere

    def backoff(self, retry: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(max_backoff, initial * multiplier^(n-1))]."""
        c = self.config
        ceiling = min(c.max_backoff, c.initial_backoff * c.backoff_multiplier ** (retry - 1))
        return self._rng.uniform(0.0, ceiling)

    def delay(self, error: BaseException, ctx: CallContext, attempts: int, time_left: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none."""
        if not ctx.method.retryable or attempts >= self.config.max_attempts:
            return None
        if not again(classify(error), ctx.stats.tried, self._elsewhere):
            return None
        wait = self.backoff(attempts)
        if time_left is not None and wait >= time_left:
            return None
        if not self.budget.try_withdraw():
            ctx.stats.budget_refusals += 1
            BUDGET_REFUSALS.add(1, labels(ctx.downstream, ctx.method.descriptor.name, kind="retry"))
            event("budget refused", {"resilience.kind": "retry", "resilience.attempt": attempts})
            return None
        return wait


class Retry:
    """Sends attempt after attempt while the policy says so; each attempt gets its own context."""

    def __init__(self, policy: RetryPolicy, clock: Clock = SYSTEM_CLOCK) -> None:
        self.policy = policy
        self._clock = clock

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        self.policy.budget.deposit()
        attempt = 0
        while True:
            try:
                return await inner(request, ctx.for_attempt(attempt) if attempt else ctx)
            except ResilienceError as error:
                left = None if ctx.deadline is None else ctx.deadline.remaining(self._clock)
                wait = self.policy.delay(error, ctx, attempt + 1, left)
                if wait is None:
                    raise
                RETRIES.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
                event("retry", {"resilience.attempt": attempt + 1, "resilience.backoff_s": wait,
                                "resilience.reason": error.reason})
            await self._clock.sleep(wait)
            attempt += 1
