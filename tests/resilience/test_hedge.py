"""Hedged reads: a second attempt after the delay, to another replica; the first answer wins, the loser is cancelled."""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from pullgate.inventory.v1 import inventory_pb2
from resilience import BreakerConfig, Downstream, DownstreamConfig, HedgingConfig
from resilience.config import BudgetConfig, BulkheadConfig, CacheConfig
from resilience.context import CallContext
from resilience.hedge import LatencyTracker
from resilience.testing import FakeClock, settle
from tests.resilience.scripted import KEYED_WRITE, OK, READ, Scripted, Step

NO_CACHE = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(hedging_delay=0.05))
REPLICAS = ["a:1", "b:1"]


def slow_first(n: int, replica: str) -> Step:
    return Step(delay=1.0) if n == 0 else Step(delay=0.01)


async def test_slow_attempt_is_hedged_to_another_replica_and_loser_cancelled() -> None:
    """After the hedge delay a second attempt goes to the other replica; it wins and the first is cancelled."""
    clock = FakeClock()
    script = Scripted(clock, slow_first)
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script, rng=random.Random(3))
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.04)
    assert len(script.calls) == 1
    await clock.advance(0.02)
    assert len(script.calls) == 2
    assert script.calls[0] != script.calls[1]
    await clock.advance(0.01)
    result = await call
    await settle()
    assert result.provenance.hedged
    assert result.provenance.hedge_won
    assert result.provenance.replica == script.calls[1]
    assert script.cancelled == [script.calls[0]]


async def test_cancelled_hedge_loser_never_counts_against_the_breaker() -> None:
    """Hedge losers are cancelled many times over; their replica's breaker stays closed with no failure counted."""
    clock = FakeClock()
    config = DownstreamConfig(
        cache=CacheConfig(enabled=False),
        hedging=HedgingConfig(hedging_delay=0.05, max_extra_load=1.0),
        breaker=BreakerConfig(fail_max=1),
        budget=BudgetConfig(token_ratio=1.0),
    )
    script = Scripted(clock, lambda n, r: Step(delay=1.0) if r == "a:1" else Step(delay=0.01))
    downstream = Downstream("catalog", REPLICAS, config, clock, endpoint=script, rng=random.Random(3))
    for _ in range(5):
        call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
        while not call.done():
            await clock.advance(0.01)
        await call
    await settle()
    assert "a:1" in script.cancelled
    assert downstream.breaker_states() == {"a:1": "closed", "b:1": "closed"}
    assert downstream.stack.get("breaker").breakers["a:1"]._breaker.fail_counter == 0


async def test_fast_answer_sends_no_hedge() -> None:
    """An attempt that answers before the delay is the only one."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.01))
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script)
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.2)
    result = await call
    assert not result.provenance.hedged
    assert len(script.calls) == 1


async def test_a_single_replica_is_never_hedged() -> None:
    """A hedge goes only to a replica the call has not tried: with one replica, a slow call waits for its one
    attempt (a second attempt to the same process would double its work, and under overload that process is
    slow because it is busy)."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.5))
    downstream = Downstream("catalog", ["a:1"], NO_CACHE, clock, endpoint=script)
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.6)
    result = await call
    assert script.calls == ["a:1"]
    assert not result.provenance.hedged
    assert downstream.stack.get("retry_or_hedge").hedge.hedges_sent == 0


