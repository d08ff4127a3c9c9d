"""The bulkhead: bounded calls in flight, a short bounded wait, then RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from resilience import BulkheadConfig, BulkheadFull, Downstream, DownstreamConfig
from resilience.config import CacheConfig, HedgingConfig, RetryConfig
from resilience.testing import FakeClock, settle
from tests.resilience.scripted import READ, Scripted, Step

CONFIG = DownstreamConfig(
    retry=RetryConfig(enabled=False),
    hedging=HedgingConfig(enabled=False),
    cache=CacheConfig(enabled=False),
    bulkhead=BulkheadConfig(max_concurrent=2, max_wait=0.05),
)
REQUEST = catalog_pb2.GetProductRequest(sku="x")


async def test_full_bulkhead_fails_after_the_bounded_wait() -> None:
    """With two calls in flight, a third waits max_wait and then fails with RESOURCE_EXHAUSTED, unsent."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=1.0))
    downstream = Downstream("catalog", ["a:1"], CONFIG, clock, endpoint=script)
    busy = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(2)]
    third = asyncio.create_task(downstream.call(READ, REQUEST))
    await clock.advance(0.04)
    assert not third.done()
    await clock.advance(0.02)
    with pytest.raises(BulkheadFull) as raised:
        await third
    assert raised.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(script.calls) == 2
    await clock.advance(1.0)
    await asyncio.gather(*busy)


async def test_a_waiter_gets_the_slot_a_finished_call_frees() -> None:
    """A call waiting for a slot runs as soon as one frees within max_wait."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.03 if n == 0 else 1.0))
    downstream = Downstream("catalog", ["a:1"], CONFIG, clock, endpoint=script)
    calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(3)]
    await clock.advance(0.03)
    await settle()
    assert len(script.calls) == 3
    await clock.advance(1.0)
    await asyncio.gather(*calls)
