"""The breaker stops lying: overloaded refusals and deadlines that ran out in the caller are not the owner's failure."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from resilience import (
    BreakerConfig,
    DeadlineExceeded,
    Downstream,
    DownstreamConfig,
    HedgingConfig,
    LocalDeadline,
    Overloaded,
    ResilienceError,
    ThrottleConfig,
    TimeoutConfig,
)
from resilience import deadline as dl
from resilience.config import CacheConfig
from resilience.testing import FakeClock, settle
from tests.resilience.scripted import ONE_ATTEMPT, OVERLOADED, READ, Prompt, Scripted, Step

REQUEST = catalog_pb2.GetProductRequest(sku="x")


async def finish(clock: FakeClock, calls: list[asyncio.Task[Any]], step: float = 0.01) -> None:
    while not all(c.done() for c in calls):
        await clock.advance(step)


async def test_an_overloaded_refusal_never_counts_against_the_breaker() -> None:
    """Any number of overloaded refusals leave a fail_max=1 breaker closed; a plain RESOURCE_EXHAUSTED opens it."""
    clock = FakeClock()
    overloaded = [True]
    plain = Step(code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    script = Scripted(clock, lambda n, r: OVERLOADED if overloaded[0] else plain)
    config = dataclasses.replace(ONE_ATTEMPT, throttle=ThrottleConfig(enabled=False))  # every call reaches the owner
    downstream = Downstream("catalog", ["a:1"], config, clock, endpoint=script)
    for _ in range(20):
        with pytest.raises(Overloaded):
            await downstream.call(READ, REQUEST)
    assert downstream.breaker_states() == {"a:1": "closed"}
    overloaded[0] = False
    with pytest.raises(ResilienceError):
        await downstream.call(READ, REQUEST)
    assert downstream.breaker_states() == {"a:1": "open"}


async def test_an_overloaded_refusal_is_retried_on_another_replica_never_the_same() -> None:
    """With two replicas the refusal is retried once, on the other; with one replica it is not retried at all."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: OVERLOADED if r == "a:1" else Step())
    config = DownstreamConfig(  # no throttle here: each refusal should reach the retry decision
        hedging=HedgingConfig(enabled=False), cache=CacheConfig(enabled=False), throttle=ThrottleConfig(enabled=False)
    )
    downstream = Downstream("catalog", ["a:1", "b:1"], config, clock, endpoint=script)
    for _ in range(10):
        call = asyncio.create_task(downstream.call(READ, REQUEST))
        await finish(clock, [call])
        assert call.result().provenance.replica == "b:1"
    assert "a:1" in script.calls
    single = Scripted(clock, lambda n, r: OVERLOADED)
    alone = Downstream("catalog", ["a:1"], config, clock, endpoint=single)
    with pytest.raises(Overloaded):
        await alone.call(READ, REQUEST)
    assert single.calls == ["a:1"]


