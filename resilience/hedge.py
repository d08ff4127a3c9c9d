"""Hedged requests for reads: when the first attempt is slow, send another and take whichever answers first.

The Tail at Scale (Dean and Barroso, 2013): one slow server should not make the caller slow. After a delay with
no answer, a second attempt goes to a different replica; the first good answer wins and the others are
cancelled (the owner sees the cancellation and can stop). The delay adapts: the method's recent latency at a
high percentile (p95 by default), never below `hedging_delay`, so only the slowest few percent of calls are
hedged. The extra load is capped twice: by the hedging cap (`max_extra_load`, 5% by default) and by the budget
shared with retries. A hedge that could not finish in the time left is not sent. A retryable failure of an
attempt sends the next one at once (gRFC A6). grpc Python ignores the service config's `hedgingPolicy`, so
this is written by hand; Finagle's BackupRequestFilter is the model.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from resilience.budget import Budget
from resilience.clock import SYSTEM_CLOCK, Clock, Timer, call_later
from resilience.config import BudgetConfig, HedgingConfig
from resilience.context import Call, CallContext
from resilience.instruments import BUDGET_REFUSALS, HEDGES_SENT, HEDGES_WON, RETRIES, event, labels
from resilience.outcome import classify

LOSER = "hedge loser"
"""The message a losing attempt's task is cancelled with; the grpc client span below it can say so."""


class LatencyTracker:
    """Recent latencies of one method; `percentile()` is recomputed every `every` samples, not per call."""

    def __init__(self, quantile: float, window: int = 500, every: int = 25) -> None:
        self._quantile = quantile
        self._samples: deque[float] = deque(maxlen=window)
        self._every = every
        self._since = 0
        self._value = 0.0

    def record(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since += 1
        if self._since >= self._every:
            self._since = 0
            ordered = sorted(self._samples)
            self._value = ordered[min(len(ordered) - 1, int(self._quantile * len(ordered)))]

    def percentile(self) -> float:
        """The latency at the configured quantile; 0.0 until there are `every` samples."""
        return self._value


class Hedge:
    """Sends up to `max_attempts` concurrent attempts, spaced by the adaptive delay; returns the first answer."""

    def __init__(self, config: HedgingConfig, budget: Budget, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.budget = budget
        self.cap = Budget(BudgetConfig(token_ratio=config.max_extra_load, min_per_second=1.0), clock)
        self._clock = clock
        self._trackers: dict[str, LatencyTracker] = {}
        self.hedges_sent = 0

    def delay(self, method_path: str) -> float:
        """How long the next attempt waits for an answer before a hedge is sent."""
        tracker = self._trackers.get(method_path)
        recent = tracker.percentile() if tracker is not None else 0.0
        return max(self.config.hedging_delay, recent)

    def _tracker(self, method_path: str) -> LatencyTracker:
        tracker = self._trackers.get(method_path)
        if tracker is None:
            tracker = self._trackers[method_path] = LatencyTracker(self.config.percentile)
        return tracker

    def _withdraw_hedge(self) -> bool:
        if self.cap.balance < 1.0 or self.budget.balance < 1.0:
            return False
        return self.cap.try_withdraw() and self.budget.try_withdraw()

    @staticmethod
    def _refused(ctx: CallContext, kind: str, attempt: int) -> None:
        ctx.stats.budget_refusals += 1
        BUDGET_REFUSALS.add(1, labels(ctx.downstream, ctx.method.descriptor.name, kind=kind))
        event("budget refused", {"resilience.kind": kind, "resilience.attempt": attempt})

    async def _timed(self, inner: Call, request: Any, ctx: CallContext, tracker: LatencyTracker) -> Any:
        start = self._clock.now()
        response = await inner(request, ctx)
        tracker.record(self._clock.now() - start)
        return response

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        self.budget.deposit()
        self.cap.deposit()
        tracker = self._tracker(ctx.method.path)
        delay = self.delay(ctx.method.path)
        clock = self._clock
        loop = asyncio.get_running_loop()
        wake: list[asyncio.Future[None]] = [loop.create_future()]
        fired = [False]

        def poke(_: object = None) -> None:
            if not wake[0].done():
                wake[0].set_result(None)

        def on_timer() -> None:
            fired[0] = True
            poke()

        running: dict[asyncio.Task[Any], CallContext] = {}
        hedges: set[int] = set()

        def launch(number: int) -> None:
            actx = ctx if number == 0 else ctx.for_attempt(number)
            task = loop.create_task(self._timed(inner, request, actx, tracker))
            task.add_done_callback(poke)
            running[task] = actx

        launch(0)
        sent = 1
        timer: Timer | None = None
        last_error: BaseException | None = None
        answered = False
        try:
            while True:
                if timer is None and sent < self.config.max_attempts and self._has_time(ctx, delay):
                    timer = call_later(clock, delay, on_timer)
                await wake[0]
                wake[0] = loop.create_future()
                for task in [t for t in running if t.done()]:
                    actx = running.pop(task)
                    if task.cancelled():
                        continue
                    error = task.exception()
                    if error is None:
                        answered = True
                        ctx.stats.hedge_won = actx.attempt in hedges
                        if ctx.stats.hedge_won:
                            HEDGES_WON.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
                        return task.result()
                    last_error = error
                    if not classify(error).retryable or not ctx.method.retryable:
                        raise error
                    if sent < self.config.max_attempts:
                        if not self.budget.try_withdraw():
                            self._refused(ctx, "retry", sent)
                            continue
                        RETRIES.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
                        event("retry", {"resilience.attempt": sent, "resilience.backoff_s": 0.0,
                                        "resilience.reason": getattr(error, "reason", repr(error))})
                        launch(sent)  # gRFC A6: a retryable failure sends the next attempt at once
                        sent += 1
                if fired[0]:
                    fired[0], timer = False, None
                    may_hedge = running and sent < self.config.max_attempts and self._has_time(ctx, delay)
                    if may_hedge and not self._withdraw_hedge():
                        self._refused(ctx, "hedge", sent)
                    elif may_hedge:
                        hedges.add(sent)
                        ctx.stats.hedged = True
                        self.hedges_sent += 1
                        HEDGES_SENT.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
                        event("hedge", {"resilience.attempt": sent, "resilience.hedging_delay_s": delay})
                        launch(sent)
                        sent += 1
                if not running:
                    assert last_error is not None
                    raise last_error
        finally:
            if timer is not None:
                timer.cancel()
            for task, actx in running.items():
                task.cancel(LOSER if answered else None)
                if answered:
                    event("hedge loser cancelled", {"resilience.attempt": actx.attempt,
                                                    "resilience.replica": actx.replica or ""})

    def _has_time(self, ctx: CallContext, delay: float) -> bool:
        """A hedge sent after `delay` needs about `delay` more to answer; is that much left?"""
        if ctx.deadline is None:
            return True
        return ctx.deadline.remaining(self._clock) > 2 * delay
