"""Hedged requests for reads: when the first attempt is slow, send another and take whichever answers first.

The Tail at Scale (Dean and Barroso, 2013): one slow server should not make the caller slow. After a delay with no
answer, a second attempt goes to a different replica; the first good answer wins and the others are cancelled (the
owner sees the cancellation and can stop). The delay adapts: the method's recent latency at a high percentile (p95
by default), never below `hedging_delay`, so only the slowest few percent of calls are hedged. The extra load is
capped twice: by the hedging cap (`max_extra_load`, 5% by default) and by the budget shared with retries. A hedge
at the first delay leaves half the cap (`reserve`) to calls already slower than twice the delay: when a whole
method slows down, every call passes its delay at once, and those hedges would otherwise spend what a call stuck
for 500 ms needs. A hedge that could not finish in the time left is not sent. A retryable failure of an attempt
sends the next one at once (gRFC A6); so does an overloaded refusal, if a replica not tried yet is left. An attempt
that got no answer (refused here by the throttle or the breaker, or refused by an overloaded owner) does not end
the call while another attempt may still answer. Up to `max_attempts` (3 by default: two hedges, the second after
twice the delay), each to a replica not tried yet (resilience.balance; none when none is left), and the losers'
elapsed times feed the balancer's latency estimates and outlier detection. grpc Python ignores the service
config's `hedgingPolicy`, so this is written by hand; Finagle's BackupRequestFilter is the model.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from resilience.budget import Budget
from resilience.clock import SYSTEM_CLOCK, Clock, Timer
from resilience.config import BudgetConfig, HedgingConfig
from resilience.context import Call, CallContext
from resilience.instruments import BUDGET_REFUSALS, HEDGES_SENT, HEDGES_WON, RETRIES, event, labels
from resilience.outcome import Outcome, again, classify
from resilience.timers import TimerQueue

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

    def __init__(
        self,
        config: HedgingConfig,
        budget: Budget,
        clock: Clock = SYSTEM_CLOCK,
        elsewhere: Callable[[Sequence[str]], bool] = lambda tried: False,
    ) -> None:
        """`elsewhere(tried)`: is a usable replica left that the call has not tried (resilience.outcome.again)?"""
        self.config = config
        self.budget = budget
        self.elsewhere = elsewhere
        self.cap = Budget(BudgetConfig(token_ratio=config.max_extra_load, min_per_second=1.0), clock)
        self._clock = clock
        self._timers = TimerQueue(clock)
        """Every call's hedge timer, on one loop timer (most are cancelled unfired)."""
        self._trackers: dict[str, LatencyTracker] = {}
        self.hedges_sent = 0
        self.interrupted = 0
        """Calls whose first attempt (running in the caller's task) was cut short by a hedge's answer."""

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

    def _withdraw_hedge(self, waited: float, delay: float) -> bool:
        """A token from the cap and from the budget. Before the call has waited twice the delay (roughly: a first
        hedge), the cap's `reserve` stays untouched: when the whole method slows down and every call passes its
        delay at once, those hedges cannot spend what the calls stuck far longer need."""
        if self.budget.balance < 1.0:  # checked first, so a token is never taken from the cap for nothing
            return False
        keep = self.config.reserve * self.cap.allowance if waited < 1.5 * delay else 0.0
        return self.cap.try_withdraw(keep) and self.budget.try_withdraw()

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
        return await _Race(self, request, ctx, inner).run()

    def _has_time(self, ctx: CallContext, delay: float) -> bool:
        """A hedge sent after `delay` needs about `delay` more to answer; is that much left?"""
        if ctx.deadline is None:
            return True
        return ctx.deadline.remaining(self._clock) > 2 * delay


