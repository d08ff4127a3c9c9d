"""Adaptive throttling: the SRE book's probability, refusals that reach nothing below, and no retry of them."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from pullgate.inventory.v1 import inventory_pb2
from resilience import BreakerConfig, Downstream, DownstreamConfig, HedgingConfig, ThrottleConfig, Throttled
from resilience.config import CacheConfig, RetryConfig
from resilience.context import CallContext
from resilience.errors import Overloaded
from resilience.testing import FakeClock
from resilience.throttle import Throttle
from tests.resilience.scripted import KEYED_WRITE, OK, ONE_ATTEMPT, OVERLOADED, READ, Scripted, Step

REQUEST = catalog_pb2.GetProductRequest(sku="x")


class Draws(random.Random):
    """An rng whose `random()` returns the given values in turn, then `rest`."""

    def __init__(self, values: list[float] | None = None, rest: float = 0.999999) -> None:
        super().__init__(0)
        self.values = list(values or [])
        self.rest = rest

    def random(self) -> float:
        return self.values.pop(0) if self.values else self.rest


def throttle_of(downstream: Downstream) -> Throttle:
    throttle = downstream.stack.get("throttle")
    assert isinstance(throttle, Throttle)
    return throttle


async def drive(downstream: Downstream, calls: int) -> None:
    for _ in range(calls):
        with contextlib.suppress(Overloaded, Throttled):
            await downstream.call(READ, REQUEST)


async def finish(clock: FakeClock, call: Any) -> Any:
    """Run a call to its end, moving the fake clock on (backoffs, hedge delays) as it waits."""
    task = asyncio.ensure_future(call)
    while not task.done():
        await clock.advance(0.01)
    return task.result()


@pytest.mark.parametrize("padding", [1.0, 8.0])
async def test_the_rejection_probability_is_the_sre_books(padding: float) -> None:
    """After 10 accepted and 30 refused attempts, p = (40 - 2 * 10) / (40 + padding), exactly."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: OK if n < 10 else OVERLOADED)
    config = DownstreamConfig(
        retry=RetryConfig(enabled=False), hedging=HedgingConfig(enabled=False), cache=CacheConfig(enabled=False),
        throttle=ThrottleConfig(requests_padding=padding),
    )
    downstream = Downstream("catalog", ["a:1"], config, clock, endpoint=script, rng=Draws())  # never rejects
    await drive(downstream, 40)
    throttle = throttle_of(downstream)
    assert (throttle.requests, throttle.accepts) == (40, 10)
    assert throttle.probability() == (40 - 2 * 10) / (40 + padding)
    assert throttle.rejection_probability(3, 1) == max(0.0, (3 - 2) / (3 + padding))
    assert throttle.rejection_probability(100, 50) == 0.0


async def test_an_attempt_is_refused_exactly_when_the_draw_is_below_p() -> None:
    """A draw just below p refuses the attempt here; a draw just above lets it through to the owner."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: OK if n < 10 else OVERLOADED)
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script, rng=Draws())
    await drive(downstream, 40)
    throttle = throttle_of(downstream)
    p = throttle.probability()
    throttle._rng = Draws([p + 1e-9, p - 1e-9])
    with pytest.raises(Overloaded):
        await downstream.call(READ, REQUEST)
    assert len(script.calls) == 41
    with pytest.raises(Throttled) as raised:
        await downstream.call(READ, REQUEST)
    assert len(script.calls) == 41
    assert raised.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.downstream == "catalog"


async def test_over_many_draws_the_refusals_match_the_probability() -> None:
    """With a seeded rng, the refusals over 2,000 attempts to an owner that refuses all are the sum of each p."""
    clock = FakeClock()
    throttle = Throttle("catalog", ThrottleConfig(), clock, random.Random(7))
    ctx = CallContext(READ, "catalog", None)

    async def owner(request: Any, ctx: CallContext) -> Any:
        return None

    for _ in range(100):
        await throttle(REQUEST, ctx, owner)
        throttle.record(True, clock.now())  # as Balance reports an accepted attempt
    expected = refused = 0.0
    for _ in range(2000):
        expected += throttle.probability()
        try:
            await throttle(REQUEST, ctx, owner)
        except Throttled:
            refused += 1
        else:
            throttle.record(False, clock.now())  # the owner refused it as overloaded
    variance = expected  # a sum of Bernoulli draws: the variance is below the mean
    assert abs(refused - expected) < 4 * variance**0.5
    assert refused > 1000  # 2,000 refusals against 100 accepts: most are throttled by the end


async def test_a_throttled_attempt_reaches_nothing_below_and_is_not_retried() -> None:
    """A refusal here sends nothing, opens no breaker (fail_max 1), and a keyed write is not retried after it."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: OVERLOADED)
    config = DownstreamConfig(cache=CacheConfig(enabled=False), breaker=BreakerConfig(fail_max=1))
    downstream = Downstream("inventory", ["a:1", "b:1"], config, clock, endpoint=script, rng=Draws())
    for _ in range(20):
        with pytest.raises(Overloaded):
            await finish(clock, downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()))
    sent = len(script.calls)
    throttle_of(downstream)._rng = Draws(rest=0.0)  # every draw below p
    with pytest.raises(Throttled) as raised:
        await finish(clock, downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()))
    assert len(script.calls) == sent
    assert "attempts" not in raised.value.reason
    assert downstream.breaker_states() == {"a:1": "closed", "b:1": "closed"}


async def test_the_throttle_lets_go_once_the_window_has_passed() -> None:
    """Refusals older than the window are forgotten: with the owner accepting again, p falls back to 0."""
    clock = FakeClock()
    refusing = [True]
    script = Scripted(clock, lambda n, r: OVERLOADED if refusing[0] else OK)
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script, rng=Draws())
    await drive(downstream, 50)
    throttle = throttle_of(downstream)
    assert throttle.probability() > 0.8
    refusing[0] = False
    await clock.advance(ThrottleConfig().window + 1.0)
    assert throttle.probability() == 0.0
    throttle._rng = Draws(rest=0.0)  # any p above 0 would refuse: stale refusals must not
    await downstream.call(READ, REQUEST)
    assert throttle.probability() == 0.0


async def test_a_throttled_hedge_does_not_end_the_call() -> None:
    """When the first attempt goes through and the hedge is refused here, the first attempt's answer is the call's."""
    clock = FakeClock()
    refusing = [True]
    script = Scripted(clock, lambda n, r: OVERLOADED if refusing[0] else Step(delay=0.1))
    config = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(hedging_delay=0.01))
    downstream = Downstream("catalog", ["a:1", "b:1", "c:1"], config, clock, endpoint=script, rng=Draws())
    await drive(downstream, 10)  # each refused on one replica after another
    refusing[0] = False
    sent = len(script.calls)
    throttle_of(downstream)._rng = Draws([0.999999], rest=0.0)  # the first attempt passes, every hedge is refused
    call = asyncio.create_task(downstream.call(READ, REQUEST))
    await clock.advance(0.2)
    result = await call
    assert len(script.calls) == sent + 1
    assert result.provenance.hedged  # a hedge was due, and refused here: it never reached a replica
    assert result.provenance.attempts == 1