async def test_a_hedged_read_refused_as_overloaded_goes_to_another_replica_at_once() -> None:
    """Under hedging, an overloaded refusal sends the next attempt at once, to a replica not tried yet."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: OVERLOADED if n == 0 else Step())
    config = DownstreamConfig(cache=CacheConfig(enabled=False), throttle=ThrottleConfig(enabled=False))
    downstream = Downstream("catalog", ["a:1", "b:1"], config, clock, endpoint=script)
    result = await downstream.call(READ, REQUEST)
    assert result.provenance.attempts == 2
    assert script.calls[0] != script.calls[1]


async def test_a_deadline_that_ran_out_in_a_blocked_loop_does_not_count() -> None:
    """The loop blocked for 2 s during an attempt to a prompt owner: LocalDeadline, and the breaker stays closed."""
    clock = FakeClock()
    owner = Prompt(clock)
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=owner)
    call = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    await clock.stall(2.0)
    with pytest.raises(LocalDeadline) as raised:
        await call
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.lag > 1.0
    assert "the time went here" in str(raised.value)
    assert downstream.breaker_states() == {"a:1": "closed"}


async def test_a_deadline_too_short_to_blame_anyone_does_not_count() -> None:
    """With 3 ms left of the caller's deadline (its own queueing took the rest), a timeout is not the owner's."""
    clock = FakeClock()
    owner = Prompt(clock, delay=0.005)
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=owner)
    with dl.scope(dl.Deadline.after(0.003, clock)):
        call = asyncio.create_task(downstream.call(READ, REQUEST))
    await finish(clock, [call], 0.001)
    assert isinstance(call.exception(), LocalDeadline)
    assert downstream.breaker_states() == {"a:1": "closed"}


async def test_a_deadline_that_ran_out_at_the_owner_with_a_fair_slice_counts() -> None:
    """An owner that did not answer in a full 1 s slice, the loop keeping up, has failed: the breaker opens."""
    clock = FakeClock()
    owner = Prompt(clock, delay=5.0)
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=owner)
    call = asyncio.create_task(downstream.call(READ, REQUEST))
    await finish(clock, [call])
    error = call.exception()
    assert isinstance(error, DeadlineExceeded)
    assert not isinstance(error, LocalDeadline)
    assert downstream.breaker_states() == {"a:1": "open"}


DOWNSTREAMS = ("owner-a", "owner-b", "owner-c", "owner-d")
"""Four healthy owners (the layer knows no service names of its own)."""
CONFIGS = {
    "defaults": DownstreamConfig(),
    "hair-trigger breaker": DownstreamConfig(breaker=BreakerConfig(fail_max=1)),
    "no cache, no hedging": DownstreamConfig(
        cache=CacheConfig(enabled=False), hedging=HedgingConfig(enabled=False), breaker=BreakerConfig(fail_max=1)
    ),
    "short slices": DownstreamConfig(
        timeout=TimeoutConfig(total=0.3, per_attempt=0.05), breaker=BreakerConfig(fail_max=1),
        hedging=HedgingConfig(hedging_delay=0.0),
    ),
    "only the total": DownstreamConfig(
        timeout=TimeoutConfig(total=2.0, per_attempt=0.0), cache=CacheConfig(enabled=False),
        breaker=BreakerConfig(fail_max=2),
    ),
}


@pytest.mark.parametrize("name", CONFIGS)
async def test_an_overloaded_caller_never_opens_healthy_owners_breakers(name: str) -> None:
    """Four downstreams of prompt owners; the caller's loop blocks for longer than any deadline, again and again,
    and its callers' deadlines arrive nearly spent: every call may fail, but no breaker opens and no replica is
    ejected."""
    clock = FakeClock()
    config = CONFIGS[name]
    owners = {d: Prompt(clock) for d in DOWNSTREAMS}
    downstreams = {
        d: Downstream(d, [f"{d}-a:1", f"{d}-b:1"], config, clock, endpoint=owners[d]) for d in DOWNSTREAMS
    }
    for round_ in range(6):
        calls = [
            asyncio.create_task(downstreams[d].call(READ, catalog_pb2.GetProductRequest(sku=f"{round_}-{i}")))
            for d in DOWNSTREAMS for i in range(10)
        ]
        await settle()
        await clock.stall(10.0)  # longer than every deadline: the loop was blocked
        await finish(clock, calls)
        with dl.scope(dl.Deadline.after(0.004, clock)):  # callers whose time went on queueing before the call
            late = [
                asyncio.create_task(downstreams[d].call(READ, catalog_pb2.GetProductRequest(sku=f"late{round_}-{i}")))
                for d in DOWNSTREAMS for i in range(5)
            ]
        for o in owners.values():
            o.delay = 0.006
        await finish(clock, late, 0.001)
        for o in owners.values():
            o.delay = 0.002
        errors = [c.exception() for c in calls + late]
        assert any(isinstance(e, DeadlineExceeded) for e in errors)
    for d, downstream in downstreams.items():
        assert set(downstream.breaker_states().values()) == {"closed"}, d
        outliers = downstream.stack.get("balance").outliers
        assert outliers is None or outliers.out == 0, d
    # The same owners, hung, with the loop keeping up: their breakers do open (the test can tell).
    for o in owners.values():
        o.delay = 60.0
    calls = [asyncio.create_task(downstreams[d].call(READ, catalog_pb2.GetProductRequest(sku=f"hung-{i}")))
             for d in DOWNSTREAMS for i in range(10)]
    await finish(clock, calls, 0.05)
    errors = [c.exception() for c in calls]
    assert all(isinstance(e, ResilienceError) for e in errors)  # timed out, or failed fast once a breaker opened
    assert all("open" in downstream.breaker_states().values() for downstream in downstreams.values())

