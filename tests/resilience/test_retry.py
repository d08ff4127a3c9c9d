"""Retries: only idempotent methods, only retryable outcomes, on a budget, to another replica, within the deadline."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.inventory.v1 import inventory_pb2
from resilience import (
    BudgetConfig,
    DeadlineExceeded,
    Downstream,
    DownstreamConfig,
    HedgingConfig,
    RetryConfig,
    StatusError,
)
from resilience.budget import Budget
from resilience.config import CacheConfig
from resilience.retry import RetryPolicy
from resilience.testing import FakeClock
from tests.resilience.scripted import KEYED_WRITE, OK, READ, UNSAFE_WRITE, Scripted, Step, fails

NO_HEDGE = DownstreamConfig(hedging=HedgingConfig(enabled=False), cache=CacheConfig(enabled=False))
REPLICAS = ["a:1", "b:1", "c:1"]


async def run(downstream: Downstream, coro_factory: object, clock: FakeClock, step: float = 0.1) -> object:
    """Run a call to completion while moving the fake clock in small steps."""
    task = asyncio.ensure_future(coro_factory)  # type: ignore[call-overload]
    while not task.done():
        await clock.advance(step)
    return task.result()


async def test_keyed_write_is_retried_on_unavailable() -> None:
    """An IDEMPOTENT method is retried after UNAVAILABLE and its answer returned, with the attempts counted."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(code=grpc.StatusCode.UNAVAILABLE) if n < 2 else OK)
    downstream = Downstream("inventory", REPLICAS, NO_HEDGE, clock, endpoint=script, rng=random.Random(1))
    result = await run(downstream, downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()), clock)
    assert result.provenance.attempts == 3  # type: ignore[attr-defined]
    assert len(script.calls) == 3


async def test_method_without_idempotency_is_never_retried() -> None:
    """A method without idempotency_level gets exactly one attempt."""
    clock = FakeClock()
    script = Scripted(clock, fails(grpc.StatusCode.UNAVAILABLE))
    downstream = Downstream("customers", REPLICAS, NO_HEDGE, clock, endpoint=script)
    with pytest.raises(StatusError):
        await run(downstream, downstream.call(UNSAFE_WRITE, customers_pb2.CreateCustomerRequest()), clock)
    assert len(script.calls) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED])
async def test_caller_errors_are_not_retried(code: grpc.StatusCode) -> None:
    """NOT_FOUND is an answer, and so is a refusal of who the caller is: one attempt, raised as is (another replica
    checks the same certificate against the same policy)."""
    clock = FakeClock()
    script = Scripted(clock, fails(code))
    downstream = Downstream("inventory", REPLICAS, NO_HEDGE, clock, endpoint=script)
    with pytest.raises(StatusError) as raised:
        await run(downstream, downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()), clock)
    assert raised.value.code is code
    assert len(script.calls) == 1


async def test_each_retry_goes_to_a_different_replica() -> None:
    """With three replicas and three attempts, every attempt goes to a replica not tried before."""
    clock = FakeClock()
    script = Scripted(clock, fails(grpc.StatusCode.UNAVAILABLE))
    downstream = Downstream("catalog", REPLICAS, NO_HEDGE, clock, endpoint=script, rng=random.Random(7))
    with pytest.raises(StatusError) as raised:
        await run(downstream, downstream.call(READ, catalog_pb2.GetProductRequest(sku="x")), clock)
    assert sorted(script.calls) == sorted(REPLICAS)
    assert "after 3 attempts" in raised.value.reason


async def test_budget_stops_retries() -> None:
    """When the shared budget is spent, a retryable failure is raised without another attempt."""
    clock = FakeClock()
    config = DownstreamConfig(
        hedging=HedgingConfig(enabled=False),
        budget=BudgetConfig(token_ratio=0.0, min_per_second=0.0),
    )
    script = Scripted(clock, fails(grpc.StatusCode.UNAVAILABLE))
    downstream = Downstream("inventory", REPLICAS, config, clock, endpoint=script)
    with pytest.raises(StatusError):
        await run(downstream, downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()), clock)
    assert len(script.calls) == 1


async def test_retry_that_cannot_finish_in_time_is_skipped() -> None:
    """A backoff that would end after the deadline means no retry: the failure is raised at once."""
    clock = FakeClock()
    config = DownstreamConfig(
        hedging=HedgingConfig(enabled=False),
        retry=RetryConfig(initial_backoff=10.0, max_backoff=10.0),
    )
    script = Scripted(clock, lambda n, r: Step(delay=0.5, code=grpc.StatusCode.DEADLINE_EXCEEDED))
    policy_rng = random.Random()
    policy_rng.uniform = lambda a, b: b  # type: ignore[method-assign]
    downstream = Downstream("inventory", REPLICAS, config, clock, endpoint=script, rng=policy_rng)
    with pytest.raises(DeadlineExceeded):
        await run(downstream, downstream.call(KEYED_WRITE, inventory_pb2.ReserveStockRequest()), clock)
    assert len(script.calls) == 1


def test_backoff_is_full_jitter_capped_by_max_backoff() -> None:
    """Backoff n is uniform in [0, min(max_backoff, initial * multiplier^(n-1))]."""
    seen: list[tuple[float, float]] = []
    rng = random.Random()
    rng.uniform = lambda a, b: seen.append((a, b)) or b  # type: ignore[method-assign, func-returns-value]
    config = RetryConfig(initial_backoff=0.1, max_backoff=0.3, backoff_multiplier=2.0)
    policy = RetryPolicy(config, Budget(), rng)
    assert [policy.backoff(n) for n in (1, 2, 3)] == [0.1, 0.2, 0.3]
    assert all(low == 0.0 for low, _ in seen)