async def test_two_replicas_give_one_hedge_however_many_attempts_are_allowed() -> None:
    """max_attempts is 3, but with two replicas the second hedge has nowhere new to go and is not sent."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.5))
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script, rng=random.Random(3))
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.6)
    result = await call
    assert sorted(script.calls) == REPLICAS
    assert result.provenance.hedged


async def test_hedges_are_capped_by_max_extra_load() -> None:
    """With every call slow and a 10% cap (floor 1/s over 10 s), hedges stay within the cap plus floor."""
    clock = FakeClock()
    config = DownstreamConfig(
        cache=CacheConfig(enabled=False),
        hedging=HedgingConfig(hedging_delay=0.05, max_extra_load=0.1),
        bulkhead=BulkheadConfig(max_concurrent=1000),
    )
    script = Scripted(clock, lambda n, r: Step(delay=0.1))
    downstream = Downstream("catalog", REPLICAS, config, clock, endpoint=script)
    calls = [asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x"))) for _ in range(200)]
    while not all(c.done() for c in calls):
        await clock.advance(0.01)
    hedged = sum(1 for c in calls if c.result().provenance.hedged)
    assert hedged <= 0.1 * 200 + 10  # the ratio, plus the floor of 1 per second over a 10 s window
    assert hedged < 200


async def _burst_then_stuck(reserve: float) -> tuple[int, float, bool]:
    """100 calls at once, each a little slower than the hedge delay (every one asks for a hedge at once), then one
    call whose first attempt is stuck for 1 s: (hedges the burst sent, how long the stuck call took, hedged?)."""
    clock = FakeClock()
    config = DownstreamConfig(
        cache=CacheConfig(enabled=False),
        hedging=HedgingConfig(hedging_delay=0.05, max_extra_load=0.05, reserve=reserve),
        bulkhead=BulkheadConfig(max_concurrent=1000),
    )
    stuck_from: list[int] = []
    script = Scripted(clock, lambda n, r: Step(delay=(1.0 if n == stuck_from[0] else 0.01) if stuck_from
                                               else 0.08))
    downstream = Downstream("catalog", ["a:1", "b:1", "c:1"], config, clock, endpoint=script)
    burst = [asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x"))) for _ in range(100)]
    while not all(c.done() for c in burst):
        await clock.advance(0.01)
    await settle()
    hedged = sum(1 for c in burst if c.result().provenance.hedged)
    stuck_from.append(len(script.calls))
    began = clock.now()
    stuck = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="y")))
    while not stuck.done():
        await clock.advance(0.01)
    return hedged, clock.now() - began, stuck.result().provenance.hedged


async def test_a_burst_of_first_hedges_leaves_the_reserve_to_a_stuck_call() -> None:
    """When every call passes its delay at once, first hedges spend at most half the cap (its allowance here: the
    floor of 10 plus 5% of 100 calls), and a call stuck for far longer still gets its hedge from the reserve."""
    hedged, took, stuck_hedged = await _burst_then_stuck(reserve=0.5)
    assert 1 <= hedged <= 0.5 * (10 + 0.05 * 100)
    assert stuck_hedged
    assert took < 0.5


async def test_without_a_reserve_the_burst_spends_the_cap_and_the_stuck_call_waits() -> None:
    """The same with `reserve = 0`: the burst's hedges take the whole cap and the stuck call gets none."""
    hedged, took, stuck_hedged = await _burst_then_stuck(reserve=0.0)
    assert hedged > 0.5 * (10 + 0.05 * 100)
    assert not stuck_hedged
    assert took >= 1.0


async def test_a_refused_hedge_with_no_delay_is_not_asked_for_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `hedging_delay = 0` and the budget spent, the hedge is refused once, not again and again at once (that
    spun the event loop until the first attempt answered; on a fake clock, forever)."""
    clock = FakeClock()
    config = DownstreamConfig(
        cache=CacheConfig(enabled=False),
        hedging=HedgingConfig(hedging_delay=0.0),
        budget=BudgetConfig(token_ratio=0.0, min_per_second=0.0),
    )
    script = Scripted(clock, lambda n, r: Step(delay=0.05))
    downstream = Downstream("catalog", REPLICAS, config, clock, endpoint=script)
    refused: list[str] = []
    monkeypatch.setattr(downstream.stack.get("retry_or_hedge").hedge, "_refused",
                        lambda ctx, kind, attempt: refused.append(kind))
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.1)
    result = await call
    assert refused == ["hedge"]
    assert not result.provenance.hedged


async def test_keyed_writes_are_never_hedged() -> None:
    """An IDEMPOTENT write waits for its one attempt however slow it is."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.5))
    downstream = Downstream("inventory", REPLICAS, NO_CACHE, clock, endpoint=script)
    call = asyncio.create_task(downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()))
    await clock.advance(0.6)
    result = await call
    assert len(script.calls) == 1
    assert not result.provenance.hedged


async def test_hedge_that_cannot_finish_in_time_is_not_sent() -> None:
    """With less than twice the hedge delay left, no hedge is sent."""
    clock = FakeClock()
    config = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(hedging_delay=0.4))
    script = Scripted(clock, lambda n, r: Step(delay=0.5))
    downstream = Downstream("catalog", REPLICAS, config, clock, endpoint=script)
    from resilience import deadline

    with deadline.scope(deadline.Deadline.after(0.7, clock)):
        call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.6)
    await call
    assert len(script.calls) == 1