class _Race:
    """One hedged call: the first attempt runs in the caller's own task, later attempts as tasks beside it.

    Why inline: most first attempts answer before the hedge delay, and a task per attempt costs two turns of
    the event loop (start, and waking the caller), which is a good part of a loopback call. So the first
    attempt is awaited directly, with a timer beside it; only when the timer fires, or the attempt fails
    retryably, does another attempt start, as a task. Decisions are made in `_settle` and `_fire`, from
    whichever runs first: the caller's task when its attempt ends, or a callback when a task's attempt ends
    or the timer fires. A decision taken while the first attempt is still running interrupts it by
    cancelling the caller's task (with LOSER when another attempt answered); `run` tells that cancellation
    from anyone else's with the task's cancellation count (`cancelling()`/`uncancel()`, as asyncio.timeout
    does), so a caller that cancels at the same moment still gets its CancelledError. The interruption is
    only sent while the caller is suspended inside the first attempt, so it can never land anywhere else.
    """

    __slots__ = (
        "ctx", "decided", "delay", "hedge", "hedges", "inline", "inner", "interrupted", "last_error",
        "max_attempts", "outcome", "request", "running", "sent", "start", "task", "timer", "tracker"
    )

    def __init__(self, hedge: Hedge, request: Any, ctx: CallContext, inner: Call) -> None:
        self.hedge = hedge
        self.request = request
        self.ctx = ctx
        self.inner = inner
        self.max_attempts = hedge.config.max_attempts
        self.tracker = hedge._tracker(ctx.method.path)
        self.delay = hedge.delay(ctx.method.path)
        self.start = 0.0
        """When the first attempt started."""
        self.running: dict[asyncio.Task[Any], CallContext] = {}
        self.hedges: set[int] = set()
        self.sent = 1
        self.timer: Timer | None = None
        self.last_error: BaseException | None = None
        self.outcome: tuple[bool, Any] | None = None
        """(True, response) or (False, error) once decided."""
        self.inline = False
        """The first attempt is running in the caller's task (which is suspended inside it)."""
        self.interrupted = False
        self.decided: asyncio.Future[None] | None = None
        """What the caller waits on when its own attempt ended and others still run."""
        task = asyncio.current_task()
        assert task is not None, "a call runs in a task"
        self.task = task

    async def run(self) -> Any:
        ctx, task = self.ctx, self.task
        baseline = task.cancelling()
        self._arm()
        self.inline = True
        clock = self.hedge._clock
        try:
            try:
                self.start = start = clock.now()
                response = await self.inner(self.request, ctx)
                self.tracker.record(clock.now() - start)
            except asyncio.CancelledError:
                self.inline = False
                # Ours only if we interrupted and nobody else cancelled too (uncancel() drops our request).
                if not self.interrupted or task.uncancel() > baseline:
                    raise
                self.hedge.interrupted += 1
                if self.outcome is not None and self.outcome[0]:
                    event("hedge loser cancelled", {"resilience.attempt": 0, "resilience.replica": ctx.replica or ""})
            except BaseException as error:
                self.inline = False
                self._settle(ctx, error, None)
            else:
                self.inline = False
                self._settle(ctx, None, response)
            if self.outcome is None:  # attempts are still running as tasks; a callback decides
                self.decided = asyncio.get_running_loop().create_future()
                await self.decided
            assert self.outcome is not None
            ok, value = self.outcome
            if ok:
                return value
            raise value
        finally:
            if self.timer is not None:
                self.timer.cancel()
            answered = self.outcome is not None and self.outcome[0]
            for attempt, actx in self.running.items():
                attempt.cancel(LOSER if answered else None)
                if answered:
                    event("hedge loser cancelled", {"resilience.attempt": actx.attempt,
                                                    "resilience.replica": actx.replica or ""})

    def _arm(self) -> None:
        """Arm the hedge timer if another attempt may still go, to a replica not tried yet, and could finish in
        time."""
        if (self.timer is None and self.sent < self.max_attempts and self.hedge._has_time(self.ctx, self.delay)
                and self.hedge.elsewhere(self.ctx.stats.tried)):
            self.timer = self.hedge._timers.call_later(self.delay, self._fire)

    def _launch(self, number: int) -> None:
        actx = self.ctx.for_attempt(number)
        attempt = asyncio.get_running_loop().create_task(self.hedge._timed(self.inner, self.request, actx,
                                                                           self.tracker))
        self.running[attempt] = actx
        attempt.add_done_callback(self._ended)
        self.sent += 1

    def _ended(self, attempt: asyncio.Task[Any]) -> None:
        actx = self.running.pop(attempt, None)
        if actx is None or self.outcome is not None:
            return  # cancelled by `run` on its way out
        if attempt.cancelled():
            self._exhausted()
            return
        error = attempt.exception()
        self._settle(actx, error, None if error is not None else attempt.result())

    def _settle(self, actx: CallContext, error: BaseException | None, response: Any) -> None:
        """An attempt ended: take its answer, or decide on the next attempt (gRFC A6: at once)."""
        ctx = self.ctx
        if error is None:
            ctx.stats.hedge_won = actx.attempt in self.hedges
            if ctx.stats.hedge_won:
                HEDGES_WON.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
            self._decide(True, response)
            return
        self.last_error = error
        outcome = classify(error)
        if not ctx.method.retryable or not again(outcome, ctx.stats.tried, self.hedge.elsewhere):
            if outcome.news and outcome is not Outcome.OVERLOADED:
                self._decide(False, error)  # the owner's answer, and a final one
            else:
                self._exhausted()  # no answer (refused here or by an overloaded owner): others may still give one
            return
        if self.sent < self.max_attempts:
            if not self.hedge.budget.try_withdraw():
                self.hedge._refused(ctx, "retry", self.sent)
            else:
                RETRIES.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
                event("retry", {"resilience.attempt": self.sent, "resilience.backoff_s": 0.0,
                                "resilience.reason": getattr(error, "reason", repr(error))})
                self._launch(self.sent)
                self._arm()
        self._exhausted()

    def _fire(self) -> None:
        """The hedge delay passed with no answer: send a hedge if the caps and the time allow."""
        self.timer = None
        if self.outcome is not None:
            return
        ctx, hedge = self.ctx, self.hedge
        may_hedge = ((self.inline or self.running) and self.sent < self.max_attempts
                     and hedge._has_time(ctx, self.delay) and hedge.elsewhere(ctx.stats.tried))
        if may_hedge and not hedge._withdraw_hedge(hedge._clock.now() - self.start, self.delay):
            hedge._refused(ctx, "hedge", self.sent)
            if self.delay <= 0.0:
                return  # asking again after no delay at all would spin until the call ends
        elif may_hedge:
            self.hedges.add(self.sent)
            ctx.stats.hedged = True
            hedge.hedges_sent += 1
            HEDGES_SENT.add(1, labels(ctx.downstream, ctx.method.descriptor.name))
            event("hedge", {"resilience.attempt": self.sent, "resilience.hedging_delay_s": self.delay})
            self._launch(self.sent)
        self._arm()

    def _exhausted(self) -> None:
        """No attempt left running and none decided: the last failure is the answer."""
        if self.outcome is None and not self.inline and not self.running:
            self._decide(False, self.last_error or asyncio.CancelledError())

    def _decide(self, ok: bool, value: Any) -> None:
        if self.outcome is not None:
            return
        self.outcome = (ok, value)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inline:  # the caller is suspended inside its own attempt: cut it short
            self.interrupted = True
            self.task.cancel(LOSER if ok else None)
        elif self.decided is not None and not self.decided.done():
            self.decided.set_result(None)