async def test_retryable_failure_sends_the_next_attempt_at_once() -> None:
    """Under hedging, an UNAVAILABLE attempt is followed at once by one to the other replica (gRFC A6)."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(code=grpc.StatusCode.UNAVAILABLE) if n == 0 else OK)
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script)
    result = await downstream.call(READ, catalog_pb2.GetProductRequest(sku="x"))
    assert result.provenance.attempts == 2
    assert script.calls[0] != script.calls[1]


def test_latency_tracker_reports_the_percentile() -> None:
    """The p95 of 1..100 ms is 96 ms (the sample at index 95 of 100)."""
    tracker = LatencyTracker(0.95, window=100, every=100)
    for ms in range(1, 101):
        tracker.record(ms / 1000)
    assert tracker.percentile() == 0.096


class _Recording(Scripted):
    """Scripted, and notes the task each attempt ran in; `on_answer(n)` runs as attempt n answers."""

    def __init__(self, clock: FakeClock, plan: Callable[[int, str], Step]) -> None:
        super().__init__(clock, plan)
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.on_answer: Callable[[int], object] = lambda n: None

    async def __call__(self, request: Any, ctx: CallContext) -> Any:
        self.tasks.append(asyncio.current_task())
        n = len(self.calls)
        response = await super().__call__(request, ctx)
        self.on_answer(n)
        return response


async def test_first_attempt_runs_in_the_callers_task() -> None:
    """Without a hedge the only attempt runs inline in the caller's task: no task is made for it."""
    clock = FakeClock()
    script = _Recording(clock, lambda n, r: Step(delay=0.01))
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script)
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    await clock.advance(0.02)
    await call
    assert script.tasks == [call]


async def test_a_hedge_answer_interrupts_the_inline_attempt_and_leaves_no_cancellation() -> None:
    """The hedge wins while the first attempt runs inline: that attempt is cancelled as a loser, the caller's task
    gets the answer, and no cancellation is left pending on it."""
    clock = FakeClock()
    script = _Recording(clock, slow_first)
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script, rng=random.Random(3))

    async def caller() -> tuple[Any, int]:
        result = await downstream.call(READ, catalog_pb2.GetProductRequest(sku="x"))
        await asyncio.sleep(0)  # a cancellation left pending would land here
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    call = asyncio.create_task(caller())
    while not call.done():
        await clock.advance(0.01)
    result, cancelling = await call
    assert result.provenance.hedge_won
    assert cancelling == 0
    assert script.tasks[0] is call and script.tasks[1] is not call
    assert script.cancelled == [script.calls[0]]
    assert downstream.stack.get("retry_or_hedge").hedge.interrupted == 1


async def test_a_caller_cancelled_as_the_hedge_answers_stays_cancelled() -> None:
    """If the caller is cancelled in the same moment a hedge answers, it gets CancelledError, not the answer."""
    clock = FakeClock()
    script = _Recording(clock, slow_first)
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script, rng=random.Random(3))
    call = asyncio.create_task(downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")))
    script.on_answer = lambda n: call.cancel() if n == 1 else None
    while not call.done():
        await clock.advance(0.01)
    assert call.cancelled()
    await settle()
    assert script.cancelled == [script.calls[0]]


async def test_a_callers_timeout_expiring_as_the_hedge_answers_is_still_a_timeout() -> None:
    """asyncio.timeout around the call still raises TimeoutError when it expires as the hedge answers."""
    clock = FakeClock()
    script = _Recording(clock, slow_first)
    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=script, rng=random.Random(3))

    async def caller() -> None:
        async with asyncio.timeout(10.0) as scope:
            script.on_answer = lambda n: scope.reschedule(-1.0) if n == 1 else None  # expire it right now
            await downstream.call(READ, catalog_pb2.GetProductRequest(sku="x"))
            await asyncio.sleep(0)

    call = asyncio.create_task(caller())
    while not call.done():
        await clock.advance(0.01)
    assert isinstance(call.exception(), TimeoutError)


async def test_a_hedge_runs_in_its_own_calls_context() -> None:
    """Every call's hedge timer shares one loop timer; a hedge still runs in its own call's context (its trace,
    its deadline), not in the context of the call that armed the loop timer."""
    clock = FakeClock()
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who")
    seen: dict[tuple[str, int], str] = {}

    async def endpoint(request: catalog_pb2.GetProductRequest, ctx: CallContext) -> Any:
        seen[(request.sku, ctx.attempt)] = who.get()
        await clock.sleep(1.0 if ctx.attempt == 0 else 0.01)
        return catalog_pb2.GetProductResponse()

    downstream = Downstream("catalog", REPLICAS, NO_CACHE, clock, endpoint=endpoint, rng=random.Random(3))

    async def call(name: str) -> object:
        who.set(name)
        return await downstream.call(READ, catalog_pb2.GetProductRequest(sku=name))

    first = asyncio.create_task(call("A"))
    await clock.advance(0.01)
    second = asyncio.create_task(call("B"))
    for _ in range(20):
        await clock.advance(0.01)
    await asyncio.gather(first, second)
    assert seen[("A", 1)] == "A"
    assert seen[("B", 1)] == "B"
